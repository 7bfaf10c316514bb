"""Inference backends behind one small :class:`~edge.engines.base.Engine` protocol.

Backends are registered as lazy import paths, so ``import edge.engines`` imports no runtime.
An explicit backend name wins; otherwise the backend is picked by the model file's suffix.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

from edge.engines.base import Engine, TensorInfo

__all__ = ["BACKENDS", "Engine", "TensorInfo", "load_engine", "engine_kwargs", "backend_for_path", "available_backends"]

# name -> (module:class, extra to install, importable module that proves the runtime is there)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "onnxruntime": ("edge.engines.ort:OnnxRuntimeEngine", "onnx", ("onnxruntime",)),
    "litert": ("edge.engines.litert:LiteRTEngine", "litert", ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")),
    "opencv": ("edge.engines.opencv_dnn:OpenCVEngine", "", ("cv2",)),
}

ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "tflite": "litert", "cv2": "opencv", "opencv-dnn": "opencv"}

SUFFIX_BACKEND = {".onnx": "onnxruntime", ".tflite": "litert"}

#: Options only one backend understands; the others ignore them, so a profile's engine options
#: (:func:`edge.profile_use.engine_options`) can be passed to whichever backend a file needs.
BACKEND_ONLY_OPTIONS = {"providers": "onnxruntime", "provider_options": "onnxruntime"}


def _canonical(backend: str) -> str:
    name = ALIASES.get(backend.lower(), backend.lower())
    if name not in BACKENDS:
        valid = ", ".join(sorted(BACKENDS))
        raise ValueError(f"unknown backend {backend!r}; valid backends are: {valid}")
    return name


def backend_for_path(path: str | Path) -> str:
    """The default backend for a model file, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    try:
        return SUFFIX_BACKEND[suffix]
    except KeyError:
        raise ValueError(
            f"cannot pick a backend for {str(path)!r}: unknown suffix {suffix!r} "
            f"(known: {', '.join(sorted(SUFFIX_BACKEND))}); pass backend= explicitly"
        ) from None


def available_backends() -> list[str]:
    """Backends whose runtime can be imported here (imports nothing heavy beyond a spec check)."""
    import importlib.util

    out = []
    for name, (_, _, modules) in BACKENDS.items():
        for m in modules:
            try:
                if importlib.util.find_spec(m.split(".")[0]) is not None:
                    out.append(name)
                    break
            except (ImportError, ValueError):
                continue
    return out


def engine_kwargs(threads: int | None = None, engine_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``load_engine`` keyword arguments: a profile's engine options
    (:meth:`edge.profile_use.EngineOptions.kwargs`) with an explicit ``threads`` winning."""
    out = dict(engine_options or {})
    if threads is not None:
        out["threads"] = threads
    return out


def load_engine(path: str | Path, backend: str | None = None, **options) -> Engine:
    """Load a model file on a backend.

    Args:
        path: model file (``.onnx`` or ``.tflite``).
        backend: ``"onnxruntime"``, ``"litert"`` or ``"opencv"``; by suffix when ``None``.
        **options: backend options, e.g. ``threads=2``; see each engine's constructor. The
            onnxruntime-only ``providers`` / ``provider_options`` are ignored by other backends.

    Returns:
        An :class:`Engine`, usable as a context manager.

    Raises:
        ValueError: unknown backend name.
        ImportError: the backend's runtime is not installed (names the extra to install).
        edge.errors.EngineError: the runtime could not load the file.
    """
    name = _canonical(backend) if backend else backend_for_path(path)
    target, _extra, _ = BACKENDS[name]
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    options = {k: v for k, v in options.items() if BACKEND_ONLY_OPTIONS.get(k, name) == name}
    return cls(path, **options)
