"""Latency of a model file on one engine: a few warm-up runs, then the median of timed runs.

Used by the fallback loop (what keeping layers in float costs) and the benchmarks; the timing
loop is :func:`edge.bench.timing.timed_calls`, the one every latency figure comes from. Figures
are only comparable within one process on one machine; they go into reports and benchmark
output, never into test assertions.

Example:
    >>> measure_latency("m_int8.onnx", {"input": x}, threads=1).median_ms   # doctest: +SKIP
    3.1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["Latency", "measure_latency", "DEFAULT_WARMUP", "DEFAULT_RUNS"]

DEFAULT_WARMUP = 3
DEFAULT_RUNS = 10


@dataclass(frozen=True)
class Latency:
    """Wall-clock latency of ``engine.run`` in milliseconds."""

    median_ms: float
    min_ms: float
    runs: int
    threads: int | None
    backend: str

    def to_dict(self) -> dict:
        return {"median_ms": round(self.median_ms, 3), "min_ms": round(self.min_ms, 3), "runs": self.runs,
                "threads": self.threads, "backend": self.backend}


def measure_latency(path: str | Path, feeds: Mapping[str, np.ndarray], *, backend: str | None = None,
                    threads: int | None = 1, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS) -> Latency:
    """Load ``path`` with ``edge.engines.load_engine`` and time ``runs`` runs after ``warmup``.

    Args:
        path: model file.
        feeds: one real input (matched to the model inputs by position).
        backend: engine backend (default by suffix).
        threads: inference threads.
        warmup / runs: untimed and timed runs.

    Raises:
        ValueError: ``runs`` < 1.
    """
    from edge.bench.timing import timed_calls
    from edge.engines import load_engine

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    with load_engine(path, backend=backend, threads=threads) as eng:
        f = {i.name: v for i, v in zip(eng.inputs, feeds.values())}
        times = timed_calls(lambda _: eng.run(f), 1, warmup=warmup, iters=runs).samples_ms
        return Latency(float(np.median(times)), float(np.min(times)), runs, threads, eng.backend)
