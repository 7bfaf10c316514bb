"""Liveness for infrared cameras: is the source really IR, is the frame usable, does the face
answer the emitter?

Screens emit no near-infrared light, so a face replayed on a phone or monitor looks black to an
IR camera (the reason Howdy insists on IR). That protection only holds if the frames are IR:
the source kind is decided **from the frames**, never from the device name — a camera called
"ir" that delivers colour frames is refused.

A frame counts as IR when it is single-channel, or has three channels that are nearly equal
everywhere (the per-pixel spread max−min of B, G, R is small on average and at its 99th
percentile; a colour camera sees skin, clothes and walls with clearly unequal channels).
Frames that are mostly black (Howdy's ``dark_threshold`` idea: most pixels in the darkest
histogram bin) are skipped, not judged. With ``strobe=True`` (emitters that light alternate
frames) the face region must brighten and darken between consecutive frames: a face lit by
the emitter answers it, a self-lit replay does not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.errors import FaceError, NotIrSourceError
from edge.face.types import LivenessResult

__all__ = ["IrConfig", "IrLiveness", "FrameKind", "classify_frame", "KIND_IR", "KIND_COLOUR", "KIND_DARK"]

KIND_IR, KIND_COLOUR, KIND_DARK = "ir", "colour", "dark"
METHOD_IR = "ir"
#: Frames remembered for the strobe comparison.
_HISTORY = 2


@dataclass(frozen=True)
class IrConfig:
    """Thresholds of the IR checks.

    Attributes:
        max_mean_spread: largest mean per-pixel channel spread (max−min of B, G, R, grey
            levels) of an IR frame delivered as 3 channels. Colour scenes measure 15–60.
        max_p99_spread: largest 99th percentile of that spread (JPEG chroma noise stays
            well under it in grey frames).
        dark_level: grey level under which a pixel is "dark".
        dark_fraction: skip a frame when at least this fraction of its pixels is dark.
        min_face_level: the face region's mean grey level must reach this (lit by the emitter).
        min_strobe_contrast: with ``strobe``, the face region's relative brightness change
            between consecutive frames, ``|a − b| / max(a, b)``, must reach this.
    """

    max_mean_spread: float = 4.0
    max_p99_spread: float = 24.0
    dark_level: int = 32
    dark_fraction: float = 0.6
    min_face_level: float = 40.0
    min_strobe_contrast: float = 0.15


@dataclass(frozen=True)
class FrameKind:
    """The verdict on one frame: ``kind`` is ``"ir"``, ``"colour"`` or ``"dark"``, with figures."""

    kind: str
    mean_spread: float
    p99_spread: float
    dark_fraction: float


def _grey_and_spread(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise FaceError(f"frame must be a uint8 array, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image, None
    if image.ndim != 3 or image.shape[2] != 3:
        raise FaceError(f"frame must be H×W, H×W×1 or H×W×3, got shape {image.shape}")
    spread = image.max(axis=2).astype(np.int16) - image.min(axis=2)
    grey = (image.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
    return grey, spread


def classify_frame(image: np.ndarray, config: IrConfig = IrConfig()) -> FrameKind:
    """Decide whether a frame is IR, colour, or too dark to judge.

    Colour wins over dark: a dim colour frame is still refused by ``require_ir``.
    """
    grey, spread = _grey_and_spread(image)
    dark = float(np.count_nonzero(grey < config.dark_level)) / grey.size
    mean_s = p99_s = 0.0
    if spread is not None:
        mean_s = float(spread.mean())
        p99_s = float(np.percentile(spread, 99))
        if mean_s > config.max_mean_spread or p99_s > config.max_p99_spread:
            return FrameKind(KIND_COLOUR, mean_s, p99_s, dark)
    kind = KIND_DARK if dark >= config.dark_fraction else KIND_IR
    return FrameKind(kind, mean_s, p99_s, dark)


def _region_mean(grey: np.ndarray, box) -> float:
    h, w = grey.shape
    x1, y1, x2, y2 = np.asarray(box, np.float64).reshape(4)
    xa, ya = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1))
    xb, yb = int(np.clip(np.ceil(x2), xa + 1, w)), int(np.clip(np.ceil(y2), ya + 1, h))
    return float(grey[ya:yb, xa:xb].mean())


class IrLiveness:
    """IR-camera liveness, stateful over consecutive frames.

    Args:
        require_ir: refuse non-IR frames with :class:`~edge.errors.NotIrSourceError`. Without
            it, colour frames pass through this check untouched (``live=True``,
            ``detail["skipped"] = "not_ir"``), so it can sit beside the passive check.
        strobe: the emitter lights alternate frames; require the lit/unlit difference.
        config: thresholds.

    Call :meth:`observe` on every frame (the face pipeline does) so that the strobe check sees
    unlit frames in which no face is detected; :meth:`check` observes its own frame too.

    Example:
        >>> ir = IrLiveness(require_ir=True, strobe=True)                 # doctest: +SKIP
        >>> for frame in source:                                          # doctest: +SKIP
        ...     ir.observe(frame.image)
        ...     result = ir.check(frame.image, box)
    """

    def __init__(self, require_ir: bool = True, *, strobe: bool = False, config: IrConfig = IrConfig()) -> None:
        self.require_ir = bool(require_ir)
        self.strobe = bool(strobe)
        self.config = config
        self._frames: deque = deque(maxlen=_HISTORY)  # (id(image), grey)
        self.last_kind: FrameKind | None = None

    def reset(self) -> None:
        self._frames.clear()
        self.last_kind = None

    def observe(self, image: np.ndarray) -> FrameKind:
        """Record a frame (once per image object) and classify it.

        Raises:
            NotIrSourceError: ``require_ir`` and the frame is colour.
        """
        if self._frames and self._frames[-1][0] is image:
            kind = self.last_kind
        else:
            kind = classify_frame(image, self.config)
            grey, _ = _grey_and_spread(image)
            self._frames.append((image, grey))
            self.last_kind = kind
        if kind.kind == KIND_COLOUR and self.require_ir:
            raise NotIrSourceError(
                f"IR is required but the frames are colour (mean channel spread {kind.mean_spread:.1f} > "
                f"{self.config.max_mean_spread}, 99th percentile {kind.p99_spread:.1f}); the source's name "
                "does not matter: use a camera that delivers infrared frames")
        return kind

    def check(self, image: np.ndarray, box_xyxy, landmarks=None) -> LivenessResult:
        """Judge the face ``box_xyxy`` of ``image``.

        Returns:
            ``live=False`` with ``detail["skipped"]`` for a dark frame (do not count it);
            ``live=False`` with ``detail["reason"]`` when the face is unlit or does not answer
            the strobe; ``live=True`` otherwise.

        Raises:
            NotIrSourceError: ``require_ir`` and the frame is colour.
        """
        kind = self.observe(image)
        detail = {"frame": kind.kind, "mean_spread": round(kind.mean_spread, 3),
                  "dark_fraction": round(kind.dark_fraction, 4)}
        if kind.kind == KIND_COLOUR:
            return LivenessResult(1.0, True, METHOD_IR, {**detail, "skipped": "not_ir"})
        if kind.kind == KIND_DARK:
            return LivenessResult(0.0, False, METHOD_IR, {**detail, "skipped": "dark"})
        grey = self._frames[-1][1]
        level = _region_mean(grey, box_xyxy)
        detail["face_level"] = round(level, 2)
        if level < self.config.min_face_level:
            return LivenessResult(0.0, False, METHOD_IR, {**detail, "reason": "face_unlit"})
        if not self.strobe:
            return LivenessResult(1.0, True, METHOD_IR, detail)
        if len(self._frames) < _HISTORY:
            return LivenessResult(0.0, False, METHOD_IR, {**detail, "reason": "need_previous_frame"})
        prev = _region_mean(self._frames[-2][1], box_xyxy)
        contrast = abs(level - prev) / max(level, prev, 1e-6)
        detail.update(previous_level=round(prev, 2), strobe_contrast=round(contrast, 4))
        score = float(min(1.0, contrast / self.config.min_strobe_contrast))
        live = contrast >= self.config.min_strobe_contrast
        return LivenessResult(score, live, METHOD_IR, detail if live else {**detail, "reason": "no_strobe_response"})
