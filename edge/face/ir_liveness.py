"""Liveness for infrared cameras: is the source really IR, is the frame usable, does the face
answer the emitter?

Screens emit no near-infrared light, so a face replayed on a phone or monitor looks black to an
IR camera (the reason Howdy insists on IR). That protection only holds if the frames are IR:
the source kind is decided **from the frames**, never from the device name — a camera called
"ir" that delivers colour frames is refused.

A frame counts as IR when it is single-channel, or has three channels that are nearly equal
everywhere (the per-pixel spread max−min of B, G, R is small on average and at its 99th
percentile; a colour camera sees skin, clothes and walls with clearly unequal channels).
A frame whose **face region** is mostly black (Howdy's ``dark_threshold`` idea: most pixels
in the darkest histogram bin) is skipped, not judged; a dark background is normal under an IR
emitter, whose light falls off with distance, so only the face counts.

Strobing emitters (lighting alternate frames): with ``strobe=True`` the face region must
brighten and darken between consecutive frames, and with ``strobe="auto"`` the strobe is
detected from the frames themselves — the surround of the face (what the emitter lights besides
the face) alternating lit/unlit — and, once seen in an attempt, the face must answer it in step.
A face lit by the emitter answers it, a self-lit replay (a screen, or a recorded video) does not.

Replay check (temporal, from the second frame of a sequence): under a constant emitter a live
face keeps its brightness and moves smoothly between frames; a face whose brightness jumps while
its surround stays steady (a replayed recording of a strobing camera, a flickering display) or
whose box jumps by a large part of its size from one frame to the next (a cut in a replayed
video) is refused. A single still image carries no temporal evidence and is judged on its one
frame (:meth:`IrLiveness.reset` with ``still=True``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.errors import FaceError, NotIrSourceError
from edge.face.types import LivenessResult

__all__ = ["IrConfig", "IrLiveness", "FrameKind", "classify_frame", "KIND_IR", "KIND_COLOUR", "KIND_DARK",
           "STROBE_SETTINGS"]

KIND_IR, KIND_COLOUR, KIND_DARK = "ir", "colour", "dark"
METHOD_IR = "ir"
#: Frames remembered: a strobe is recognised from three (lit, unlit, lit or the reverse).
_HISTORY = 3
#: Frames a temporal comparison needs.
_PAIR = 2


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
            between consecutive frames, ``|a − b| / max(a, b)``, must reach this; with
        strobe_detect_contrast: with ``strobe="auto"``, a surround pixel strobes when it
            alternates over three frames with at least this relative change at each step (the
            unlit frames keep only ambient light; a flickering display changes far less) …
        min_strobe_fraction: … and the emitter strobes when at least this fraction of the
            surround's pixels do.
        min_surround_level: the lit surround must reach this grey level for its change to be
            read as a strobe (sensor noise on a black background is not).
        max_face_jump: under a constant emitter, the largest relative face-brightness change
            between consecutive frames of a live face (exposure control moves it a few %).
        max_box_jump: the largest move of the face box between consecutive frames, as a
            fraction of its size (centre shift or size change).
    """

    max_mean_spread: float = 4.0
    max_p99_spread: float = 24.0
    dark_level: int = 32
    dark_fraction: float = 0.6
    min_face_level: float = 40.0
    min_strobe_contrast: float = 0.15
    strobe_detect_contrast: float = 0.5
    min_strobe_fraction: float = 0.2
    min_surround_level: float = 8.0
    max_face_jump: float = 0.15
    max_box_jump: float = 0.5


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


#: ``strobe`` settings: off, on, or detected from the frames.
STROBE_SETTINGS = (False, True, "auto")
#: The surround is the frame outside the face box enlarged by this factor around its centre.
_SURROUND_SCALE = 1.6
#: Subsampling step of the per-pixel strobe detection.
_GRID = 4


def _slices(shape, box, scale: float = 1.0) -> tuple[slice, slice]:
    h, w = shape[:2]
    x1, y1, x2, y2 = np.asarray(box, np.float64).reshape(4)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    xa, ya = int(np.clip(np.floor(cx - hw), 0, w - 1)), int(np.clip(np.floor(cy - hh), 0, h - 1))
    xb, yb = int(np.clip(np.ceil(cx + hw), xa + 1, w)), int(np.clip(np.ceil(cy + hh), ya + 1, h))
    return slice(ya, yb), slice(xa, xb)


