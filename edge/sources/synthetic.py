"""A deterministic source of generated frames, for tests, demos and benchmarks without a camera."""

from __future__ import annotations

import time

import numpy as np

from edge.imageio import MAX_PIXELS
from edge.sources.base import FrameSource, Grab

__all__ = ["SyntheticSource", "SYNTHETIC_PATTERNS"]

SYNTHETIC_PATTERNS = ("gradient", "noise", "checker")
#: Side of the checkerboard squares, in pixels.
CHECKER_SQUARE = 32
#: Horizontal speed of the moving white square, in pixels per frame.
MOVER_SPEED = 8


class SyntheticSource(FrameSource):
    """Generated BGR frames with a white square moving left to right.

    Frame ``i`` depends only on ``(pattern, seed, i)``, so two sources with the same arguments
    yield identical frames. The square (side ``min(width, height) // 4``) has its top-left
    corner at ``x = (i * MOVER_SPEED) % (width - side + 1)``, ``y = (height - side) // 2``.

    Args:
        width, height: frame size in pixels.
        fps: if given, timestamps are ``index / fps`` and, with ``realtime=True``, reads are
            paced to that rate; otherwise timestamps are ``time.monotonic()``.
        pattern: background, one of ``"gradient"``, ``"noise"``, ``"checker"``.
        seed: seeds the noise pattern.
        realtime: sleep so frames arrive at ``fps`` (needs ``fps``).
        max_frames: see :class:`FrameSource`; None means endless.

    Example:
        >>> with SyntheticSource(64, 48, max_frames=2) as src:
        ...     [f.image.shape for f in src]
        [(48, 64, 3), (48, 64, 3)]
    """

    def __init__(self, width: int = 640, height: int = 480, *, fps: float | None = None,
                 pattern: str = "gradient", seed: int = 0, realtime: bool = False,
                 max_frames: int | None = None) -> None:
        if pattern not in SYNTHETIC_PATTERNS:
            raise ValueError(
                f"pattern must be one of {', '.join(SYNTHETIC_PATTERNS)}, got {pattern!r}")
        if width < 4 or height < 4:
            raise ValueError(f"synthetic frames must be at least 4×4, got {width}×{height}")
        if width * height > MAX_PIXELS:
            raise ValueError(f"synthetic:{width}x{height} is {width * height:,} pixels, more than the "
                             f"{MAX_PIXELS:,}-pixel frame limit")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive or None, got {fps!r}")
        if realtime and fps is None:
            raise ValueError("realtime=True needs an fps to pace to")
        super().__init__(f"synthetic:{width}x{height}", max_frames=max_frames)
        self.width, self.height, self.fps = width, height, fps
        self.pattern, self.seed, self.realtime = pattern, seed, realtime
        self._t0: float | None = None

    def frame_image(self, i: int) -> np.ndarray:
        """The image of frame ``i`` (pure function of the constructor arguments and ``i``)."""
        h, w = self.height, self.width
        if self.pattern == "gradient":
            xs = np.linspace(0, 255, w, dtype=np.float32)[None, :]
            ys = np.linspace(0, 255, h, dtype=np.float32)[:, None]
            img = np.empty((h, w, 3), np.uint8)
            img[..., 0] = np.broadcast_to(xs, (h, w)).astype(np.uint8)  # blue grows rightwards
            img[..., 1] = np.broadcast_to(ys, (h, w)).astype(np.uint8)  # green grows downwards
            img[..., 2] = (i * 5) % 256                                 # red changes per frame
        elif self.pattern == "noise":
            rng = np.random.default_rng([self.seed, i])
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:  # checker, scrolling one pixel per frame
            yy, xx = np.indices((h, w))
            cells = ((xx + i) // CHECKER_SQUARE + yy // CHECKER_SQUARE) % 2
            img = np.repeat((cells * 255).astype(np.uint8)[..., None], 3, axis=2)
        side = max(1, min(w, h) // 4)
        x = (i * MOVER_SPEED) % (w - side + 1)
        y = (h - side) // 2
        img[y:y + side, x:x + side] = 255
        return img

    def _grab(self) -> Grab | None:
        i = self._index
        if self.fps is None:
            return self.frame_image(i), time.monotonic(), {}
        if self.realtime:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            delay = self._t0 + i / self.fps - now
            if delay > 0:
                time.sleep(delay)
        return self.frame_image(i), i / self.fps, {}
