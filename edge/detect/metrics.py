"""Counters and latency percentiles of the detection service, safe to read from another thread.

Example:
    >>> stats = LatencyStats(window=100)
    >>> for ms in (1.0, 2.0, 3.0, 4.0):
    ...     stats.record("inference", ms)
    >>> stats.summary()["inference"]["p50"]
    2.5
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

__all__ = ["LatencyStats", "RateMeter", "PERCENTILES"]

#: Percentiles reported per stage.
PERCENTILES = (50, 90, 99)
#: Samples kept per stage by default (a sliding window, so the figures follow the present).
DEFAULT_WINDOW = 1000


class LatencyStats:
    """Per-stage millisecond samples in sliding windows.

    Args:
        window: samples kept per stage.
    """

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, stage: str, ms: float) -> None:
        with self._lock:
            dq = self._samples.get(stage)
            if dq is None:
                dq = self._samples[stage] = deque(maxlen=self.window)
            dq.append(float(ms))
            self._counts[stage] = self._counts.get(stage, 0) + 1

    def samples(self, stage: str) -> np.ndarray:
        """The samples currently in ``stage``'s window."""
        with self._lock:
            return np.array(self._samples.get(stage, ()), np.float64)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"p50", "p90", "p99", "mean", "n"}}`` in milliseconds over each window."""
        with self._lock:
            snap = {k: (np.array(v, np.float64), self._counts[k]) for k, v in self._samples.items()}
        out = {}
        for stage, (a, n) in snap.items():
            if a.size == 0:
                continue
            row = {f"p{p}": round(float(np.percentile(a, p)), 3) for p in PERCENTILES}
            row["mean"] = round(float(a.mean()), 3)
            row["n"] = n
            out[stage] = row
        return out


class RateMeter:
    """Events per second over the last ``window`` ticks."""

    def __init__(self, window: int = 100) -> None:
        self._times: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)
            self.total += 1

    def rate(self) -> float:
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0
