"""The one timing loop: warm up, then time calls one by one, in milliseconds.

Every latency figure of the project comes from :func:`timed_calls`: the benchmark worker
(``edge bench``: a run bounded by iterations or seconds, stoppable, reporting progress), the
export side's per-file latency (:func:`export.select.timing.measure_latency`) and its paired fp32 vs
variant speed-ups (``export.select.report_split.paired_speedup``: calls alternate between the two models
so both see the same machine load). Figures are comparable within one process on one machine;
they go into reports and benchmark output, never into test assertions.

Example:
    >>> run = timed_calls(lambda i: engine.run(feeds[i]), len(feeds), warmup=3, iters=10)  # doctest: +SKIP
    >>> statistics.median(run.samples_ms)                                                  # doctest: +SKIP
    3.1
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

__all__ = ["TimedRun", "timed_calls", "MAX_SAMPLES"]

#: Upper bound on samples kept by a run bounded by seconds (memory stays small on a Pi).
MAX_SAMPLES = 1_000_000
_MS = 1e3


class TimedRun(NamedTuple):
    samples_ms: list[float]  # one per timed call, in call order
    wall_s: float  # wall-clock seconds of the timed part
    warmup_done: int  # untimed calls made (fewer than asked when stopped)


def timed_calls(fn: Callable[[int], object], n_items: int, *, warmup: int = 3, iters: int | None = None,
                duration_s: float | None = None, should_stop: Callable[[], bool] = lambda: False,
                on_sample: Callable[[], None] | None = None,
                on_progress: Callable[[dict], None] | None = None, progress_interval_s: float = 0.25) -> TimedRun:
    """Call ``fn(i % n_items)`` ``warmup`` times untimed, then time each call.

    Args:
        fn: the call to time; its argument cycles through ``0 … n_items − 1`` (which input, or
            which of several models when calls alternate).
        n_items: length of the cycle.
        warmup: untimed calls first.
        iters: timed calls (``None``: until ``duration_s`` or :data:`MAX_SAMPLES`).
        duration_s: stop timing after this many seconds (with ``iters`` unset or as a bound).
        should_stop: polled before each call (Ctrl-C in the benchmark worker): the samples taken
            so far are returned.
        on_sample: called after each timed call, outside the timed span.
        on_progress: receives ``{"phase": "warmup"|"measure", ...}`` at most every
            ``progress_interval_s``.

    Raises:
        ValueError: ``n_items`` < 1, or neither ``iters`` nor ``duration_s`` bounds the run.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if iters is None and duration_s is None:
        raise ValueError("a timed run needs iters or duration_s")
    last = time.perf_counter()
    done_warm = 0
    for i in range(max(0, warmup)):
        if should_stop():
            break
        fn(i % n_items)
        done_warm += 1
        now = time.perf_counter()
        if on_progress is not None and now - last >= progress_interval_s:
            on_progress({"phase": "warmup", "done": i + 1, "total": warmup})
            last = now
    samples: list[float] = []
    start = time.perf_counter()
    limit = iters if iters is not None else MAX_SAMPLES
    i = 0
    while i < limit and not should_stop():
        t0 = time.perf_counter()
        fn(i % n_items)
        t1 = time.perf_counter()
        samples.append((t1 - t0) * _MS)
        if on_sample is not None:
            on_sample()
        i += 1
        if duration_s is not None and t1 - start >= duration_s:
            break
        if on_progress is not None and t1 - last >= progress_interval_s:
            on_progress({"phase": "measure", "done": i, "total": iters, "elapsed_s": t1 - start,
                         "duration_s": duration_s, "last_ms": samples[-1]})
            last = t1
    return TimedRun(samples, time.perf_counter() - start, done_warm)
