"""The face detector's gate: recall of the float model's faces and mean IoU of the matched boxes."""

from __future__ import annotations

import numpy as np

from export.gates.base import FACE_MATCH_IOU, RAW_CHECK_INPUTS, Gate, _load
from export.gates.roles import Role, face_detector_input, face_detector_size
from export.variants import ExportStepError


__all__ = ["match_faces", "FaceDetectorGate"]


def match_faces(ref_xyxy: np.ndarray, got_xyxy: np.ndarray, iou: float = FACE_MATCH_IOU) -> np.ndarray:
    """Greedy one-to-one matching by IoU: for each reference box, the IoU of its match (0 if none)."""
    from edge.vision.nms import box_iou

    out = np.zeros(len(ref_xyxy), np.float64)
    if not len(ref_xyxy) or not len(got_xyxy):
        return out
    m = box_iou(np.asarray(ref_xyxy, np.float32), np.asarray(got_xyxy, np.float32))
    used: set[int] = set()
    for i in np.argsort(-m.max(1)):
        for j in np.argsort(-m[i]):
            if j not in used and m[i, j] >= iou:
                used.add(int(j))
                out[i] = m[i, j]
                break
    return out


class FaceDetectorGate(Gate):
    """Recall of the float model's faces and mean IoU of the matched boxes."""

    role = Role.FACE_DETECTOR

    def _measure(self, path, card, backend):
        from edge.vision.face_detectors import create_face_detector

        from export.quant.calibration import read_image

        t = self.card.thresholds
        score = 0.6 if t.score is None else float(t.score)
        nms = 0.3 if t.nms_iou is None else float(t.nms_iou)
        boxes, raw = [], []
        with _load(path, backend, self.threads) as eng:  # a free-size variant: fitted as the fixed graph
            det = create_face_detector(str(path), engine=eng, kind="yunet", score_threshold=score, nms_threshold=nms,
                                       input_size=face_detector_size(card))
            for i, f in enumerate(self.data.evaluation):
                img = read_image(f, self.card.name)
                if i < RAW_CHECK_INPUTS:
                    raw.append(eng.run({eng.inputs[0].name: face_detector_input(img, card)}))
                boxes.append(np.asarray(det.detect(img).xyxy, np.float32))
        return {"boxes": boxes, "raw": raw}

    def _compare(self, ref, got):
        ious = [match_faces(a, b) for a, b in zip(ref["boxes"], got["boxes"])]
        n_ref = sum(len(a) for a in ref["boxes"])
        n_got = sum(len(b) for b in got["boxes"])
        matched = np.concatenate([x[x > 0] for x in ious]) if ious else np.zeros(0)
        if n_ref == 0:
            raise ExportStepError(self.card.name, "gate", "the float face detector finds no face in the evaluation "
                                                          "images: nothing to compare")
        m = {"images": len(ref["boxes"]), "faces_float": n_ref, "faces": n_got,
             "recall": float(len(matched) / n_ref), "precision": float(len(matched) / n_got) if n_got else 0.0,
             "mean_iou": float(matched.mean()) if len(matched) else 0.0}
        fails = []
        if m["recall"] < self.limits.min_face_recall:
            fails.append(f"finds {m['recall']:.3f} of the float model's faces (< {self.limits.min_face_recall})")
        if m["mean_iou"] < self.limits.min_face_iou:
            fails.append(f"mean IoU with the float boxes {m['mean_iou']:.3f} (< {self.limits.min_face_iou})")
        return m, fails, {}
