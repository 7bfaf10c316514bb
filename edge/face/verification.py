"""Verification figures from pair scores: ROC, AUC, TAR at FAR, thresholds at FAR, EER. Pure numpy.

Conventions: a score is a similarity (higher = more likely the same person); a pair is
accepted when ``score >= threshold``. FAR = accepted impostor pairs / impostor pairs,
TAR = accepted genuine pairs / genuine pairs, FRR = 1 − TAR. With ``N`` impostor pairs the
smallest non-zero FAR is ``1/N`` — a FAR target under it can only be met with no false accept
at all, which says little: report the resolution with every figure.

Example:
    >>> s = np.array([0.9, 0.8, 0.3, 0.1]); y = np.array([1, 1, 0, 0])
    >>> roc_auc(s, y)
    1.0
    >>> threshold_at_far(s, y, 0.5)   # one of two impostors may pass: midway between them
    0.2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["roc_curve", "roc_auc", "threshold_at_far", "tar_at_far", "rates_at_threshold", "eer",
           "Rates", "VerificationReport", "evaluate_scores"]


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    if not np.all(np.isin(y, (0, 1, False, True))):
        raise ValueError("labels must be 0/1 (or booleans)")
    y = y.astype(bool)
    if not y.any() or y.all():
        raise ValueError(f"need both genuine and impostor pairs, got {int(y.sum())} genuine of {y.size}")
    return s, y


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, thresholds)``, one point per distinct score, from the strictest threshold down.

    The first point is ``(0, 0)`` at threshold ``+inf``.
    """
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tar = np.r_[0.0, tp / y.sum()]
    far = np.r_[0.0, fp / (~y).sum()]
    return far, tar, np.r_[np.inf, s[last]]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (ties count one half; equals the Mann–Whitney U / n₁n₀)."""
    far, tar, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def threshold_at_far(scores, labels, target_far: float) -> float:
    """A threshold whose FAR on these pairs is ≤ ``target_far``, as permissive as that allows.

    With ``N`` impostor scores sorted descending ``i₁ ≥ i₂ ≥ …``, at most ``k = ⌊far·N⌋`` may be
    accepted; the threshold is the midpoint of ``i_k`` and ``i_{k+1}`` (just above ``i₁`` when
    ``k = 0``), so exactly ``k`` impostors (fewer with ties) score at or above it. The midpoint,
    rather than a hair above ``i_{k+1}``, leaves a margin on both sides for unseen impostors; a
    genuine score between ``i_{k+1}`` and the midpoint is rejected for it.
    """
    s, y = _check(scores, labels)
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target FAR must be in [0, 1], got {target_far}")
    imp = np.sort(s[~y])[::-1]
    k = int(np.floor(target_far * imp.size + 1e-9))
    if k >= imp.size:
        return float(imp[-1])
    nxt = imp[k]
    above = imp[:k][imp[:k] > nxt]
    if above.size == 0:  # nothing strictly above i_{k+1} may be accepted: step just past it
        return float(np.nextafter(nxt, np.inf))
    return float((above[-1] + nxt) / 2.0)


@dataclass(frozen=True)
class Rates:
    """Decision counts and rates at one threshold."""

    threshold: float
    tar: float
    far: float
    frr: float
    genuine: int
    impostor: int
    false_accepts: int
    false_rejects: int

    @property
    def far_resolution(self) -> float:
        return 1.0 / self.impostor

    @property
    def tar_resolution(self) -> float:
        return 1.0 / self.genuine


def rates_at_threshold(scores, labels, threshold: float) -> Rates:
    """TAR, FAR and FRR when accepting ``score >= threshold``."""
    s, y = _check(scores, labels)
    acc = s >= threshold
    g, i = int(y.sum()), int((~y).sum())
    fa, fr = int(np.sum(acc & ~y)), int(np.sum(~acc & y))
    return Rates(float(threshold), (g - fr) / g, fa / i, fr / g, g, i, fa, fr)


def tar_at_far(scores, labels, target_far: float) -> tuple[float, float]:
    """``(TAR, threshold)`` at the threshold of :func:`threshold_at_far`."""
    t = threshold_at_far(scores, labels, target_far)
    return rates_at_threshold(scores, labels, t).tar, t


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and its threshold (where FAR and FRR cross; their mean at the crossing)."""
    far, tar, thr = roc_curve(scores, labels)
    frr = 1.0 - tar
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2.0), float(thr[i])


@dataclass(frozen=True)
class VerificationReport:
    """Everything :func:`evaluate_scores` computes, JSON-ready through :meth:`to_dict`."""

    auc: float
    eer: float
    eer_threshold: float
    at_far: dict  # "0.01" -> Rates
    genuine: int
    impostor: int

    def to_dict(self) -> dict:
        return {
            "roc_auc": round(self.auc, 6),
            "eer": round(self.eer, 6),
            "eer_threshold": round(self.eer_threshold, 6),
            "genuine_pairs": self.genuine,
            "impostor_pairs": self.impostor,
            "far_resolution": 1.0 / self.impostor,
            "at_far": {k: {"threshold": round(r.threshold, 6), "tar": round(r.tar, 6), "far": round(r.far, 6),
                           "frr": round(r.frr, 6), "false_accepts": r.false_accepts,
                           "false_rejects": r.false_rejects,
                           "resolved": r.impostor * float(k) >= 1.0}
                       for k, r in self.at_far.items()},
        }


def evaluate_scores(scores, labels, fars=(1e-2, 1e-3)) -> VerificationReport:
    """ROC AUC, EER and, for each FAR target, the threshold and the rates it gives."""
    s, y = _check(scores, labels)
    e, et = eer(s, y)
    at = {repr(float(f)): rates_at_threshold(s, y, threshold_at_far(s, y, f)) for f in fars}
    return VerificationReport(roc_auc(s, y), e, et, at, int(y.sum()), int((~y).sum()))
