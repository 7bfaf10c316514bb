"""COCO-style box mAP, computed the way pycocotools' ``COCOeval`` computes it, in pure numpy.

What is reproduced (``COCOeval`` with ``iouType="bbox"``, area range ``all``, ``maxDets=100``):

- IoU thresholds 0.50:0.05:0.95, recall thresholds 0:0.01:1 (101-point interpolation);
- per image and class, detections sorted by score (stable) and cut to ``max_dets``; each is
  matched greedily, best score first, to the unmatched ground truth of highest IoU that is
  ≥ the threshold (on equal IoU the later ground truth wins, as in ``evaluateImg``);
- per class, detections of all images are pooled in image order, sorted by score (stable),
  precision made monotone from the right, then read at each recall threshold
  (``searchsorted(..., side="left")``); a class with no ground truth is left out of the mean
  (its precision is ``-1`` in pycocotools), a class with ground truth but no detection scores 0;
- boxes are ``x1, y1, x2, y2`` and IoU has no ``+1`` (``maskUtils.iou`` on ``xywh``).

Not reproduced: crowd regions (YOLO labels have none) and the small/medium/large breakdown.

Example:
    >>> ev = CocoEvaluator(["cat", "dog"])
    >>> ev.add(np.array([[0, 0, 10, 10]]), [0], np.array([[0, 0, 10, 10]]), [0.9], [0])
    >>> ev.evaluate().map50_95
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from edge.vision.nms import box_iou

__all__ = ["CocoEvaluator", "CocoResult", "IOU_THRESHOLDS", "RECALL_THRESHOLDS", "MAX_DETS"]

#: pycocotools ``Params.iouThrs``: 0.50, 0.55, …, 0.95 (built with linspace, as there).
IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: pycocotools ``Params.recThrs``: 0.00, 0.01, …, 1.00.
RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
#: pycocotools' last ``maxDets`` (the one the headline AP uses).
MAX_DETS = 100
#: The matching threshold is capped just below 1 (``min(t, 1 - 1e-10)`` in ``evaluateImg``).
_IOU_CAP = 1 - 1e-10


@dataclass(frozen=True)
class CocoResult:
    """Evaluation figures.

    Attributes:
        map50_95: mean AP over IoU 0.50:0.95 and the classes with ground truth.
        map50: the same at IoU 0.50 only.
        map75: the same at IoU 0.75 only.
        per_class_ap: AP50-95 by class name, for classes with ground truth.
        per_class_ap50: AP50 by class name.
        num_images: images evaluated.
        num_ground_truth: ground-truth boxes by class name.
        num_detections: detections counted (after the per-image, per-class ``max_dets`` cut).
    """

    map50_95: float
    map50: float
    map75: float
    per_class_ap: dict[str, float]
    per_class_ap50: dict[str, float]
    num_images: int
    num_ground_truth: dict[str, int] = field(default_factory=dict)
    num_detections: int = 0

    def to_dict(self, digits: int = 4) -> dict:
        r = lambda v: round(float(v), digits)  # noqa: E731
        return {"mAP50_95": r(self.map50_95), "mAP50": r(self.map50), "mAP75": r(self.map75),
                "per_class_AP": {k: r(v) for k, v in self.per_class_ap.items()},
                "per_class_AP50": {k: r(v) for k, v in self.per_class_ap50.items()},
                "images": self.num_images, "ground_truth": dict(self.num_ground_truth),
                "detections": self.num_detections}


def _rows(a, n_cols: int | None, name: str, dtype) -> np.ndarray:
    x = np.asarray(a, dtype=dtype)
    if n_cols is None:
        x = x.reshape(-1)
    elif x.size == 0:
        x = x.reshape(0, n_cols)
    elif x.ndim != 2 or x.shape[1] != n_cols:
        raise ValueError(f"{name} must have shape N×{n_cols}, got {x.shape}")
    return x


class CocoEvaluator:
    """Accumulate per-image matches, then compute COCO mAP.

    Images are matched as they are added (memory stays proportional to the detections kept),
    so an evaluation can stream through a folder.

    Args:
        class_names: names of the evaluated classes; class ids index this list.
        iou_thresholds: IoU thresholds (default 0.50:0.95).
        max_dets: detections per image *and class* kept, best first (pycocotools' cut).
    """

    def __init__(self, class_names: Sequence[str], *, iou_thresholds: np.ndarray = IOU_THRESHOLDS,
                 max_dets: int = MAX_DETS) -> None:
        self.class_names = list(class_names)
        self.iou_thresholds = np.asarray(iou_thresholds, np.float64)
        self.max_dets = int(max_dets)
        n = len(self.class_names)
        self._n_gt = np.zeros(n, np.int64)
        self._scores: list[list[np.ndarray]] = [[] for _ in range(n)]
        self._tp: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.num_images = 0

    def add(self, gt_xyxy, gt_class, det_xyxy, det_score, det_class) -> None:
        """Add one image's ground truth and detections (pixels, ``x1, y1, x2, y2``).

        Raises:
            ValueError: shapes that do not agree, or a class id outside ``class_names``.
        """
        gb = _rows(gt_xyxy, 4, "gt_xyxy", np.float64)
        gc = _rows(gt_class, None, "gt_class", np.int64)
        db = _rows(det_xyxy, 4, "det_xyxy", np.float64)
        ds = _rows(det_score, None, "det_score", np.float64)
        dc = _rows(det_class, None, "det_class", np.int64)
        if gc.shape[0] != gb.shape[0] or ds.shape[0] != db.shape[0] or dc.shape[0] != db.shape[0]:
            raise ValueError(f"lengths disagree: gt {gb.shape[0]} boxes / {gc.shape[0]} classes, "
                             f"detections {db.shape[0]} boxes / {ds.shape[0]} scores / {dc.shape[0]} classes")
        n = len(self.class_names)
        for name, c in (("gt_class", gc), ("det_class", dc)):
            if c.size and (c.min() < 0 or c.max() >= n):
                raise ValueError(f"{name} holds ids outside 0..{n - 1}: {sorted(set(c[(c < 0) | (c >= n)].tolist()))}")
        self.num_images += 1
        np.add.at(self._n_gt, gc, 1)
        for k in np.union1d(gc, dc):
            d_idx = np.flatnonzero(dc == k)
            if d_idx.size == 0:
                continue
            order = np.argsort(-ds[d_idx], kind="mergesort")[: self.max_dets]
            d_idx = d_idx[order]
            g_idx = np.flatnonzero(gc == k)
            self._scores[k].append(ds[d_idx])
            self._tp[k].append(self._match(db[d_idx], gb[g_idx]))

    def _match(self, dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
        """``T×D`` boolean: detection ``d`` (score order) is a true positive at threshold ``t``."""
        n_t, n_d = self.iou_thresholds.size, dets.shape[0]
        tp = np.zeros((n_t, n_d), bool)
        if gts.shape[0] == 0:
            return tp
        ious = box_iou(dets, gts)
        # Reversed ground-truth order so argmax's first-of-ties is pycocotools' last-of-ties.
        ious_rev = ious[:, ::-1]
        thr = np.minimum(self.iou_thresholds, _IOU_CAP)[:, None]
        taken = np.zeros((n_t, gts.shape[0]), bool)
        t_all = np.arange(n_t)
        for d in range(n_d):
            ok = (ious_rev[d][None, :] >= thr) & ~taken
            cand = np.where(ok, ious_rev[d][None, :], -1.0)
            best = cand.argmax(axis=1)
            hit = ok[t_all, best]
            tp[hit, d] = True
            taken[t_all[hit], best[hit]] = True
        return tp

    def _precision(self, k: int) -> np.ndarray | None:
        """``T×R`` interpolated precision of class ``k``; None when it has no ground truth."""
        n_gt = int(self._n_gt[k])
        if n_gt == 0:
            return None
        n_t, n_r = self.iou_thresholds.size, RECALL_THRESHOLDS.size
        q = np.zeros((n_t, n_r))
        if not self._scores[k]:
            return q
        scores = np.concatenate(self._scores[k])
        order = np.argsort(-scores, kind="mergesort")
        tp = np.concatenate(self._tp[k], axis=1)[:, order]
        tps = np.cumsum(tp, axis=1, dtype=np.float64)
        fps = np.cumsum(~tp, axis=1, dtype=np.float64)
        rc = tps / n_gt
        pr = tps / (tps + fps + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone from the right
        n_d = tp.shape[1]
        for t in range(n_t):
            inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
            valid = inds < n_d
            q[t, valid] = pr[t, inds[valid]]
        return q

    def evaluate(self) -> CocoResult:
        """mAP50-95, mAP50, mAP75 and per-class AP over everything added so far."""
        per_ap, per_ap50, precisions = {}, {}, []
        t50 = int(np.argmin(np.abs(self.iou_thresholds - 0.5)))
        t75 = int(np.argmin(np.abs(self.iou_thresholds - 0.75)))
        for k, name in enumerate(self.class_names):
            q = self._precision(k)
            if q is None:
                continue
            precisions.append(q)
            per_ap[name] = float(q.mean())
            per_ap50[name] = float(q[t50].mean())
        if precisions:
            stack = np.stack(precisions)  # K×T×R
            m, m50, m75 = float(stack.mean()), float(stack[:, t50].mean()), float(stack[:, t75].mean())
        else:
            m = m50 = m75 = 0.0
        n_gt = {self.class_names[k]: int(c) for k, c in enumerate(self._n_gt) if c}
        n_det = int(sum(s.size for lst in self._scores for s in lst))
        return CocoResult(m, m50, m75, per_ap, per_ap50, self.num_images, n_gt, n_det)