def _region_mean(grey: np.ndarray, box) -> float:
    return float(grey[_slices(grey.shape, box)].mean())


def _surround_mean(grey: np.ndarray, box) -> float | None:
    """Mean grey level outside the enlarged face box (None when the face fills the frame)."""
    ys, xs = _slices(grey.shape, box, _SURROUND_SCALE)
    inside = (ys.stop - ys.start) * (xs.stop - xs.start)
    outside = grey.size - inside
    if outside < 0.1 * grey.size:
        return None
    return (float(grey.sum(dtype=np.float64)) - float(grey[ys, xs].sum(dtype=np.float64))) / outside


def _contrast(a: float, b: float) -> float:
    return abs(a - b) / max(a, b, 1e-6)


def _box_jump(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(4), np.asarray(b, np.float64).reshape(4)
    size = max(a[2] - a[0], a[3] - a[1], 1e-6)
    shift = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    resize = abs((b[2] - b[0]) - (a[2] - a[0])) + abs((b[3] - b[1]) - (a[3] - a[1]))
    return float(max(shift, resize / 2) / size)


class IrLiveness:
    """IR-camera liveness, stateful over consecutive frames of one attempt.

    Args:
        require_ir: refuse non-IR frames with :class:`~edge.errors.NotIrSourceError`. Without
            it, colour frames pass through this check untouched (``live=True``,
            ``detail["skipped"] = "not_ir"``), so it can sit beside the passive check.
        strobe: ``True`` the emitter lights alternate frames (require the lit/unlit
            difference); ``False`` a constant emitter; ``"auto"`` detect it per attempt.
        config: thresholds.

    Call :meth:`observe` on every frame (the face pipeline does) so that the strobe check sees
    unlit frames in which no face is detected; :meth:`check` observes its own frame too. Call
    :meth:`reset` between attempts.

    Example:
        >>> ir = IrLiveness(require_ir=True, strobe="auto")               # doctest: +SKIP
        >>> for frame in source:                                          # doctest: +SKIP
        ...     ir.observe(frame.image)
        ...     result = ir.check(frame.image, box)
    """

    def __init__(self, require_ir: bool = True, *, strobe: bool | str = False, config: IrConfig = IrConfig()) -> None:
        if strobe not in STROBE_SETTINGS:
            raise ValueError(f"strobe must be True, False or 'auto', got {strobe!r}")
        self.require_ir = bool(require_ir)
        self.strobe = strobe
        self.config = config
        self._frames: deque = deque(maxlen=_HISTORY)  # (image, grey)
        self.last_kind: FrameKind | None = None
        self.reset()

    def reset(self, *, still: bool = False) -> None:
        """Forget the attempt's frames; ``still``: the attempt is one still image (no temporal checks)."""
        self._frames.clear()
        self.last_kind = None
        self.still = bool(still)
        self.strobe_seen = False
        self._last_box = None  # (image, box) of the last check

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

    def _alternates(self, box) -> bool:
        """Enough of the surround goes lit, unlit, lit (or the reverse) over the last three frames.

        Judged per pixel (on a 4× subsampled grid): an emitter that strobes lights whatever is
        near the camera, so a large part of the surround alternates strongly; a display held up
        to the camera (self-lit, or flickering less) does not, whatever the room around it does.
        """
        cfg = self.config
        ys, xs = _slices(self._frames[-1][1].shape, box, _SURROUND_SCALE)
        a, b, c = (g[::_GRID, ::_GRID].astype(np.float32) for _, g in self._frames)
        outside = np.ones(a.shape, bool)
        outside[ys.start // _GRID:-(-ys.stop // _GRID), xs.start // _GRID:-(-xs.stop // _GRID)] = False
        if np.count_nonzero(outside) < 0.1 * outside.size:
            return False
        lit = np.maximum(np.maximum(a, b), c) >= cfg.min_surround_level
        ab = np.abs(a - b) / np.maximum(np.maximum(a, b), 1.0)
        bc = np.abs(b - c) / np.maximum(np.maximum(b, c), 1.0)
        flips = ((b - a) * (c - b) < 0) & (ab >= cfg.strobe_detect_contrast) & (bc >= cfg.strobe_detect_contrast)
        return bool(np.count_nonzero(flips & lit & outside) >= cfg.min_strobe_fraction * np.count_nonzero(outside))

    def check(self, image: np.ndarray, box_xyxy, landmarks=None) -> LivenessResult:
        """Judge the face ``box_xyxy`` of ``image``.

        Returns:
            ``live=False`` with ``detail["skipped"]`` for a frame whose face region is dark (do
            not count it); ``live=False`` with ``detail["reason"]`` when the face is unlit, does
            not answer the strobe, or jumps like a replay; ``live=True`` otherwise.

        Raises:
            NotIrSourceError: ``require_ir`` and the frame is colour.
        """
        kind = self.observe(image)
        detail = {"frame": kind.kind, "mean_spread": round(kind.mean_spread, 3)}
        if kind.kind == KIND_COLOUR:
            return LivenessResult(1.0, True, METHOD_IR, {**detail, "skipped": "not_ir"})
        cfg = self.config
        grey = self._frames[-1][1]
        face = grey[_slices(grey.shape, box_xyxy)]
        face_dark = float(np.count_nonzero(face < cfg.dark_level)) / face.size
        level = float(face.mean())
        detail.update(face_dark_fraction=round(face_dark, 4), face_level=round(level, 2))
        last_box, self._last_box = self._last_box, (image, np.asarray(box_xyxy, np.float64).reshape(4))
        if face_dark >= cfg.dark_fraction:
            return LivenessResult(0.0, False, METHOD_IR, {**detail, "skipped": "dark"})
        if level < cfg.min_face_level:
            return LivenessResult(0.0, False, METHOD_IR, {**detail, "reason": "face_unlit"})
        if self.still or (len(self._frames) < _PAIR and self.strobe is False):
            return LivenessResult(1.0, True, METHOD_IR, detail)  # no temporal evidence to judge
        if len(self._frames) < _PAIR:
            return LivenessResult(0.0, False, METHOD_IR, {**detail, "reason": "need_previous_frame"})
        prev_grey = self._frames[-2][1]
        prev = _region_mean(prev_grey, box_xyxy)
        face_change = _contrast(level, prev)
        detail.update(previous_level=round(prev, 2), face_change=round(face_change, 4))
        sur, prev_sur = _surround_mean(grey, box_xyxy), _surround_mean(prev_grey, box_xyxy)
        sur_change = 0.0
        if sur is not None and prev_sur is not None and max(sur, prev_sur) >= cfg.min_surround_level:
            sur_change = _contrast(sur, prev_sur)
            detail["surround_change"] = round(sur_change, 4)
        if self.strobe == "auto" and not self.strobe_seen and len(self._frames) == _HISTORY:
            self.strobe_seen = self._alternates(box_xyxy)
        strobing = self.strobe is True or self.strobe_seen
        detail["strobe"] = strobing
        if strobing:  # the face must answer the emitter, in step with its surround
            in_step = "surround_change" not in detail or (level - prev) * (sur - prev_sur) > 0
            score = float(min(1.0, face_change / cfg.min_strobe_contrast)) if in_step else 0.0
            live = in_step and face_change >= cfg.min_strobe_contrast
            return LivenessResult(score, live, METHOD_IR, detail if live else {**detail, "reason": "no_strobe_response"})
        # constant emitter: a live face neither flickers nor jumps
        if face_change > cfg.max_face_jump:
            return LivenessResult(0.0, False, METHOD_IR, {**detail, "reason": "replay_brightness_jump"})
        if last_box is not None and self._frames[-2][0] is last_box[0]:
            jump = _box_jump(last_box[1], box_xyxy)
            detail["box_jump"] = round(jump, 4)
            if jump > cfg.max_box_jump:
                return LivenessResult(0.0, False, METHOD_IR, {**detail, "reason": "replay_box_jump"})
        return LivenessResult(1.0, True, METHOD_IR, detail)
