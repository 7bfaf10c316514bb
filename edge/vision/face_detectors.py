"""Face detectors: a common :class:`FaceDetector` base and :func:`create_face_detector`.

Each model lives in its own module with a pure-numpy decoder and a small detector class:

- :mod:`edge.vision.yunet` — YuNet (5 landmarks, OpenCV ``FaceDetectorYN`` order),
- :mod:`edge.vision.blazeface` — MediaPipe BlazeFace short range (6 keypoints),
- :mod:`edge.vision.ulfd` — Ultra-Light-Fast-Generic-Face-Detector RFB-320 (boxes only).

Every detector takes an :class:`~edge.engines.base.Engine` and a ``uint8`` BGR image and returns
:class:`~edge.types.Detections` in source-image pixels, ``class_id`` all 0. Boxes and keypoints
are not clipped to the image (neither ``FaceDetectorYN`` nor MediaPipe clip them).

Example:
    >>> with create_face_detector("yunet") as det:          # doctest: +SKIP
    ...     faces = det.detect(cv2.imread("face.jpg"))
    >>> faces.xyxy, faces.keypoints.shape                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

from pathlib import Path

import cv2
import numpy as np

from edge.errors import EngineError, ModelNotFoundError
from edge.types import Detections

__all__ = ["FaceDetector", "FACE_MODEL_FILES", "FACE_DETECTOR_KINDS", "create_face_detector",
           "resolve_face_model", "letterbox", "check_bgr_image"]

#: Short names -> model file relative to a model directory (``edge.paths.model_dirs()``).
#: ``"yunet"`` is the fixed 640×640 graph: a fixed shape gives predictable latency on a Pi
#: and works on every runtime; ``"yunet_dynamic"`` runs at the image's own size.
FACE_MODEL_FILES: dict[str, str] = {
    "yunet": "face_detection/yunet_s_640x640.onnx",
    "yunet_dynamic": "face_detection/yunet_s_dynamic.onnx",
    "blazeface": "face_detection/blazeface_short_range.tflite",
    "ulfd": "face_detection/ulfd_rfb_320.onnx",
}

#: Detector kind -> "module:class", imported lazily.
FACE_DETECTOR_KINDS: dict[str, str] = {
    "yunet": "edge.vision.yunet:YuNetDetector",
    "blazeface": "edge.vision.blazeface:BlazeFaceDetector",
    "ulfd": "edge.vision.ulfd:UlfdDetector",
}

# File-name fragments -> kind, for models given by path.
_NAME_HINTS = (("yunet", "yunet"), ("blazeface", "blazeface"), ("face_detection_short_range", "blazeface"),
               ("ulfd", "ulfd"), ("rfb", "ulfd"), ("slim", "ulfd"))


def check_bgr_image(image) -> np.ndarray:
    """Validate a ``uint8`` image and return it as ``H×W×3`` BGR (grayscale is expanded).

    Raises:
        TypeError: not a numpy array.
        ValueError: wrong dtype or shape (the message names what was received).
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 BGR, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must be H×W×3 BGR (or H×W gray), got shape {image.shape}")
    return image


