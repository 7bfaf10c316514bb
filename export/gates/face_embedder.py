"""The face embedder's gate: ROC AUC, TAR at FAR and mean cosine on LFW pairs, float vs variant, and
the match threshold re-derived for the variant.

Aligned LFW crops are made once per gate with the float YuNet and shared by the float model and
every variant, so a variant is judged on its own arithmetic, not on a different crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.gates.base import EMBEDDER_FARS, RAW_CHECK_INPUTS, Gate, _load
from export.gates.roles import LFW_DIR, Role, default_face_detector
from export.variants import ExportStepError


__all__ = ["FaceEmbedderGate"]


class FaceEmbedderGate(Gate):
    """ROC AUC, TAR at FAR, mean cosine float vs variant, and a re-derived match threshold.

    The pairs are every pair of the split's LFW images, or the user's pairs of the split
    (``RoleData.pairs``, :mod:`export.gates.face_pairs`).
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

            from export.quant.calibration import read_image

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
        from export.quant.calibration import face_crops

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
                                    "by export.gates.face_embedder",
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
