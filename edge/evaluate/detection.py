"""Evaluate a :class:`~edge.detect.detector.Detector` on a YOLO-format folder (COCO mAP).

The model's label space and the dataset's are joined by name when the dataset names its classes
(``classes.txt`` or ``data.yaml``); otherwise dataset class ``k`` is taken to be the model's
``k``-th label once placeholder lines (the ``"n/a"`` gaps of the 91-id COCO list) are dropped.
That makes the contiguous 80-class COCO ids of coco128 line up both with YOLOX (80 labels) and
with the TFLite SSD (90 labels with gaps).

Example:
    >>> with create_detector("yolox_nano_416", score_threshold=0.001, nms_iou=0.65) as det:  # doctest: +SKIP
    ...     report = evaluate_detector(det, YoloDataset("coco128"))
    >>> round(report.result.map50_95, 3)                                                     # doctest: +SKIP
    0.339
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge.detect.detector import PLACEHOLDER_LABELS
from edge.errors import DatasetError
from edge.evaluate.coco import CocoEvaluator, CocoResult
from edge.evaluate.yolo_dataset import YoloDataset
from edge.imageio import load_image

__all__ = ["ClassMap", "class_map", "evaluate_detector", "DetectionReport", "EVAL_SCORE", "EVAL_NMS_IOU"]

#: Score threshold for mAP: keep nearly everything, so the precision-recall curve is complete
#: (YOLOX and Ultralytics evaluate at 0.001).
EVAL_SCORE = 0.001
#: NMS IoU for mAP. YOLOX's own COCO evaluation uses 0.65 (Ultralytics val 0.7); the cards'
#: 0.45 suits display but costs YOLOX-Nano ~0.007 mAP50-95 on coco128.
EVAL_NMS_IOU = 0.65


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


@dataclass(frozen=True)
class ClassMap:
    """Model class id → dataset class id (``-1``: not evaluated) and the dataset's class names."""

    model_to_data: np.ndarray
    names: list[str]

    def apply(self, class_id: np.ndarray) -> np.ndarray:
        c = np.asarray(class_id, np.int64)
        out = np.full(c.shape, -1, np.int64)
        inside = (c >= 0) & (c < self.model_to_data.size)
        out[inside] = self.model_to_data[c[inside]]
        return out


def class_map(model_labels: Sequence[str], dataset_names: Sequence[str] | None) -> ClassMap:
    """Join the model's labels to the dataset's classes (see the module docstring).

    Raises:
        DatasetError: the dataset names classes none of which the model knows.
    """
    labels = list(model_labels)
    if dataset_names is None:
        real = [i for i, n in enumerate(labels) if n.strip().lower() not in PLACEHOLDER_LABELS]
        m = np.full(len(labels), -1, np.int64)
        m[real] = np.arange(len(real))
        return ClassMap(m, [labels[i] for i in real])
    index = {_norm(n): k for k, n in enumerate(dataset_names)}
    m = np.asarray([index.get(_norm(n), -1) for n in labels], np.int64)
    if labels and not (m >= 0).any():
        raise DatasetError(f"none of the dataset's classes ({', '.join(list(dataset_names)[:5])}, …) "
                           f"is among the model's labels ({', '.join(labels[:5])}, …)")
    return ClassMap(m, list(dataset_names))


@dataclass(frozen=True)
class DetectionReport:
    """An evaluation: the COCO figures plus what produced them."""

    result: CocoResult
    elapsed_s: float
    mean_ms: dict[str, float]
    skipped_labels: int

    def to_dict(self) -> dict:
        d = self.result.to_dict()
        d["elapsed_s"] = round(self.elapsed_s, 3)
        d["mean_ms"] = {k: round(v, 3) for k, v in self.mean_ms.items()}
        if self.skipped_labels:
            d["labels_outside_model_classes"] = self.skipped_labels
        return d


def evaluate_detector(detector, dataset: YoloDataset, *,
                      progress: Callable[[int, int], None] | None = None) -> DetectionReport:
    """Run ``detector`` over ``dataset`` and compute COCO mAP50-95, mAP50 and per-class AP.

    Args:
        detector: a :class:`~edge.detect.detector.Detector` (its score threshold, NMS IoU and
            ``max_detections`` are used as set; mAP wants a low threshold, see :data:`EVAL_SCORE`).
        dataset: the labelled images.
        progress: called with ``(done, total)`` after each image.

    Raises:
        DatasetError: a ground-truth class id the class map cannot place.
    """
    labels = detector.labels or [str(i) for i in range(_max_class(dataset) + 1)]
    cmap = class_map(labels, dataset.names)
    evaluator = CocoEvaluator(cmap.names)
    n_classes = len(cmap.names)
    sums = {"preprocess": 0.0, "inference": 0.0, "decode": 0.0}
    skipped = 0
    t0 = time.perf_counter()
    for i, item in enumerate(dataset):
        image = load_image(item.image_path)
        h, w = image.shape[:2]
        gt_c = item.class_id
        if gt_c.size and gt_c.max() >= n_classes:
            if dataset.names is not None:
                raise DatasetError(f"{dataset.label_path(item.image_path)}: class {int(gt_c.max())} is outside "
                                   f"the dataset's {n_classes} names")
            skipped += int((gt_c >= n_classes).sum())
        keep_gt = gt_c < n_classes
        dets = detector.detect(image)
        for k in sums:
            sums[k] += detector.timings[k]
        dc = cmap.apply(dets.class_id)
        keep = dc >= 0
        evaluator.add(item.xyxy(w, h)[keep_gt], gt_c[keep_gt], dets.xyxy[keep], dets.score[keep], dc[keep])
        if progress is not None:
            progress(i + 1, len(dataset))
    elapsed = time.perf_counter() - t0
    n = max(1, len(dataset))
    return DetectionReport(evaluator.evaluate(), elapsed, {k: v / n for k, v in sums.items()}, skipped)


def _max_class(dataset: YoloDataset) -> int:
    return max((int(item.class_id.max()) for item in dataset if item.class_id.size), default=0)
