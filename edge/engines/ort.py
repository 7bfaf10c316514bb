"""onnxruntime backend."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edge.engines.base import EngineBase, TensorInfo
from edge.errors import EngineError

log = logging.getLogger(__name__)

#: Graph optimisation levels by name (onnxruntime.GraphOptimizationLevel members).
OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}

#: Short provider names accepted on the command line and in profiles.
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                    "xnnpack": "XnnpackExecutionProvider"}

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
               "tensor(int64)": np.int64, "tensor(bool)": np.bool_}

_warned_fallback: set[tuple[str, ...]] = set()


def profile_provider_options(runtime) -> dict[str, dict[str, str]]:
    """onnxruntime provider options from a profile's ``[runtime]`` (:class:`edge.profile.RuntimeSpec`).

    TensorRT: ``trt_engine_cache_enable`` / ``trt_engine_cache_path`` keep built engines across
    runs (building one takes minutes on a Jetson), ``trt_fp16_enable`` lets TensorRT pick fp16
    kernels — the option names onnxruntime documents for the TensorRT execution provider.
    """
    out: dict[str, dict[str, str]] = {}
    if "tensorrt" in runtime.providers:
        out["TensorrtExecutionProvider"] = {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(runtime.trt_cache_dir),
            "trt_fp16_enable": "True" if runtime.trt_fp16 else "False",
        }
    if "cuda" in runtime.providers:
        out["CUDAExecutionProvider"] = {"device_id": "0"}
    return out


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "the onnxruntime backend needs onnxruntime: pip install 'edgesight[onnx]'"
        ) from e
    return onnxruntime


def _dims(shape) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


class OnnxRuntimeEngine(EngineBase):
    """Run an ONNX model with onnxruntime.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (``None`` lets onnxruntime choose: all physical cores).
        inter_op_threads: inter-op threads (only matters with parallel execution).
        optimization: ``"disable" | "basic" | "extended" | "all"``.
        providers: ordered execution providers, e.g. ``["tensorrt", "cuda", "cpu"]`` on a
            Jetson. Unavailable ones are skipped with one warning, CPU is always last.
        allow_spinning: whether idle intra-op threads spin-wait for work (onnxruntime's
            default, ``True``). Spinning shaves latency on dedicated cores but steals CPU from a
            camera/decode thread on a busy 2-4 core board: with YOLOX at 2 threads on the loaded
            2-core development machine, turning it off took bare inference from 23.8 to 49.5 fps.
        fast_prelu: run each float ``PRelu`` as ``x + (slope − 1)·Min(x, 0)``
            (:mod:`edge.engines.onnx_prelu`: same outputs to float rounding; SFace 1.7× faster at
            one thread). ``False`` runs the graph exactly as stored.

    Models whose weights are listed as graph inputs (or that carry inputs no node reads) are
    loaded with those inputs removed, so only the real inputs are fed (see ``onnx_wire``).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, inter_op_threads: int | None = None,
                 optimization: str = "all", providers: Sequence[str] | None = None,
                 allow_spinning: bool = True,
                 provider_options: Mapping[str, Mapping[str, str]] | None = None,
                 fast_prelu: bool = True) -> None:
        ort = _import_ort()
        from edge.engines.onnx_prelu import rewrite_prelu
        from edge.engines.onnx_wire import strip_weight_inputs

        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as e:
            raise EngineError(f"cannot read model {self.path}: {e}") from e
        try:
            data, self.dropped_inputs = strip_weight_inputs(data)
            # the same function on faster kernels (the file and its sha256 are untouched)
            data, self.rewritten_prelu = rewrite_prelu(data) if fast_prelu else (data, 0)
        except ValueError as e:
            raise EngineError(f"{self.path} is not a valid ONNX file ({e})") from e

        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: several shared models trigger benign warnings
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        if inter_op_threads is not None:
            so.inter_op_num_threads = int(inter_op_threads)
        if not allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if optimization not in OPT_LEVELS:
            raise ValueError(f"unknown optimization {optimization!r}; valid: {', '.join(OPT_LEVELS)}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[optimization])

        self.providers = self._pick_providers(ort, providers)
        opts = {PROVIDER_ALIASES.get(k.lower(), k): dict(v) for k, v in (provider_options or {}).items()}
        chosen = [(p, opts[p]) if opts.get(p) else p for p in self.providers]
        try:
            self._sess = ort.InferenceSession(data, sess_options=so, providers=chosen)
        except Exception as e:  # onnxruntime raises its own exception types
            raise EngineError(f"onnxruntime could not load {self.path}: {e}") from e
        self.threads = threads
        self.inputs = [TensorInfo(i.name, _dims(i.shape), np.dtype(_ORT_DTYPES.get(i.type, np.float32)))
                       for i in self._sess.get_inputs()]
        self.outputs = [TensorInfo(o.name, _dims(o.shape), np.dtype(_ORT_DTYPES.get(o.type, np.float32)))
                        for o in self._sess.get_outputs()]
        self._out_names = [o.name for o in self.outputs]

    @staticmethod
    def _pick_providers(ort, providers: Sequence[str] | None) -> list[str]:
        wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in (providers or ["cpu"])]
        available = set(ort.get_available_providers())
        chosen = [p for p in wanted if p in available]
        missing = tuple(p for p in wanted if p not in available)
        if missing and missing not in _warned_fallback:
            _warned_fallback.add(missing)
            log.warning("onnxruntime: execution providers %s are not available here (have %s); "
                        "falling back to %s", ", ".join(missing), ", ".join(sorted(available)),
                        ", ".join(chosen + ["CPUExecutionProvider"] if "CPUExecutionProvider" not in chosen else chosen))
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        return chosen

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_feeds(feeds)
        cast = {t.name: np.ascontiguousarray(feeds[t.name], dtype=t.dtype) for t in self.inputs}
        try:
            outs = self._sess.run(self._out_names, cast)
        except Exception as e:
            raise EngineError(f"onnxruntime failed running {self.path.name}: {e}") from e
        return dict(zip(self._out_names, outs))

    def close(self) -> None:
        self._sess = None
