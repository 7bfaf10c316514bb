"""Follow one face between video frames: detect near where it was instead of in the whole frame.

For a stream (unlock from a camera) the face moves little between frames, so detection runs
on a region around the last box (a few times smaller than the frame); the whole frame is
searched again when the face is not found there, when it touches the region's edge (it is
moving out), and every ``redetect_every`` frames (a second, larger face may have entered).
Every frame still gets a fresh detection, so landmarks, alignment, liveness and the embedding
are exactly those the full pipeline computes for that face. A still image has no previous
frame: it is always a full detection.

Example:
    >>> tracker = FaceTracker(create_pipeline(detect_size=(320, 240)))     # doctest: +SKIP
    >>> for frame in camera:                                               # doctest: +SKIP
    ...     face = tracker.analyze(frame).largest
"""

from __future__ import annotations

import numpy as np

from edge.face.types import FaceAnalysis

__all__ = ["FaceTracker"]


class FaceTracker:
    """Wrap a :class:`~edge.face.pipeline.FacePipeline` for frame sequences (largest face only).

    Args:
        pipeline: the pipeline to run.
        margin: the search region is the last box grown by this many box sizes on each side.
        redetect_every: search the whole frame at least every N frames.
    """

    def __init__(self, pipeline, *, margin: float = 1.0, redetect_every: int = 15) -> None:
        if margin <= 0 or redetect_every < 1:
            raise ValueError(f"margin must be > 0 and redetect_every >= 1, got {margin}, {redetect_every}")
        self.pipeline = pipeline
        self.margin = float(margin)
        self.redetect_every = int(redetect_every)
        self._box: np.ndarray | None = None
        self._since_full = 0
        self.full_detections = 0

    def reset(self) -> None:
        """Forget the face (next frame is searched whole)."""
        self._box = None

    def _roi(self, shape) -> tuple[int, int, int, int] | None:
        if self._box is None or self._since_full >= self.redetect_every:
            return None
        x0, y0, x1, y1 = self._box
        gx, gy = (x1 - x0) * self.margin, (y1 - y0) * self.margin
        h, w = shape[:2]
        roi = (max(0.0, x0 - gx), max(0.0, y0 - gy), min(float(w), x1 + gx), min(float(h), y1 + gy))
        return None if roi[2] - roi[0] < 8 or roi[3] - roi[1] < 8 else roi

    def analyze(self, image, **kw) -> FaceAnalysis:
        """:meth:`FacePipeline.analyze` of the largest face, detecting near the last one."""
        kw["max_faces"] = 1
        raw = getattr(image, "image", image)
        roi = self._roi(raw.shape)
        result = None
        if roi is not None:
            result = self.pipeline.analyze(image, roi=roi, **kw)
            face = result.largest
            if face is None or _touches_edge(face.box, roi, raw.shape):
                result = None  # lost, or leaving the region: search the whole frame
        if result is None:
            result = self.pipeline.analyze(image, **kw)
            self._since_full = 0
            self.full_detections += 1
        else:
            self._since_full += 1
        face = result.largest
        self._box = None if face is None else np.asarray(face.box, np.float64).copy()
        return result


def _touches_edge(box, roi, shape, tol: float = 2.0) -> bool:
    """True when the box reaches a side of the region that is not also the frame's side."""
    h, w = shape[:2]
    x0, y0, x1, y1 = box
    r0, s0, r1, s1 = roi
    return ((r0 > 0 and x0 <= r0 + tol) or (s0 > 0 and y0 <= s0 + tol)
            or (r1 < w and x1 >= r1 - tol) or (s1 < h and y1 >= s1 - tol))
