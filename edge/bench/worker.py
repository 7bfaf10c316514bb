"""The benchmark worker: measures ONE variant in a fresh process, so peak memory is that variant's.

Run as ``python -m edge.bench.worker SPEC.json`` by :mod:`edge.bench.runner`. It writes
marker-prefixed JSON lines on stdout (``@@edge-bench {...}``): ``progress`` events while it
runs and one ``result`` (or ``error``) at the end; anything else a runtime prints is ignored.

SIGINT does not kill it: the measurement loop stops at the next iteration and the samples
taken so far are reported with ``"interrupted": true``, which is how Ctrl-C still yields a
report. Peak resident memory is ``VmHWM`` of ``/proc/self/status`` (the kernel's high-water
mark), else ``getrusage().ru_maxrss``.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np

from edge.bench.timing import MAX_SAMPLES, timed_calls

MARKER = "@@edge-bench "
#: Seconds between progress events.
PROGRESS_INTERVAL_S = 0.25
_KIB = 1024.0
_MS = 1e3


class _Stop:
    requested = False


def emit(event: dict) -> None:
    sys.stdout.write(MARKER + json.dumps(event) + "\n")
    sys.stdout.flush()


def _status_kib(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return kib / _KIB if kib is not None else None


def peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:  # ru_maxrss is KiB on Linux, bytes on macOS
        raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = raw / _KIB if sys.platform == "darwin" else raw
    return kib / _KIB


def _import_runtime(backend: str) -> tuple[float, str | None, str | None]:
    """Import the backend's runtime; returns (ms, module, version)."""
    from edge.engines import BACKENDS, _canonical

    t0 = time.perf_counter()
    for module in BACKENDS[_canonical(backend)][2]:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        top = sys.modules.get(module.split(".")[0], mod)
        return (time.perf_counter() - t0) * _MS, module.split(".")[0], getattr(top, "__version__", None)
    return (time.perf_counter() - t0) * _MS, None, None


def _guess_feed(image: np.ndarray, info, size: tuple[int, int]) -> np.ndarray:
    """A model input from a BGR image when there is no card: RGB, resized, raw 0..255 values."""
    import cv2

    shape = list(info.shape)
    if len(shape) != 4:
        rng = np.random.default_rng(0)  # no image-like input: a fixed pseudo-random tensor
        dims = [d if d is not None else 1 for d in shape]
        return rng.uniform(0, 1, dims).astype(info.dtype if info.dtype != np.dtype(object) else np.float32)
    nchw = shape[1] in (1, 3)
    h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    h, w = h or size[1], w or size[0]
    x = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (w, h)).astype(info.dtype)
    if nchw:
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


def _timed_loop(fn, n_items: int, warmup: int, iters: int | None, duration_s: float | None, stop: _Stop,
                on_sample=None) -> tuple[list[float], float, int]:
    """:func:`edge.bench.timing.timed_calls` with Ctrl-C and progress events; (samples ms, wall s, warmup done)."""
    if iters is None and duration_s is None:
        iters = MAX_SAMPLES
    run = timed_calls(fn, n_items, warmup=warmup, iters=iters, duration_s=duration_s,
                      should_stop=lambda: stop.requested, on_sample=on_sample,
                      on_progress=lambda ev: emit({"event": "progress", **ev}), progress_interval_s=PROGRESS_INTERVAL_S)
    return run.samples_ms, run.wall_s, run.warmup_done


def measure_model(spec: dict, stop: _Stop) -> dict:
    from edge.engines import engine_kwargs, load_engine

    import_ms, runtime, version = _import_runtime(spec["backend"])
    data = np.load(spec["inputs_npz"])
    images = [data[f"img{k}"] for k in range(int(data["n_images"]))]
    n = len(images)
    baseline = rss_mib()
    t0 = time.perf_counter()
    engine = load_engine(spec["path"], backend=spec["backend"],
                         **engine_kwargs(spec.get("threads"), spec.get("engine_options")))
    load_ms = (time.perf_counter() - t0) * _MS
    loaded = rss_mib()
    size = tuple(spec.get("input_size") or (640, 480))
    feeds = []
    for k in range(n):
        feed = {}
        for i, info in enumerate(engine.inputs):
            key = f"x{i}"
            feed[info.name] = data[key][k:k + 1] if key in data else _guess_feed(images[k], info, size)
        feeds.append(feed)
    t0 = time.perf_counter()
    engine.run(feeds[0])
    first_ms = (time.perf_counter() - t0) * _MS
    samples, wall, warm = _timed_loop(lambda i: engine.run(feeds[i]), n, spec["warmup"], spec.get("iters"),
                                      spec.get("duration_s"), stop)
    return {"import_ms": import_ms, "load_ms": load_ms, "first_inference_ms": first_ms, "samples_ms": samples,
            "measured_s": wall, "warmup_done": warm, "baseline_rss_mb": baseline, "loaded_rss_mb": loaded,
            "peak_rss_mb": peak_rss_mib(), "runtime": {"name": runtime, "version": version},
            "engine_backend": engine.backend,
            "fed_shapes": [list(np.shape(v)) for v in feeds[0].values()]}


