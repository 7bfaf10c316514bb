"""Accuracy gates: each variant against its float model, per role, on held-out real images.

A gate measures the float model once (cached), then each variant on the same inputs, and
returns a :class:`GateResult` whose ``failures`` say which limit broke. Limits come from the
device profile (:class:`GateLimits.from_profile`). Every variant is loaded with
``edge.engines.load_engine`` (onnxruntime for ``.onnx``, LiteRT for ``.tflite``) and its raw
outputs are also compared with the float model's within the per-format tolerance of
:mod:`export.variants` (on the first :data:`RAW_CHECK_INPUTS` evaluation inputs): a converter
that produces numbers unrelated to its source fails there even if the metric looks lucky.

Roles and metrics (``export.gates.roles`` says which images):

- classifier: top-1 agreement with float, top-5 overlap, labelled top-1 / top-5 (``RoleData.labelled``);
- detector: COCO mAP50-95 / mAP50 on the coco128 evaluation boxes (``edge.evaluate.coco``);
- face detector: recall of the float model's faces (IoU >= 0.5) and mean IoU of the matches;
- face embedder: ROC AUC, TAR at FAR 1e-2 / 1e-3 on all LFW pairs, mean cosine float vs
  variant, and the match threshold *re-derived* at the profile's target FAR for this variant
  (``GateResult.card_thresholds`` goes into the variant's card: fp32's threshold is wrong for int8);
- liveness: live/spoof decisions agree with float and are no less often correct.

Example:
    >>> gate = make_gate("classifier", "m_fp32.onnx", card, GateLimits.from_profile(profile))  # doctest: +SKIP
    >>> gate.evaluate("m_int8.onnx").passed                                                     # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.cards import ModelCard
from edge.profile import DeviceProfile, Thresholds
from export.gates.roles import Role, RoleData, role_data
from export.variants import ExportStepError, check_agreement, target_for_file

__all__ = ["GateLimits", "GateResult", "Gate", "RAW_CHECK_INPUTS", "EMBEDDER_FARS", "FACE_MATCH_IOU", "GATE_SCORES",
           "summarize"]

#: Evaluation inputs on which raw outputs are compared with the per-format tolerance.
RAW_CHECK_INPUTS = 4
#: FARs at which the embedder's TAR is reported (the profile's target FAR is added).
EMBEDDER_FARS = (1e-2, 1e-3)
#: IoU at which a variant's face counts as the float model's face.
FACE_MATCH_IOU = 0.5
#: The figure each role's variants are ranked by (higher is better), e.g. to pick a calibration method.
GATE_SCORES = {
    "classifier": lambda m: m["top1_agreement"] + 0.1 * m["top5_overlap"],
    "detector": lambda m: m["map50_95"] + 0.1 * m["map50"],
    "face_detector": lambda m: m["recall"] + m["mean_iou"],
    "face_embedder": lambda m: m["roc_auc"] + m["mean_cosine_vs_float"],
    "liveness": lambda m: m["agreement"] - m["max_abs_p_live_diff"],
}


@dataclass(frozen=True)
class GateLimits:
    """Gate limits, normally from the device profile's ``[thresholds]`` table."""

    min_top1_agreement: float = 0.95
    max_top1_drop: float = 0.02
    max_map_drop: float = 0.03
    max_map50_drop: float = 0.03
    min_face_recall: float = 0.95
    min_face_iou: float = 0.85
    max_auc_drop: float = 0.005
    min_embedding_cosine: float = 0.98
    min_liveness_agreement: float = 1.0
    target_far: float = 1e-3
    liveness_threshold: float = 0.5

    @classmethod
    def from_thresholds(cls, th: Thresholds) -> "GateLimits":
        return cls(min_top1_agreement=th.min_top1_agreement, max_top1_drop=th.max_top1_drop,
                   max_map_drop=th.max_map_drop, max_map50_drop=th.max_map50_drop,
                   min_face_recall=th.min_face_recall, min_face_iou=th.min_face_iou, max_auc_drop=th.max_auc_drop,
                   min_embedding_cosine=th.min_embedding_cosine, min_liveness_agreement=th.min_liveness_agreement,
                   target_far=th.target_far, liveness_threshold=th.liveness)

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> "GateLimits":
        return cls.from_thresholds(profile.thresholds)


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate on one variant.

    Attributes:
        role / variant: what was gated (``variant`` is the file name unless given).
        metrics: float and variant figures (JSON-ready).
        passed: every limit held.
        failures: one sentence per broken limit.
        card_thresholds: thresholds to write into the variant's card (embedder: the match
            threshold re-derived at each FAR), empty otherwise.
    """

    role: str
    variant: str
    metrics: dict
    passed: bool
    failures: tuple[str, ...] = ()
    card_thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _load(path: Path, backend: str | None, threads: int | None):
    from edge.engines import load_engine

    return load_engine(path, backend=backend, threads=threads)


class Gate:
    """Base class: caches the float model's measurement, compares variants with it.

    Subclasses implement ``_measure(path, card, backend) -> dict`` (everything the comparison
    needs, including ``"raw"``: raw outputs of the first inputs) and
    ``_compare(ref, got) -> (metrics, failures, card_thresholds)``.

    Args:
        float_path: the float (fp32) model every variant is compared with.
        card: the float model's card (preprocessing, labels, crop scale).
        limits: gate limits.
        data: calibration/evaluation files (default: :func:`export.gates.roles.role_data`).
        data_dir: data directory for the default ``data``.
        threads: inference threads.
    """

    role: Role

    def __init__(self, float_path: str | Path, card: ModelCard, limits: GateLimits = GateLimits(), *,
                 data: RoleData | None = None, data_dir: str | Path | None = None, threads: int | None = 1) -> None:
        self.float_path, self.card, self.limits = Path(float_path), card, limits
        self.data = data or role_data(self.role, data_dir, model_name=card.name)
        self.data_dir = data_dir
        self.threads = threads
        self._ref: dict | None = None

    @property
    def reference(self) -> dict:
        if self._ref is None:
            self._ref = self._measure(self.float_path, self.card, None)
        return self._ref

    def score(self, metrics: dict) -> float:
        """One number ranking variants of this role (higher is better), from ``metrics``."""
        return GATE_SCORES[self.role.value](metrics)

    def float_result(self) -> GateResult:
        """The float model's own figures (it passes by definition)."""
        metrics, _, thresholds = self._compare(self.reference, self.reference)
        return GateResult(self.role.value, self.float_path.name, metrics, True, (), thresholds)

    def evaluate(self, path: str | Path, variant: str | None = None, *, card: ModelCard | None = None,
                 backend: str | None = None) -> GateResult:
        """Gate the variant at ``path``.

        Args:
            path: ``.onnx`` or ``.tflite`` file.
            variant: name in the result (default: the file name).
            card: the variant's card when its preprocessing differs (e.g. NHWC TFLite).
            backend: engine backend (default: by suffix).

        Raises:
            ExportStepError: the variant cannot be loaded or run (step ``gate``).
        """
        p = Path(path)
        t0 = time.perf_counter()
        try:
            got = self._measure(p, card or self.card, backend)
        except ExportStepError:
            raise
        except Exception as e:
            raise ExportStepError(self.card.name, "gate", f"{p.name} could not be evaluated: {type(e).__name__}: {e}") from e
        metrics, failures, thresholds = self._compare(self.reference, got)
        failures = list(failures)
        try:
            tol = target_for_file(p).tolerance
        except ValueError:
            tol = None
        if tol is not None and self.reference["raw"]:
            # All check inputs at once, output by output (more signal than one image).
            stack = lambda runs: {k: np.concatenate([np.ravel(r[k]) for r in runs])  # noqa: E731
                                  for k in runs[0]}
            got_raw = [dict(zip(self.reference["raw"][0], r.values())) for r in got["raw"]]
            worst = check_agreement(stack(self.reference["raw"]), stack(got_raw), tol)
            metrics["raw_cosine"] = round(worst.cosine, 6)
            metrics["raw_rel_err"] = round(worst.rel_err, 6)
            if not worst.passed:
                failures.append(f"raw output {worst.output!r} outside the {target_for_file(p).key} tolerance: "
                                f"cosine {worst.cosine:.4f} (min {tol.min_cosine}), rel. error "
                                f"{worst.rel_err:.3g} (max {tol.max_rel_err}), abs. error {worst.abs_err:.3g} "
                                f"(> {tol.atol})")
        metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
        return GateResult(self.role.value, variant or p.name, metrics, not failures, tuple(failures), thresholds)

    # -- to implement --------------------------------------------------------------------------
    def _measure(self, path: Path, card: ModelCard, backend: str | None) -> dict:  # pragma: no cover
        raise NotImplementedError

    def _compare(self, ref: dict, got: dict) -> tuple[dict, list[str], dict]:  # pragma: no cover
        raise NotImplementedError


def summarize(results: Sequence[GateResult]) -> list[dict]:
    """JSON-ready list of results (for reports)."""
    return [r.to_dict() for r in results]
