"""Run a benchmark: every model variant × backend × thread count, each in a fresh worker process.

A fresh process per measurement makes peak resident memory that variant's own (a runtime never
gives memory back, so measuring several models in one process would report the largest so far)
and makes load time include a cold session, as on a device that starts the app.

Per variant the report gets: runtime import, model load, first inference, warm latency
(mean, std, p50, p90, p99, max over ``iters`` runs or ``duration_s`` seconds after ``warmup``),
throughput, peak and baseline RSS, model size, the inputs' digest, the MAC count and roofline
figures, and the CPU temperature/throttling before and after.

Example:
    >>> runner = BenchRunner(BenchConfig(iters=20, threads=(1, 2)))
    >>> results = runner.run(variants_from_models(["yolox_nano_416"]))     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edge import registry
from edge.bench import device
from edge.bench.inputs import Frames, load_frames, prepare_inputs
from edge.bench.roofline import MacCount, count_macs, roofline
from edge.bench.stats import summarize
from edge.bench.worker import MARKER
from edge.cards import ModelCard, load_card
from edge.errors import BenchError, ModelCardError

__all__ = ["BenchConfig", "ModelVariant", "BenchRunner", "variants_from_models", "variants_from_bundle",
           "pipeline_variants", "backends_for", "FORMAT_BACKENDS", "PIPELINES"]

#: Backends able to run each model format (file suffix).
FORMAT_BACKENDS = {".onnx": ("onnxruntime", "opencv"), ".tflite": ("litert",)}
PIPELINES = ("detect", "unlock")
#: Seconds a worker gets to hand in its partial result after Ctrl-C before it is killed.
STOP_GRACE_S = 30.0
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_STDERR_TAIL = 1500


@dataclass(frozen=True)
class BenchConfig:
    """How to measure. ``iters`` and ``duration_s`` are exclusive (``duration_s`` wins when set)."""

    warmup: int = 10
    iters: int | None = 100
    duration_s: float | None = None
    threads: tuple = (None,)
    backends: tuple | None = None
    num_inputs: int = 4
    inputs: str | None = None
    input_size: tuple | None = None
    pipeline: str | None = None
    python: str = sys.executable
    #: Worker processes per variant. Latency moves between processes (core placement, frequency,
    #: allocator state) more than within one; with 2+ the report keeps each process's p50 and
    #: ``edge bench compare`` counts their spread as noise (pyperf does the same).
    processes: int = 1
    #: onnxruntime providers and their options from the profile (``EngineOptions.kwargs()`` minus threads).
    engine_options: dict | None = None

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.duration_s is None and (self.iters is None or self.iters < 1):
            raise ValueError(f"iters must be >= 1, got {self.iters}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration_s}")
        if self.pipeline is not None and self.pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {self.pipeline!r}; valid: {', '.join(PIPELINES)}")

    def to_dict(self) -> dict:
        return {"warmup": self.warmup, "iters": None if self.duration_s else self.iters,
                "duration_s": self.duration_s, "threads": list(self.threads),
                "backends": list(self.backends) if self.backends else None, "num_inputs": self.num_inputs,
                "inputs": self.inputs, "input_size": list(self.input_size) if self.input_size else None,
                "pipeline": self.pipeline, "processes": self.processes,
                "engine_options": self.engine_options}


@dataclass(frozen=True)
class ModelVariant:
    """One model file to measure, or one configuration of a pipeline.

    For ``--pipeline`` runs ``path`` is ``None`` and ``pipeline_model`` names the model handed to
    the pipeline factory (the detector for ``detect``, the embedder for ``unlock``; ``None``
    for its default).
    """

    name: str
    path: Path | None
    card: ModelCard | None = None
    skip_reason: str | None = None
    pipeline_model: str | None = None


def variants_from_models(names: list[str]) -> list[ModelVariant]:
    """Registry names, model files or card JSONs → variants (resolved and sha256-checked)."""
    out = []
    for name in names:
        ref = registry.resolve(name)
        card = ref.card
        label = card.name if card is not None else ref.path.stem
        skip = None
        if ref.path.suffix.lower() not in FORMAT_BACKENDS:
            skip = f"{ref.path.name}: a {ref.path.suffix or 'suffix-less'} file is not runnable; export it first"
        out.append(ModelVariant(label, ref.path, card, skip))
    return out


def variants_from_bundle(directory: str | Path) -> list[ModelVariant]:
    """Every model of a bundle: from its manifest's roles when it has one (an ``edge-export
    build`` bundle keeps each role in a sub-folder), else each card (``*.json``) in the folder."""
    d = Path(directory)
    if not d.is_dir():
        raise BenchError(f"bundle {d} is not a directory")
    out: list[ModelVariant] = []
    if (d / "manifest.json").is_file():
        from edge.bundle import load_bundle

        bundle = load_bundle(d)
        for role, models in bundle.roles.items():
            for m in models:
                out.extend(variants_from_models([str(m.card_path)]))
        if not out:
            raise BenchError(f"bundle {d} lists no model in its manifest")
        return out
    for card_path in sorted(d.glob("*.json")):
        try:
            load_card(card_path)
        except ModelCardError:
            continue  # a folder may hold other JSON (labels, reports); only cards are variants
        out.extend(variants_from_models([str(card_path)]))
    if not out:
        raise BenchError(f"bundle {d} holds no model card (*.json)")
    return out


def pipeline_variants(pipeline: str, models: list[str] | None) -> list[ModelVariant]:
    """Variants of a ``--pipeline`` run: one per model named (passed to the pipeline as is), or its default."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")
    if not models:
        return [ModelVariant(f"{pipeline}:default", None)]
    return [ModelVariant(f"{pipeline}:{Path(m).stem if m.endswith(('.onnx', '.tflite', '.json')) else m}", None,
                         pipeline_model=m) for m in models]


