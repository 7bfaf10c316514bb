"""A video stream synthesised from real face photos, for measuring tracking on known ground truth.

Each photo is shown for ``frames_per_face`` frames on a plain background, drifting along a
smooth path and slowly changing scale (a person in front of a laptop camera moves a few pixels
per frame at 30 fps); between two photos come ``gap`` frames without a face (one person leaves,
the next arrives). Every frame carries the index of the photo it shows (``None`` in a gap), so a
test knows when a new face enters and when one leaves.

Example:
    >>> for frame, who in moving_face_frames([load_image(p) for p in photos]):   # doctest: +SKIP
    ...     result = tracker.analyze(frame)
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import cv2
import numpy as np

__all__ = ["moving_face_frames"]


def moving_face_frames(photos: Sequence[np.ndarray], *, frames_per_face: int = 30, gap: int = 3,
                       size: tuple[int, int] = (640, 480), face_height: int = 260, step_px: float = 3.0,
                       background: int = 90) -> Iterator[tuple[np.ndarray, int | None]]:
    """Yield ``(frame, photo index or None)``: BGR ``uint8`` frames of ``size`` (width, height).

    Args:
        photos: BGR ``uint8`` photos, each of one face (the photo is scaled to ``face_height``
            pixels tall, ±10 % over its frames).
        frames_per_face: frames showing each photo.
        gap: empty frames after each photo.
        size: frame ``(width, height)``.
        face_height: pasted photo height in pixels (clipped to the frame).
        step_px: largest motion per frame, in pixels.
        background: grey level of the background.

    Raises:
        ValueError: no photos, a photo that is not ``H×W×3`` ``uint8``, or a non-positive count.
    """
    if not photos:
        raise ValueError("moving_face_frames needs at least one photo")
    if frames_per_face < 1 or gap < 0 or face_height < 16:
        raise ValueError(f"frames_per_face must be >= 1, gap >= 0 and face_height >= 16, got "
                         f"{frames_per_face}, {gap}, {face_height}")
    w, h = int(size[0]), int(size[1])
    for k, photo in enumerate(photos):
        if not isinstance(photo, np.ndarray) or photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
            raise ValueError(f"photo {k} must be an H×W×3 uint8 BGR array, got "
                             f"{getattr(photo, 'shape', type(photo).__name__)} {getattr(photo, 'dtype', '')}")
        for t in range(frames_per_face):
            phase = t / max(1, frames_per_face - 1)
            scale = min(face_height * (0.9 + 0.2 * phase), h - 8) / photo.shape[0]
            fw, fh = max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))
            if fw > w - 8:
                s2 = (w - 8) / fw
                fw, fh = w - 8, max(1, round(fh * s2))
            img = cv2.resize(photo, (fw, fh), interpolation=cv2.INTER_AREA)
            # a Lissajous drift of at most step_px per frame, different for every photo
            ax, ay = (w - fw) / 2 * 0.8, (h - fh) / 2 * 0.8
            a = k + t * step_px / max(ax, 1.3 * ay, 1.0)
            cx = w / 2 + ax * math.sin(a)
            cy = h / 2 + ay * math.sin(1.3 * a + k)
            x0 = int(round(min(max(cx - fw / 2, 0), w - fw)))
            y0 = int(round(min(max(cy - fh / 2, 0), h - fh)))
            frame = np.full((h, w, 3), background, np.uint8)
            frame[y0:y0 + fh, x0:x0 + fw] = img
            yield frame, k
        for _ in range(gap):
            yield np.full((h, w, 3), background, np.uint8), None
