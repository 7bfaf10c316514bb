"""Follow one face between video frames: detect near where it was instead of in the whole frame.

For a stream (unlock from a camera) the face moves little between frames, so detection runs on a
region around the last box; the whole frame is searched again when

- there is no face to follow (first frame, or the face was lost),
- the face is not found in the region, or touches the region's edge (it is moving out),
- the picture changed outside the region over a patch that could hold a face as large as the
  followed one (someone entered: only the largest face is analysed, so such a newcomer must be
  seen at once, not at the next periodic search),
- ``redetect_every`` frames have passed since the last whole-frame search.

Every frame still gets a fresh detection, so landmarks, alignment, liveness and the embedding are
those of the face in this frame; the frame is analysed once (the region's detections are reused).
A still image has no previous frame: it is always a full detection. A detector that resizes its
input to a set size itself (a fixed-size graph, e.g. a bundle built before its face detector was
made resizable) is always run on the whole frame: a region would be enlarged to that size,
costing more than the frame and detecting at another scale. ``create_pipeline()``'s default and a
release's face detector (``edge-export build`` frees its TFLite graph's height and width,
:mod:`export.tflite.resizable`) fit frames as the 640×640 graph does in the pipeline
(``FacePipeline.fit_size``), at the whole frame's scale, so they can follow a face; so can a
pipeline with a ``detect_size``. :func:`edge.unlock.verify.verify` follows the face on every
stream.

Example:
    >>> tracker = FaceTracker(create_pipeline(detect_size=(320, 240)))     # doctest: +SKIP
    >>> for frame in camera:                                               # doctest: +SKIP
    ...     face = tracker.analyze(frame).largest
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.face.types import FaceAnalysis

__all__ = ["FaceTracker", "CHANGE_GRID", "CHANGE_LEVEL", "NEWCOMER_FRACTION"]

#: The frame is compared with the previous one on this grid of block means (``(columns, rows)``;
#: 16×16-pixel blocks of a 640×480 frame: camera noise averages out, a face entering does not).
CHANGE_GRID = (40, 30)
#: A block outside the region whose mean grey level moved by more than this is a change.
CHANGE_LEVEL = 20.0
#: A changed patch at least this fraction of the followed face's width and height may be a face as
#: large as it (changed blocks cover most of a face that enters against a different background).
NEWCOMER_FRACTION = 0.5


class FaceTracker:
    """Wrap a :class:`~edge.face.pipeline.FacePipeline` for frame sequences (largest face only).

    Args:
        pipeline: the pipeline to run.
        margin: the search region is the last box grown by this many box sizes on each side.
        redetect_every: search the whole frame at least every N frames.
        change_level: grey-level change of a block outside the region that forces a whole-frame
            search (see :data:`CHANGE_LEVEL`).

    Attributes:
        full_detections: frames searched whole so far.
        last_full: whether the last frame was searched whole.
    """

    def __init__(self, pipeline, *, margin: float = 1.0, redetect_every: int = 15,
                 change_level: float = CHANGE_LEVEL) -> None:
        if margin <= 0 or redetect_every < 1 or change_level <= 0:
            raise ValueError(f"margin and change_level must be > 0 and redetect_every >= 1, got {margin}, "
                             f"{change_level}, {redetect_every}")
        self.pipeline = pipeline
        self.margin = float(margin)
        self.redetect_every = int(redetect_every)
        self.change_level = float(change_level)
        det = getattr(pipeline, "detector", None)
        # a fixed-size graph would enlarge a region to its own size
        self.uses_regions = not getattr(det, "fixed_input", False)
        self._box: np.ndarray | None = None
        self._blocks: np.ndarray | None = None
        self._since_full = 0
        self.full_detections = 0
        self.last_full = False

    def reset(self) -> None:
        """Forget the face and the last picture (next frame is searched whole)."""
        self._box = None
        self._blocks = None

    def _roi(self, shape) -> tuple[float, float, float, float] | None:
        if not self.uses_regions or self._box is None or self._since_full >= self.redetect_every:
            return None
        x0, y0, x1, y1 = self._box
        gx, gy = (x1 - x0) * self.margin, (y1 - y0) * self.margin
        h, w = shape[:2]
        roi = (max(0.0, x0 - gx), max(0.0, y0 - gy), min(float(w), x1 + gx), min(float(h), y1 + gy))
        return None if roi[2] - roi[0] < 8 or roi[3] - roi[1] < 8 else roi

    def _changed_outside(self, blocks: np.ndarray, prev: np.ndarray | None, roi, shape) -> bool:
        """Whether something that could be a face at least as large as the followed one changed
        outside the region: a dense patch of changed blocks, half the followed face's size or
        more (only the largest face is analysed, so a smaller newcomer changes nothing; the thin
        strips a moving head and shoulders leave behind are not such a patch)."""
        if prev is None or prev.shape != blocks.shape:
            return True
        h, w = shape[:2]
        gw, gh = CHANGE_GRID
        changed = np.abs(blocks - prev) > self.change_level
        # blocks touching the region (one block of slack) are inside it
        c0, c1 = int(roi[0] * gw / w) - 1, int(np.ceil(roi[2] * gw / w)) + 1
        r0, r1 = int(roi[1] * gh / h) - 1, int(np.ceil(roi[3] * gh / h)) + 1
        changed[max(0, r0):max(0, r1), max(0, c0):max(0, c1)] = False
        if not changed.any():
            return False
        bx0, by0, bx1, by1 = self._box
        kw = max(1, int((bx1 - bx0) * gw / w * NEWCOMER_FRACTION))
        kh = max(1, int((by1 - by0) * gh / h * NEWCOMER_FRACTION))
        dense = cv2.erode(changed.astype(np.uint8), np.ones((kh, kw), np.uint8), borderType=cv2.BORDER_REPLICATE)
        return bool(dense.any())

    def analyze(self, image, **kw) -> FaceAnalysis:
        """:meth:`FacePipeline.analyze` of the largest face, detecting near the last one."""
        kw["max_faces"] = 1
        kw.pop("roi", None)
        raw = getattr(image, "image", image)
        blocks = None
        prev, roi = self._blocks, self._roi(raw.shape)
        if self.uses_regions:
            grey = raw if raw.ndim == 2 else (raw[..., 0] if raw.shape[2] == 1 else cv2.cvtColor(
                raw[..., :3], cv2.COLOR_BGR2GRAY))
            blocks = cv2.resize(grey, CHANGE_GRID, interpolation=cv2.INTER_AREA).astype(np.float32)
        self._blocks = blocks
        dets, spent = None, 0.0
        if roi is not None and not self._changed_outside(blocks, prev, roi, raw.shape):
            dets = self.pipeline.detect(image, roi)
            spent = dets.ms
            i = dets.largest
            if i is None or _touches_edge(dets.boxes[i], roi, raw.shape):
                dets = None  # lost, or leaving the region: search the whole frame
        self.last_full = dets is None
        if dets is None:
            dets = self.pipeline.detect(image)
            self._since_full = 0
            self.full_detections += 1
        else:
            self._since_full += 1
        if spent and self.last_full:  # the region's search counts too
            dets = dets._replace(ms=dets.ms + spent)
        result = self.pipeline.analyze(image, detections=dets, **kw)
        result.timings_ms["total"] += dets.ms
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
