"""Latency statistics: summaries, robust spread and a bootstrap interval for a difference of medians.

Percentiles use numpy's default linear interpolation, so with few samples p99 lies between the
two largest. The robust spread is the larger of two normal-consistent estimates of σ,
``IQR / 1.349`` and ``1.4826 · MAD``: both ignore the rare long outliers (a page fault, another
process) that make the plain standard deviation of a latency sample unstable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["LatencyStats", "summarize", "robust_spread", "bootstrap_median_diff", "IQR_TO_SIGMA", "MAD_TO_SIGMA"]

#: IQR of a normal distribution in units of σ.
IQR_TO_SIGMA = 1.349
#: σ per unit of median absolute deviation for a normal distribution.
MAD_TO_SIGMA = 1.4826
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in milliseconds."""

    n: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    iqr: float
    mad: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> LatencyStats | None:
    """Summary of ``samples_ms``, or ``None`` when there are none."""
    a = np.asarray(samples_ms, np.float64)
    if a.size == 0:
        return None
    p25, p50, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
    return LatencyStats(int(a.size), float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0,
                        float(a.min()), float(p50), float(p90), float(p99), float(a.max()),
                        float(p75 - p25), float(np.median(np.abs(a - p50))))


def robust_spread(samples_ms: Sequence[float]) -> float:
    """A robust σ of the samples: max(IQR / 1.349, 1.4826 · MAD); 0 for fewer than two samples."""
    a = np.asarray(samples_ms, np.float64)
    if a.size < 2:
        return 0.0
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return float(max((q75 - q25) / IQR_TO_SIGMA, MAD_TO_SIGMA * np.median(np.abs(a - q50))))


def bootstrap_median_diff(a: Sequence[float], b: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                          confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``median(b) - median(a)``.

    Each run is resampled with replacement on its own; the seed is fixed so a comparison
    printed twice is printed the same.
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.size == 0 or y.size == 0:
        raise ValueError("bootstrap needs samples in both runs")
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, x.size, (resamples, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, (resamples, y.size))], axis=1)
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(my - mx, [tail, 100 - tail])
    return float(lo), float(hi)
