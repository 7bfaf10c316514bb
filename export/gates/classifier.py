"""The classifier's gate: top-1 agreement, top-5 overlap and labelled top-1 / top-5, float vs variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.gates.base import RAW_CHECK_INPUTS, Gate, _load
from export.gates.roles import Role
from export.variants import ExportStepError


__all__ = ["ClassifierGate"]


TOP_K = 5


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


class ClassifierGate(Gate):
    """Top-1 agreement, top-5 overlap and labelled top-1 / top-5 (see the module docstring)."""

    role = Role.CLASSIFIER

    def _targets(self, num_outputs: int, labels) -> np.ndarray:
        """Correct output index per evaluation image (-1: unlabelled), from ``data.labelled``."""
        t = np.full(len(self.data.evaluation), -1, np.int64)
        if self.data.labelled is None or (num_outputs not in (1000, 1001) and not labels):
            return t  # no labels, or a model that is not an ImageNet classifier: agreement only
        from edge.evaluate.classification import LabelledDataError, load_labelled

        try:
            by_path = {it.path.resolve(): it.target for it in load_labelled(self.data.labelled, labels, num_outputs)}
        except LabelledDataError as e:
            raise ExportStepError(self.card.name, "gate", str(e)) from e
        for i, f in enumerate(self.data.evaluation):
            t[i] = by_path.get(Path(f).resolve(), -1)
        return t

    def _measure(self, path, card, backend):
        from edge.preprocess import prepare
        from edge.registry import load_labels

        from export.quant.calibration import read_image

        labels = load_labels(self.card) or []
        scores, raw = [], []
        with _load(path, backend, self.threads) as eng:
            name, out = eng.inputs[0].name, eng.outputs[0].name
            for i, f in enumerate(self.data.evaluation):
                x, _ = prepare(read_image(f, self.card.name), card.inputs[0])
                y = eng.run({name: x})
                if i < RAW_CHECK_INPUTS:
                    raw.append(y)
                scores.append(np.asarray(y[out], np.float32).reshape(-1))
        s = np.stack(scores)
        return {"scores": s, "raw": raw, "targets": self._targets(s.shape[1], labels)}

    def _compare(self, ref, got):
        from edge.evaluate.classification import evaluate_scores

        a, b = ref["scores"], got["scores"]
        top1_a, top1_b = a.argmax(1), b.argmax(1)
        top5_a, top5_b = np.argsort(-a, 1)[:, :TOP_K], np.argsort(-b, 1)[:, :TOP_K]
        overlap = np.mean([len(set(x) & set(y)) / TOP_K for x, y in zip(top5_a, top5_b)])
        t = ref["targets"]
        lab = t >= 0
        fa = evaluate_scores(a[lab], t[lab]) if lab.any() else None
        fb = evaluate_scores(b[lab], t[lab]) if lab.any() else None
        m = {"images": int(len(a)), "top1_agreement": float(np.mean(top1_a == top1_b)),
             "top5_overlap": float(overlap), "labelled_images": int(lab.sum()),
             "labelled_top1_float": fa.top1 if fa else None, "labelled_top1": fb.top1 if fb else None,
             "labelled_top5_float": fa.top5 if fa else None, "labelled_top5": fb.top5 if fb else None,
             "resolution": 1.0 / int(lab.sum()) if lab.any() else None,
             "logit_cosine": float(np.mean([_cos(x, y) for x, y in zip(a, b)]))}
        fails = []
        if m["top1_agreement"] < self.limits.min_top1_agreement:
            fails.append(f"top-1 agreement with float {m['top1_agreement']:.3f} < {self.limits.min_top1_agreement}")
        if m["labelled_top1"] is not None and m["labelled_top1_float"] - m["labelled_top1"] > self.limits.max_top1_drop:
            fails.append(f"labelled top-1 {m['labelled_top1']:.4f} vs float {m['labelled_top1_float']:.4f} "
                         f"(drop > {self.limits.max_top1_drop}; {m['labelled_images']} images)")
        return m, fails, {}
