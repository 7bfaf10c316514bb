"""Accuracy evaluation on labelled data: COCO-style mAP (:mod:`edge.evaluate.coco`), YOLO-format
folders (:mod:`edge.evaluate.yolo_dataset`) and detector evaluation (:mod:`edge.evaluate.detection`).
"""

from edge.evaluate.coco import CocoEvaluator, CocoResult
from edge.evaluate.detection import DetectionReport, class_map, evaluate_detector
from edge.evaluate.yolo_dataset import YoloDataset

__all__ = ["CocoEvaluator", "CocoResult", "YoloDataset", "evaluate_detector", "class_map", "DetectionReport"]
