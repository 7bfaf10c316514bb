"""The liveness gate: live/spoof decisions agree with the float model's and are no less often correct.

Enlarged face crops are made once per gate with the float YuNet and shared by the float model and
every variant, so a variant is judged on its own arithmetic, not on a different crop."""

from __future__ import annotations

import numpy as np

from export.gates.base import RAW_CHECK_INPUTS, Gate, _load
from export.gates.roles import LIVENESS_SAMPLES, Role, default_face_detector
from export.variants import ExportStepError


__all__ = ["LivenessGate"]


class LivenessGate(Gate):
    """Live/spoof decisions: agree with float, and correct on the labelled antispoof samples."""

    role = Role.LIVENESS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._faces: list | None = None

    def _crops(self):
        if self._faces is None:
            from export.quant.calibration import largest_face, read_image

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
