"""The detector's gate: COCO mAP50-95 and mAP50 on the coco128 evaluation boxes, float vs variant."""

from __future__ import annotations

from pathlib import Path

from export.gates.base import RAW_CHECK_INPUTS, Gate, _load
from export.gates.roles import Role


__all__ = ["DetectorGate"]


class DetectorGate(Gate):
    """COCO mAP50-95 and mAP50 on the evaluation boxes, float vs variant."""

    role = Role.DETECTOR

    def _measure(self, path, card, backend):
        from edge.detect.detector import Detector
        from edge.evaluate.coco import CocoEvaluator
        from edge.evaluate.detection import EVAL_NMS_IOU, EVAL_SCORE, class_map
        from edge.evaluate.yolo_dataset import YoloDataset
        from edge.registry import load_labels

        from export.gates.roles import COCO_DIR
        from export.quant.calibration import read_image

        root = self.data.evaluation[0].parent.parent if self.data.evaluation else None
        ds = YoloDataset(root if root is not None else Path(COCO_DIR))
        wanted = set(self.data.evaluation)
        labels = load_labels(self.card)
        raw = []
        with _load(path, backend, self.threads) as eng:
            det = Detector(eng, card, score_threshold=EVAL_SCORE, nms_iou=EVAL_NMS_IOU, labels=labels)
            cmap = class_map(det.labels, ds.names)
            ev = CocoEvaluator(cmap.names)
            for item in ds:
                if item.image_path not in wanted:
                    continue
                img = read_image(item.image_path, self.card.name)
                h, w = img.shape[:2]
                prepared = det.preprocess(img)
                outputs = det.infer(prepared)
                if len(raw) < RAW_CHECK_INPUTS:
                    raw.append(outputs)
                d = det.postprocess(outputs, prepared)
                dc = cmap.apply(d.class_id)
                keep = dc >= 0
                ev.add(item.xyxy(w, h), item.class_id, d.xyxy[keep], d.score[keep], dc[keep])
        r = ev.evaluate()
        return {"map50_95": float(r.map50_95), "map50": float(r.map50), "images": int(r.num_images), "raw": raw}

    def _compare(self, ref, got):
        m = {"images": got["images"], "map50_95_float": ref["map50_95"], "map50_95": got["map50_95"],
             "map50_float": ref["map50"], "map50": got["map50"]}
        fails = []
        if ref["map50_95"] - got["map50_95"] > self.limits.max_map_drop:
            fails.append(f"mAP50-95 {got['map50_95']:.4f} vs float {ref['map50_95']:.4f} "
                         f"(drop > {self.limits.max_map_drop})")
        if ref["map50"] - got["map50"] > self.limits.max_map50_drop:
            fails.append(f"mAP50 {got['map50']:.4f} vs float {ref['map50']:.4f} (drop > {self.limits.max_map50_drop})")
        return m, fails, {}
