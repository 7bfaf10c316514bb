"""Liveness: passive anti-spoofing with the MiniFASNet pair, plus IR and head-turn checks.

Passive check (:class:`PassiveLiveness`), as the original Silent-Face-Anti-Spoofing project does
it (``src/generate_patches.py`` ``CropImage`` and ``test.py``): for each model, the face box is
enlarged by the model's ``crop_scale`` (2.7 or 4.0) around its centre — the scale is first
reduced so the box fits the image, then the box is shifted back inside the image — the crop is
resized to 80×80 and fed as BGR 0–255; the softmax of the models is averaged and class 1 is
"live". The decision is ``mean live probability >= threshold`` (the profile's
``thresholds.liveness``, 0.5 by default).

The ONNX files and cards come from ``edge-export liveness --out DIR`` (or an export bundle);
:func:`find_liveness_cards` finds them.

Other checks live in their own modules and are re-exported here:
:class:`~edge.face.ir_liveness.IrLiveness` (IR cameras) and
:class:`~edge.face.challenge.HeadTurnChallenge` (active challenge).

Example:
    >>> live = PassiveLiveness.from_dir("bundle/")                      # doctest: +SKIP
    >>> live.check(image_bgr, faces.xyxy[0]).live                        # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Any, Mapping

import json
from pathlib import Path

import cv2
import numpy as np

from edge.numeric import softmax
from edge.card_match import check_card_matches
from edge.errors import FaceError, LivenessError, ModelCardError, ModelIntegrityError
from edge.face.challenge import HeadTurnChallenge
from edge.face.ir_liveness import IrLiveness
from edge.face.types import LivenessResult

__all__ = ["PassiveLiveness", "IrLiveness", "HeadTurnChallenge", "AllOf", "find_liveness_cards",
           "crop_box", "scaled_crop", "DEFAULT_LIVENESS_THRESHOLD", "LIVE_CLASS", "CROP_SIZE"]

#: Threshold on the averaged live probability when no profile gives one.
DEFAULT_LIVENESS_THRESHOLD = 0.5
#: Softmax index of a live face in the MiniFASNet outputs (0 and 2 are spoof kinds).
LIVE_CLASS = 1
#: Side of the square model input.
CROP_SIZE = 80
METHOD_PASSIVE = "passive"


def crop_box(image_shape: tuple[int, ...], box_xyxy, scale: float) -> tuple[int, int, int, int]:
    """The enlarged crop rectangle ``(x1, y1, x2, y2)`` (inclusive) of the original ``CropImage``.

    The box is scaled around its centre by ``scale``, reduced first so it fits the image
    (``min((H-1)/h, (W-1)/w, scale)``), then shifted (not clipped) back inside the image.

    Raises:
        FaceError: an empty or non-finite box.
    """
    src_h, src_w = image_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box_xyxy, np.float64).reshape(4))
    bw, bh = x2 - x1, y2 - y1
    if not (np.isfinite([x1, y1, x2, y2]).all() and bw > 0 and bh > 0):
        raise FaceError(f"face box must have positive width and height, got {(x1, y1, x2, y2)}")
    scale = min((src_h - 1) / bh, (src_w - 1) / bw, float(scale))
    nw, nh = bw * scale, bh * scale
    cx, cy = x1 + bw / 2, y1 + bh / 2
    left, top, right, bottom = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > src_w - 1:
        left -= right - src_w + 1
        right = src_w - 1
    if bottom > src_h - 1:
        top -= bottom - src_h + 1
        bottom = src_h - 1
    return int(left), int(top), int(right), int(bottom)


def scaled_crop(image_bgr: np.ndarray, box_xyxy, scale: float, size: int = CROP_SIZE) -> np.ndarray:
    """Crop the enlarged box (see :func:`crop_box`) and resize it to ``size×size`` (bilinear)."""
    x1, y1, x2, y2 = crop_box(image_bgr.shape, box_xyxy, scale)
    patch = image_bgr[max(0, y1):y2 + 1, max(0, x1):x2 + 1]
    if patch.size == 0:
        raise FaceError(f"face box {tuple(np.round(box_xyxy, 1))} is outside the {image_bgr.shape[1]}×"
                        f"{image_bgr.shape[0]} image")
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)


def _as_bgr(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise FaceError(f"image must be a uint8 array, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise FaceError(f"image must be H×W×3 BGR or H×W gray, got shape {image.shape}")
    return image


class PassiveLiveness:
    """Average the live probability of several MiniFASNet models (the original's pair).

    Args:
        models: ``[(engine, card), ...]``; each card has ``task == "liveness"`` and
            ``face_crop.crop_scale``.
        threshold: minimum averaged live probability.
        owns_engines: close the engines in :meth:`close`.

    Raises:
        ModelCardError: a card without ``crop_scale`` or of another task.
        LivenessError: no models.
    """

    def __init__(self, models, threshold: float = DEFAULT_LIVENESS_THRESHOLD, *, owns_engines: bool = False) -> None:
        self.models = []
        for engine, card in models:
            if card.task != "liveness":
                raise ModelCardError(f"card {card.name!r} has task {card.task!r}, not 'liveness'")
            if card.face_crop is None:
                raise ModelCardError(f"liveness card {card.name!r} has no face_crop.crop_scale")
            check_card_matches(card, engine)
            size = card.inputs[0].size if card.inputs else (CROP_SIZE, CROP_SIZE)
            self.models.append((engine, card, card.face_crop.crop_scale, int(size[0] or CROP_SIZE),
                                engine.inputs[0].name, engine.outputs[0].name))
        if not self.models:
            raise LivenessError("PassiveLiveness needs at least one model")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"liveness threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self._owns = owns_engines

    @classmethod
    def from_cards(cls, found, *, threads: int | None = None, backend: str | None = None,
                   threshold: float = DEFAULT_LIVENESS_THRESHOLD,
                   engine_options: Mapping[str, Any] | None = None) -> "PassiveLiveness":
        """Load ``[(card, model_path), ...]`` as returned by :func:`find_liveness_cards`
        (``engine_options``: further ``load_engine`` options, a profile's providers)."""
        from edge.engines import engine_kwargs, load_engine

        loaded = []
        try:
            for card, path in found:
                loaded.append((load_engine(path, backend, **engine_kwargs(threads, engine_options)), card))
            return cls(loaded, threshold, owns_engines=True)
        except Exception:
            for engine, _ in loaded:
                engine.close()
            raise

    @classmethod
    def from_dir(cls, directory, **kwargs) -> "PassiveLiveness":
        """Load every liveness model found in ``directory`` (see :func:`find_liveness_cards`).

        Raises:
            LivenessError: none found.
        """
        found = find_liveness_cards([directory])
        if not found:
            raise LivenessError(f"no liveness model (ONNX + card with task 'liveness') in {directory}; "
                                "run `edge-export liveness --out DIR`")
        return cls.from_cards(found, **kwargs)

    def probabilities(self, image, box_xyxy) -> list[np.ndarray]:
        """Per-model softmax (3 classes) for the face ``box_xyxy`` of ``image``."""
        bgr = _as_bgr(image)
        out = []
        for engine, _card, scale, size, in_name, out_name in self.models:
            crop = scaled_crop(bgr, box_xyxy, scale, size)
            x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)
            logits = np.asarray(engine.run({in_name: x})[out_name], np.float64).reshape(-1)
            out.append(softmax(logits))
        return out

    def check(self, image, box_xyxy, landmarks=None) -> LivenessResult:
        """Decide whether the face in ``box_xyxy`` is live.

        Args:
            image: the frame, ``uint8`` BGR (gray is expanded).
            box_xyxy: the detector's face box in frame pixels.
            landmarks: unused (accepted for the common checker interface).

        Returns:
            :class:`LivenessResult` with ``method="passive"`` and per-model probabilities in
            ``detail["models"]``.
        """
        probs = self.probabilities(image, box_xyxy)
        mean = np.mean(probs, axis=0)
        score = float(mean[LIVE_CLASS])
        label = int(np.argmax(mean))
        detail = {"models": {m[1].name: [round(float(p), 6) for p in pr] for m, pr in zip(self.models, probs)},
                  "argmax": label, "threshold": self.threshold}
        return LivenessResult(score=score, live=score >= self.threshold, method=METHOD_PASSIVE, detail=detail)

    def reset(self) -> None:
        """Stateless: nothing to reset (common checker interface)."""

    def close(self) -> None:
        if self._owns:
            for m in self.models:
                m[0].close()


class AllOf:
    """Live only when every checker says live; the score is the minimum.

    Example:
        >>> checker = AllOf([IrLiveness(require_ir=True), HeadTurnChallenge()])   # doctest: +SKIP
    """

    def __init__(self, checkers) -> None:
        if not checkers:
            raise ValueError("AllOf needs at least one checker")
        self.checkers = list(checkers)

    def check(self, image, box_xyxy, landmarks=None) -> LivenessResult:
        results = [c.check(image, box_xyxy, landmarks) for c in self.checkers]
        return LivenessResult(score=min(r.score for r in results), live=all(r.live for r in results),
                              method="+".join(r.method for r in results),
                              detail={r.method: {"score": r.score, "live": r.live, **r.detail} for r in results})

    def reset(self) -> None:
        for c in self.checkers:
            getattr(c, "reset", lambda: None)()

    def close(self) -> None:
        for c in self.checkers:
            getattr(c, "close", lambda: None)()


def find_liveness_cards(directories) -> list[tuple]:
    """Liveness models (card JSON + model file beside it) in ``directories`` (not recursive).

    Only runnable formats are returned (ONNX, TFLite). Each file's sha256 is checked against
    its card.

    Returns:
        ``[(card, model_path), ...]`` sorted by card name (``minifasnet_v1se…`` before
        ``minifasnet_v2…``), one per card name (the first directory wins).

    Raises:
        ModelIntegrityError: a model file whose sha256 differs from its card.
        ModelCardError: a malformed liveness card.
    """
    from edge.cards import load_card
    from edge.registry import sha256_file

    found: dict[str, tuple] = {}
    for d in directories:
        if d is None or not Path(d).is_dir():
            continue
        for cp in sorted(Path(d).glob("*.json")):
            try:
                raw = json.loads(cp.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(raw, dict) or raw.get("task") != "liveness" or raw.get("format") not in ("onnx", "tflite"):
                continue
            card = load_card(cp)
            path = cp.parent / card.file
            if not path.is_file() or card.name in found:
                continue
            actual = sha256_file(path)
            if actual != card.sha256:
                raise ModelIntegrityError(f"{path}: sha256 mismatch with its card {cp} (expected {card.sha256}, got {actual})")
            found[card.name] = (card, path)
    return [found[k] for k in sorted(found)]