def backends_for(path: Path, wanted: tuple | None) -> tuple[list[str], str | None]:
    """Backends to run ``path`` on, and why none when the list is empty."""
    from edge.engines import _canonical, available_backends

    able = FORMAT_BACKENDS.get(path.suffix.lower(), ())
    chosen = [_canonical(b) for b in wanted] if wanted else [able[0]] if able else []
    fits = [b for b in chosen if b in able]
    if not fits:
        return [], f"{path.suffix} files run on {', '.join(able) or 'no backend'}; asked for {', '.join(chosen)}"
    have = set(available_backends())
    runnable = [b for b in fits if b in have]
    if not runnable:
        return [], f"runtime not installed for {', '.join(fits)} (see the edgesight extras: onnx, litert)"
    return runnable, None


@dataclass
class _Job:
    variant: ModelVariant
    backend: str | None
    threads: int | None
    inputs_npz: Path
    input_info: dict
    macs: MacCount | None


@dataclass
class BenchRunner:
    """Measures variants one worker process at a time.

    Args:
        config: what to measure and how long.
        compute: a profile's :class:`~edge.profile.ComputeSpec` for the roofline (``None``: none).
        cores: cores of the board, for scaling the peak to the threads used.
        on_event: called with every worker event (``progress``, ``start``...) plus ``job``
            events from the runner; the CLI draws its progress display from them.
        probe: where thermal state is read; ``thermal_zones`` the profile's zone files.
    """

    config: BenchConfig
    compute: object | None = None
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    on_event: Callable[[dict], None] | None = None
    probe: device.DeviceProbe = field(default_factory=device.DeviceProbe)
    thermal_zones: tuple | None = None
    #: ``vcgencmd`` / ``nvpmodel`` switches for :func:`edge.bench.device.thermal_snapshot` (a profile's).
    thermal_commands: dict = field(default_factory=dict)
    stopping: bool = field(default=False, init=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def request_stop(self, force: bool = False) -> None:
        """Stop after the current measurement (its partial samples are kept); ``force`` kills it."""
        self.stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill() if force else proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass

    def _emit(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def plan(self, variants: list[ModelVariant], frames: Frames, tmp: Path) -> tuple[list[_Job], list[dict]]:
        jobs, skipped = [], []
        for k, v in enumerate(variants):
            if v.skip_reason:
                skipped.append(self._skipped(v, v.skip_reason))
                continue
            npz = tmp / f"inputs{k}.npz"
            prepared = prepare_inputs(v.card, frames, self.config.input_size) if not self.config.pipeline else None
            arrays = {f"img{i}": img for i, img in enumerate(frames.images)}
            arrays["n_images"] = np.asarray(len(frames.images))
            info = {"source": frames.source, "images": list(frames.names)}
            shapes = None
            if prepared is not None:
                arrays.update({f"x{i}": t for i, t in enumerate(prepared.tensors)})
                info.update(shapes=[list(s) for s in prepared.shapes], sha256=prepared.sha256,
                            note=prepared.note or None)
                shapes = dict(zip(prepared.names, prepared.shapes))
            np.savez(npz, **arrays)
            if self.config.pipeline:
                backends = list(self.config.backends) if self.config.backends else [None]
                macs = None
            else:
                backends, why = backends_for(v.path, self.config.backends)
                if not backends:
                    skipped.append(self._skipped(v, why))
                    continue
                macs = count_macs(v.path, v.card, shapes)
            for b in backends:
                for t in self.config.threads:
                    jobs.append(_Job(v, b, t, npz, info, macs))
        return jobs, skipped

    def _skipped(self, v: ModelVariant, reason: str) -> dict:
        return {"variant": v.name, "model": v.card.name if v.card else v.name,
                "file": str(v.path) if v.path else None, "backend": None, "threads": None,
                "kind": "pipeline" if self.config.pipeline else "model", "pipeline": self.config.pipeline,
                "status": "skipped", "error": reason}

    def run(self, variants: list[ModelVariant], frames: Frames | None = None,
            on_result: Callable[[list[dict]], None] | None = None) -> list[dict]:
        """Measure every planned job; returns one result dict per job (plus skipped entries).

        ``on_result`` is called with the results so far after each job, so a caller can write
        the report incrementally (an interrupted run still leaves it on disk).
        """
        frames = frames or load_frames(self.config.inputs, self.config.num_inputs)
        results: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
            jobs, skipped = self.plan(variants, frames, Path(tmp))
            results.extend(skipped)
            if not jobs and not skipped:
                raise BenchError("nothing to benchmark: no runnable variant")
            for i, job in enumerate(jobs):
                if self.stopping:
                    break
                self._emit({"event": "job", "index": i, "total": len(jobs), "variant": job.variant.name,
                            "backend": job.backend, "threads": job.threads})
                results.append(self._run_job(job, Path(tmp) / f"spec{i}.json"))
                self._emit({"event": "job_done", "index": i, "total": len(jobs), "result": results[-1]})
                if on_result is not None:
                    on_result(results)
        return results

    def _spec(self, job: _Job) -> dict:
        c = self.config
        return {"path": str(job.variant.path) if job.variant.path else None, "backend": job.backend,
                "threads": job.threads, "inputs_npz": str(job.inputs_npz), "warmup": c.warmup,
                "iters": None if c.duration_s else c.iters, "duration_s": c.duration_s,
                "input_size": list(c.input_size) if c.input_size else None, "pipeline": c.pipeline,
                "model": job.variant.pipeline_model, "engine_options": c.engine_options}

    def _run_job(self, job: _Job, spec_path: Path) -> dict:
        """Run the job in ``config.processes`` fresh workers; samples are pooled, per-process p50s kept."""
        first = self._run_worker(job, spec_path)
        stages = first.pop("_stage_samples_ms", None)
        if self.config.processes == 1 or first.get("status") != "ok":
            return first
        p50s = [first["latency_ms"]["p50"]]
        pooled = list(first["samples_ms"])
        for _ in range(self.config.processes - 1):
            if self.stopping:
                break
            more = self._run_worker(job, spec_path)
            if more.get("status") != "ok" or not more.get("samples_ms"):
                break
            p50s.append(more["latency_ms"]["p50"])
            pooled.extend(more["samples_ms"])
            for k, samples in (more.pop("_stage_samples_ms", None) or {}).items():
                if stages is not None and k in stages:
                    stages[k].extend(samples)
            first["peak_rss_mb"] = max(first.get("peak_rss_mb") or 0, more.get("peak_rss_mb") or 0) or None
            first["measured_s"] = (first.get("measured_s") or 0) + (more.get("measured_s") or 0)
            first["thermal_after"] = more["thermal_after"]
        stats = summarize(pooled)
        first.update(samples_ms=pooled, iterations=len(pooled), latency_ms=stats.to_dict(),
                     process_p50_ms=[round(x, 4) for x in p50s],
                     throughput_ips=len(pooled) / first["measured_s"] if first.get("measured_s") else None)
        if stages:  # the stages of every process, like the latency
            first["stages"] = {k: summarize(s).to_dict() for k, s in stages.items()}
        if first.get("roofline") and job.macs is not None and self.compute is not None:
            first["roofline"] = roofline(job.macs, self.compute, stats.p50, threads=job.threads,
                                         cores=self.cores).to_dict()
        return first

    def _run_worker(self, job: _Job, spec_path: Path) -> dict:
        spec_path.write_text(json.dumps(self._spec(job)), encoding="utf-8")
        before = device.thermal_snapshot(self.probe, self.thermal_zones, **self.thermal_commands)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        final: dict | None = None
        with tempfile.TemporaryFile(mode="w+") as err:
            self._proc = subprocess.Popen([self.config.python, "-m", "edge.bench.worker", str(spec_path)],
                                          stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            if self.stopping:  # Ctrl-C arrived between jobs: let the worker stop at once
                self.request_stop()
            try:
                for line in self._proc.stdout:
                    if not line.startswith(MARKER):
                        continue
                    event = json.loads(line[len(MARKER):])
                    if event.get("event") in ("result", "error"):
                        final = event
                    else:
                        self._emit({**event, "variant": job.variant.name, "backend": job.backend,
                                    "threads": job.threads})
                self._proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            finally:
                self._proc.stdout.close()
                code = self._proc.returncode
                self._proc = None
            err.seek(0)
            tail = err.read()[-_STDERR_TAIL:]
        after = device.thermal_snapshot(self.probe, self.thermal_zones, **self.thermal_commands)
        return self._result(job, final, code, tail, before, after)

    def _result(self, job: _Job, ev: dict | None, code: int | None, stderr_tail: str, before: dict,
                after: dict) -> dict:
        v = job.variant
        r = {"variant": v.name, "model": v.card.name if v.card else v.name, "file": str(v.path) if v.path else None,
             "format": v.path.suffix.lstrip(".") if v.path else None, "backend": job.backend, "threads": job.threads,
             "kind": "pipeline" if self.config.pipeline else "model", "pipeline": self.config.pipeline,
             "size_bytes": v.path.stat().st_size if v.path else None,
             "sha256": v.card.sha256 if v.card else None, "inputs": job.input_info,
             "thermal_before": before, "thermal_after": after,
             "macs": job.macs.to_dict() if job.macs else None}
        if ev is None or ev["event"] == "error":
            r["status"] = "interrupted" if self.stopping else "error"
            r["error"] = (f"{ev['type']}: {ev['message']}" if ev else
                          f"worker exited with code {code} without a result: {stderr_tail.strip() or 'no output'}")
            return r
        samples = ev["samples_ms"]
        stats = summarize(samples)
        r.update({k: ev.get(k) for k in ("import_ms", "load_ms", "first_inference_ms", "measured_s", "warmup_done",
                                         "baseline_rss_mb", "loaded_rss_mb", "peak_rss_mb", "runtime")})
        if ev.get("engine_backend"):
            r["backend"] = ev["engine_backend"]
        if ev.get("fed_shapes"):
            r["inputs"] = {**job.input_info, "fed_shapes": ev["fed_shapes"]}
        r.update(status="interrupted" if ev.get("interrupted") else "ok", error=None, iterations=len(samples),
                 latency_ms=stats.to_dict() if stats else None, samples_ms=[round(s, 4) for s in samples],
                 throughput_ips=len(samples) / ev["measured_s"] if samples and ev.get("measured_s") else None)
        if ev.get("stage_samples_ms"):
            r["_stage_samples_ms"] = {k: list(s) for k, s in ev["stage_samples_ms"].items() if s}
            r["stages"] = {k: summarize(s).to_dict() for k, s in r["_stage_samples_ms"].items()}
        if job.macs is not None and job.macs.total > 0 and self.compute is not None:
            r["roofline"] = roofline(job.macs, self.compute, stats.p50 if stats else None,
                                     threads=job.threads, cores=self.cores).to_dict()
        return r