def _stage_dict(obj) -> dict[str, float] | None:
    """Per-stage ms of a pipeline call (``total`` dropped: the worker times the whole call itself)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return {str(k): float(v) for k, v in obj.items() if isinstance(v, (int, float)) and k != "total"}
    if hasattr(obj, "as_dict"):
        return _stage_dict(obj.as_dict())
    return None


def _make_pipeline(spec: dict):
    kind, threads, model = spec["pipeline"], spec.get("threads"), spec.get("model")
    if kind == "detect":
        try:
            from edge.detect.detector import create_detector
        except ImportError as e:
            raise ImportError(f"--pipeline detect needs edge.detect.detector.create_detector, which this "
                              f"installation lacks ({e})") from e
        det = create_detector(model or "yolox_nano_416", backend=spec.get("backend"), threads=threads,
                              engine_options=spec.get("engine_options"))
        return det, det.detect, lambda out: _stage_dict(getattr(det, "timings", None))
    if kind == "unlock":
        try:
            from edge.face.pipeline import create_pipeline
        except ImportError as e:
            raise ImportError(f"--pipeline unlock needs edge.face.pipeline.create_pipeline, which this "
                              f"installation lacks ({e})") from e
        kwargs = {"threads": threads, "backend": spec.get("backend")}
        if model:
            kwargs["embedder"] = model
        try:
            pipe = create_pipeline(**kwargs)
        except NotImplementedError as e:
            raise ImportError(f"--pipeline unlock: the face pipeline (edge.face) is not implemented yet ({e})") from e
        return pipe, pipe.analyze, lambda out: (_stage_dict(getattr(out, "timings_ms", None))
                                                or _stage_dict(getattr(out, "timings", None)))
    raise ValueError(f"unknown pipeline {kind!r}; valid: detect, unlock")


def measure_pipeline(spec: dict, stop: _Stop) -> dict:
    data = np.load(spec["inputs_npz"])
    images = [data[f"img{k}"] for k in range(int(data["n_images"]))]
    baseline = rss_mib()
    t0 = time.perf_counter()
    obj, call, stages_of = _make_pipeline(spec)
    load_ms = (time.perf_counter() - t0) * _MS
    loaded = rss_mib()
    t0 = time.perf_counter()
    out = call(images[0])
    first_ms = (time.perf_counter() - t0) * _MS
    stage_samples: dict[str, list[float]] = {}
    holder = {}

    def step(i: int) -> None:
        holder["out"] = call(images[i])

    def record() -> None:
        for k, v in (stages_of(holder.get("out")) or {}).items():
            stage_samples.setdefault(k, []).append(v)

    samples, wall, warm = _timed_loop(step, len(images), spec["warmup"], spec.get("iters"), spec.get("duration_s"),
                                      stop, on_sample=record)
    del out
    return {"import_ms": None, "load_ms": load_ms, "first_inference_ms": first_ms, "samples_ms": samples,
            "measured_s": wall, "warmup_done": warm, "baseline_rss_mb": baseline, "loaded_rss_mb": loaded,
            "peak_rss_mb": peak_rss_mib(), "stage_samples_ms": stage_samples,
            "engine_backend": getattr(obj, "backend", None),
            "runtime": {"name": getattr(obj, "backend", None), "version": None}}


def main(argv: list[str]) -> int:
    stop = _Stop()

    def on_sigint(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.requested = True

    signal.signal(signal.SIGINT, on_sigint)
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    emit({"event": "start", "pid": os.getpid()})
    try:
        result = measure_pipeline(spec, stop) if spec.get("pipeline") else measure_model(spec, stop)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which owns error handling
        emit({"event": "error", "type": type(e).__name__, "message": str(e), "interrupted": stop.requested})
        return 0
    result["interrupted"] = stop.requested
    emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