def letterbox(image: np.ndarray, size_wh: tuple[int, int], *, center: bool, value: int = 0,
              interpolation: int = cv2.INTER_LINEAR):
    """Resize keeping the aspect ratio, then pad to ``size_wh``.

    Args:
        image: ``H×W×C`` array.
        size_wh: target ``(width, height)``.
        center: pad equally on both sides (MediaPipe) or only bottom/right (``FaceDetectorYN``).
        value: padding value.
        interpolation: OpenCV interpolation flag.

    Returns:
        ``(padded, scale, (pad_x, pad_y))``; a source point ``p`` lands at ``p · scale + pad``.
    """
    h, w = image.shape[:2]
    tw, th = size_wh
    scale = min(tw / w, th / h)
    nw, nh = min(tw, max(1, round(w * scale))), min(th, max(1, round(h * scale)))
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=interpolation)
    px, py = ((tw - nw) // 2, (th - nh) // 2) if center else (0, 0)
    if (nw, nh) == (tw, th):
        return resized, scale, (0, 0)
    out = cv2.copyMakeBorder(resized, py, th - nh - py, px, tw - nw - px, cv2.BORDER_CONSTANT, value=value)
    return out, scale, (px, py)


def unletterbox(points: np.ndarray, scale: float, pad: tuple[int, int]) -> np.ndarray:
    """Map ``…×2`` points (or ``N×4`` boxes) from the letterboxed tensor back to the source."""
    pts = np.asarray(points, np.float64)
    offs = np.tile(np.asarray(pad, np.float64), pts.shape[-1] // 2)
    return (pts - offs) / scale


def output_named(outputs: dict, name: str, engine_path: str = "") -> np.ndarray:
    try:
        return outputs[name]
    except KeyError:
        raise EngineError(f"model {engine_path or ''} has no output {name!r}; outputs are {sorted(outputs)}") from None


class FaceDetector:
    """Base class: ``detect(image_bgr) -> Detections``; usable as a context manager.

    Args:
        engine: a loaded :class:`~edge.engines.base.Engine`.
        owns_engine: close the engine in :meth:`close` (set by :func:`create_face_detector`
            when it loaded the engine itself).
    """

    #: Number of keypoints per face (``None`` when the model gives none).
    num_keypoints: int | None = None

    def __init__(self, engine, *, owns_engine: bool = False) -> None:
        if len(engine.inputs) != 1:
            raise EngineError(f"a face detector needs a one-input model, got inputs "
                              f"{[t.name for t in engine.inputs]}")
        self.engine = engine
        self._owns_engine = owns_engine

    def detect(self, image_bgr: np.ndarray) -> Detections:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.detect(image_bgr)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _detections(xyxy, score, keypoints) -> Detections:
    n = len(score)
    return Detections(np.asarray(xyxy, np.float32).reshape(n, 4), np.asarray(score, np.float32),
                      np.zeros(n, np.int32),
                      keypoints=None if keypoints is None else np.asarray(keypoints, np.float32))


def resolve_face_model(name: str) -> Path:
    """Resolve a short-named face model through the registry (mirror, cache, download; sha256 checked).

    Raises:
        ValueError: unknown short name.
        ModelNotFoundError / ModelIntegrityError: from :func:`edge.registry.resolve_file`.
    """
    from edge import registry

    if name not in FACE_MODEL_FILES:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(sorted(FACE_MODEL_FILES))} "
                         "(or pass a model file path)")
    rel = FACE_MODEL_FILES[name]
    card = next((c for c in registry.builtin_cards().values() if c.file == rel), None)
    if card is None:  # pragma: no cover - the built-in cards cover every short name
        raise ModelNotFoundError(f"no registry card for face model {rel!r}")
    return registry.resolve_model(card)


def _kind_for(name_or_path: str) -> str:
    base = name_or_path.lower()
    if base in FACE_MODEL_FILES:
        return "yunet" if base.startswith("yunet") else base
    stem = Path(base).name
    for frag, kind in _NAME_HINTS:
        if frag in stem:
            return kind
    raise ValueError(f"cannot tell which face detector {name_or_path!r} is; pass "
                     f"kind= one of {', '.join(sorted(FACE_DETECTOR_KINDS))}")


def create_face_detector(name_or_path: str | Path, engine=None, *, kind: str | None = None,
                         backend: str | None = None, threads: int | None = None,
                         engine_options: Mapping[str, Any] | None = None, **opts) -> FaceDetector:
    """Build a face detector by short name or model path.

    Args:
        name_or_path: ``"yunet"``, ``"yunet_dynamic"``, ``"blazeface"``, ``"ulfd"``, or a model file.
        engine: an already loaded engine (then the caller keeps ownership and closes it).
        kind: ``"yunet" | "blazeface" | "ulfd"`` when a path's file name does not tell.
        backend: engine backend (by file suffix when ``None``); ignored with ``engine``.
        threads: engine threads; ignored with ``engine``.
        engine_options: further ``load_engine`` options (a profile's providers, see
            :func:`edge.profile_use.engine_options`); ignored with ``engine``.
        **opts: detector options, e.g. ``score_threshold=0.7``, ``nms_threshold=0.3``.

    Returns:
        A :class:`FaceDetector`.

    Raises:
        ValueError: unknown name or kind.
        ModelNotFoundError: a short-named model is not in any model directory.
    """
    import importlib

    key = str(name_or_path)
    kind = (kind or _kind_for(key)).lower()
    if kind not in FACE_DETECTOR_KINDS:
        raise ValueError(f"unknown face detector kind {kind!r}; valid: {', '.join(sorted(FACE_DETECTOR_KINDS))}")
    module_name, cls_name = FACE_DETECTOR_KINDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    owns = engine is None
    if engine is None:
        from edge.engines import engine_kwargs, load_engine

        path = resolve_face_model(key.lower()) if key.lower() in FACE_MODEL_FILES else Path(key)
        if not path.is_file():
            raise ModelNotFoundError(f"face model file {str(path)!r} does not exist")
        engine = load_engine(path, backend, **engine_kwargs(threads, engine_options))
    try:
        return cls(engine, owns_engine=owns, **opts)
    except Exception:
        if owns:
            engine.close()
        raise


def __getattr__(name: str):
    # Lazy re-exports so ``from edge.vision.face_detectors import YuNetDetector`` works.
    targets = {"YuNetDetector": "yunet", "BlazeFaceDetector": "blazeface", "UlfdDetector": "ulfd"}
    if name in targets:
        import importlib

        return getattr(importlib.import_module(f"edge.vision.{targets[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
