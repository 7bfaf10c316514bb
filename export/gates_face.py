"""Accuracy gates of the face roles: face detector, face embedder, liveness (see :mod:`export.gates`).

Face crops (aligned LFW crops, enlarged liveness crops) are made once per gate with the float
YuNet and shared by the float model and every variant, so a variant is judged on its own
arithmetic, not on a different crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.gates import EMBEDDER_FARS, FACE_MATCH_IOU, RAW_CHECK_INPUTS, Gate, _load
from export.roles import LFW_DIR, LIVENESS_SAMPLES, Role, default_face_detector, face_detector_input
from export.variants import ExportStepError

__all__ = ["FaceDetectorGate", "FaceEmbedderGate", "LivenessGate", "match_faces"]


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

        from export.calibration import read_image

        t = self.card.thresholds
        score = 0.6 if t.score is None else float(t.score)
        nms = 0.3 if t.nms_iou is None else float(t.nms_iou)
        boxes, raw = [], []
        with _load(path, backend, self.threads) as eng:
            det = create_face_detector(str(path), engine=eng, kind="yunet", score_threshold=score, nms_threshold=nms)
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


class FaceEmbedderGate(Gate):
    """ROC AUC, TAR at FAR, mean cosine float vs variant, and a re-derived match threshold.

    The pairs are every pair of the split's LFW images, or the user's pairs of the split
    (``RoleData.pairs``, :mod:`export.face_pairs`).
    """

    role = Role.FACE_EMBEDDER

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._crops: np.ndarray | None = None
        self._pairs: list | None = None
        self._no_face = 0

    def _lfw(self):
        if self._crops is None and self.data.pairs:
            self._crops, self._pairs = self._user_pairs()
        if self._crops is None:
            from edge.face.datasets import align_lfw_crop, lfw_pairs

            from export.calibration import read_image

            root = self.data.evaluation[0].parent.parent if self.data.evaluation else Path(LFW_DIR)
            files, _ = lfw_pairs(root)
            if self.data.evaluation:  # this split's people only (selection or report)
                wanted = {Path(f).resolve() for f in self.data.evaluation}
                files = [f for f in files if f.resolve() in wanted]
            who = [f.parent.name for f in files]
            pairs = [(a, b, who[a] == who[b]) for a in range(len(files)) for b in range(a + 1, len(files))]
            det = default_face_detector(self.threads)
            try:
                self._crops = np.stack([align_lfw_crop(read_image(f, self.card.name), det)[0] for f in files])
            finally:
                det.close()
            self._pairs = pairs
        return self._crops, self._pairs

    def _user_pairs(self):
        """Aligned crops and index pairs of the user's pairs within this split (``RoleData.pairs``).

        Images in which the float face detector finds no face are left out with their pairs (the
        count is in the metrics); a split left without genuine or impostor pairs cannot be gated.
        """
        from export.calibration import face_crops

        split = set(self.data.evaluation)
        wanted = [(a, b, s) for a, b, s in self.data.pairs if a in split and b in split]
        files = sorted({f for a, b, _ in wanted for f in (a, b)})
        det = default_face_detector(self.threads)
        try:
            crops, used = face_crops(files, det, "aligned", model_name=self.card.name)
        finally:
            det.close()
        index = {f: i for i, f in enumerate(used)}
        pairs = [(index[a], index[b], s) for a, b, s in wanted if a in index and b in index]
        self._no_face = len(files) - len(used)
        genuine = sum(s for _, _, s in pairs)
        if not genuine or genuine == len(pairs):
            raise ExportStepError(self.card.name, "gate", f"the user's pairs of this split keep {genuine} genuine and "
                                  f"{len(pairs) - genuine} impostor pair(s) after {self._no_face} image(s) without a "
                                  "detected face were left out: both kinds are needed")
        return np.stack(crops), pairs

    def _measure(self, path, card, backend):
        from edge.face.embedder import FaceEmbedder

        crops, _ = self._lfw()
        with _load(path, backend, self.threads) as eng:
            emb = FaceEmbedder(eng, card)
            feats = emb.raw_features(crops)
            raw = [{emb.output_name: f[None]} for f in feats[:RAW_CHECK_INPUTS]]
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        unit = np.where(norms > 0, feats / np.maximum(norms, 1e-12), 0.0)
        return {"unit": unit, "raw": raw}

    def _pairs_name(self) -> str:
        return "the user's face pairs" if self.data.pairs else "LFW aligned pairs"

    def rates_at(self, path, threshold: float, *, card=None, backend: str | None = None) -> dict:
        """FAR and TAR of the variant at ``path`` on this gate's pairs at a *given* threshold.

        Used to check a threshold derived on the selection pairs against the report pairs
        (other people): the FAR here is the one a user gets.
        """
        _, pairs = self._lfw()
        unit = self._measure(Path(path), card or self.card, backend)["unit"]
        i = np.array([p[0] for p in pairs])
        j = np.array([p[1] for p in pairs])
        same = np.array([p[2] for p in pairs], bool)
        scores = np.sum(unit[i] * unit[j], axis=1)
        accept = scores >= threshold
        return {"threshold": float(threshold), "far": float(accept[~same].mean()), "tar": float(accept[same].mean()),
                "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum()),
                "far_resolution": 1.0 / max(1, int((~same).sum())), "tar_resolution": 1.0 / max(1, int(same.sum()))}

    def _compare(self, ref, got):
        from edge.face.verification import roc_auc, tar_at_far

        _, pairs = self._lfw()
        i = np.array([p[0] for p in pairs])
        j = np.array([p[1] for p in pairs])
        labels = np.array([p[2] for p in pairs], bool)

        def figures(unit):
            scores = np.sum(unit[i] * unit[j], axis=1).astype(np.float64)
            fars = sorted(set(EMBEDDER_FARS) | {self.limits.target_far}, reverse=True)
            tars = {f: tar_at_far(scores, labels, f) for f in fars}
            return roc_auc(scores, labels), tars

        auc_f, tars_f = figures(ref["unit"])
        auc, tars = figures(got["unit"])
        cos = float(np.mean(np.sum(ref["unit"] * got["unit"], axis=1)))
        key = lambda f: f"{f:g}"  # noqa: E731 - the cards' key format: "0.01", "0.001"
        m = {"pairs": int(len(pairs)), "genuine_pairs": int(labels.sum()), "impostor_pairs": int((~labels).sum()),
             "roc_auc_float": float(auc_f), "roc_auc": float(auc), "mean_cosine_vs_float": cos,
             "tar_at_far_float": {key(f): t for f, (t, _) in tars_f.items()},
             "tar_at_far": {key(f): t for f, (t, _) in tars.items()},
             "threshold_at_target_far_float": tars_f[self.limits.target_far][1],
             "threshold_at_target_far": tars[self.limits.target_far][1],
             "far_resolution": 1.0 / max(1, int((~labels).sum()))}
        thresholds = {"cosine_at_far": {key(f): round(t, 4) for f, (_, t) in tars.items()},
                      "tar_at_far": {key(f): round(v, 4) for f, (v, _) in tars.items()},
                      "roc_auc": round(float(auc), 4),
                      "derived_on": f"{self._pairs_name()} ({int(labels.sum())} genuine / {int((~labels).sum())} "
                                    f"impostor; FAR resolution 1/{int((~labels).sum())}), re-derived for this variant "
                                    "by export.gates_face",
                      "pairs": int(len(pairs)), "genuine_pairs": int(labels.sum()),
                      "impostor_pairs": int((~labels).sum())}
        if self.data.pairs:
            m["images_without_face"] = self._no_face
        fails = []
        if auc_f - auc > self.limits.max_auc_drop:
            fails.append(f"ROC AUC {auc:.4f} vs float {auc_f:.4f} (drop > {self.limits.max_auc_drop})")
        if cos < self.limits.min_embedding_cosine:
            fails.append(f"mean cosine with the float embeddings {cos:.4f} (< {self.limits.min_embedding_cosine})")
        return m, fails, thresholds


class LivenessGate(Gate):
    """Live/spoof decisions: agree with float, and correct on the labelled antispoof samples."""

    role = Role.LIVENESS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._faces: list | None = None

    def _crops(self):
        if self._faces is None:
            from export.calibration import largest_face, read_image

            if self.card.face_crop is None:
                raise ExportStepError(self.card.name, "gate", "liveness card has no face_crop.crop_scale")
            scale = self.card.face_crop.crop_scale
            from edge.face.liveness import scaled_crop

            det = default_face_detector(self.threads)
            out = []
            try:
                for f in self.data.evaluation:
                    face = largest_face(read_image(f, self.card.name), det)
                    if face is not None:
                        out.append((f, scaled_crop(read_image(f, self.card.name), face.xyxy, float(scale))))
            finally:
                det.close()
            if not out:
                raise ExportStepError(self.card.name, "gate", "no face found in the liveness evaluation images")
            self._faces = out
        return self._faces

    def _measure(self, path, card, backend):
        from edge.preprocess import prepare

        from edge.face.liveness import LIVE_CLASS

        probs, raw = [], []
        with _load(path, backend, self.threads) as eng:
            for k, (_, crop) in enumerate(self._crops()):
                x, _ = prepare(crop, card.inputs[0])
                y = eng.run({eng.inputs[0].name: x})
                if k < RAW_CHECK_INPUTS:
                    raw.append(y)
                z = np.asarray(next(iter(y.values())), np.float64).reshape(-1)
                p = np.exp(z - z.max())
                probs.append(float((p / p.sum())[LIVE_CLASS]))
        return {"p_live": np.asarray(probs), "raw": raw}

    def _compare(self, ref, got):
        thr = self.limits.liveness_threshold
        files = [f for f, _ in self._crops()]
        da, db = ref["p_live"] >= thr, got["p_live"] >= thr
        lab = [(k, LIVENESS_SAMPLES[f.name]) for k, f in enumerate(files) if f.name in LIVENESS_SAMPLES]

        def acc(d):
            return float(np.mean([d[k] == live for k, live in lab])) if lab else None

        m = {"faces": len(files), "agreement": float(np.mean(da == db)),
             "max_abs_p_live_diff": float(np.abs(ref["p_live"] - got["p_live"]).max()),
             "labelled": len(lab), "accuracy_float": acc(da), "accuracy": acc(db),
             "p_live": {f.name: round(float(p), 4) for f, p in zip(files, got["p_live"])}}
        fails = []
        if m["agreement"] < self.limits.min_liveness_agreement:
            fails.append(f"decisions agree with float on {m['agreement']:.3f} of the faces "
                         f"(< {self.limits.min_liveness_agreement})")
        if m["accuracy"] is not None and m["accuracy"] < m["accuracy_float"]:
            fails.append(f"correct on {m['accuracy']:.3f} of the labelled live/spoof samples, float on "
                         f"{m['accuracy_float']:.3f}")
        return m, fails, {}
