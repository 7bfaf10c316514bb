"""The one timing loop (edge.bench.timing.timed_calls): what it calls, in which order, and when it stops.

No assertion on a duration: only on the calls made and the number of samples."""

from __future__ import annotations

import pytest

from edge.bench.timing import timed_calls


def test_warmup_untimed_then_one_sample_per_timed_call_cycling_items():
    calls = []
    run = timed_calls(calls.append, 3, warmup=2, iters=5)
    assert calls == [0, 1] + [0, 1, 2, 0, 1]
    assert len(run.samples_ms) == 5 and run.warmup_done == 2
    assert all(s >= 0 for s in run.samples_ms)


def test_alternating_calls_split_by_parity():
    """paired_speedup's use: two models called in turn; even samples are the first's."""
    order = []
    run = timed_calls(lambda i: order.append("ab"[i]), 2, warmup=2, iters=6)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert len(run.samples_ms[0::2]) == len(run.samples_ms[1::2]) == 3


def test_stop_keeps_the_samples_taken_and_samples_are_reported_after_each_call():
    seen = []
    stop_after = 4
    run = timed_calls(lambda i: None, 1, warmup=1, iters=100, should_stop=lambda: len(seen) >= stop_after,
                      on_sample=lambda: seen.append(1))
    assert len(run.samples_ms) == stop_after and run.warmup_done == 1


def test_a_run_needs_a_bound_and_items():
    with pytest.raises(ValueError, match="iters or duration_s"):
        timed_calls(lambda i: None, 1)
    with pytest.raises(ValueError, match="n_items"):
        timed_calls(lambda i: None, 0, iters=1)
    run = timed_calls(lambda i: None, 1, warmup=0, duration_s=0.0)  # one call, then the duration is over
    assert len(run.samples_ms) == 1


def test_measure_latency_and_paired_speedup_time_a_real_model(model_dir, tmp_path):
    """The export side's two uses on a real model file (figures only checked for shape)."""
    import numpy as np

    from export.select.report_split import paired_speedup
    from export.select.timing import measure_latency

    path = model_dir / "face_detection/yunet_s_640x640.onnx"
    feeds = {"input": np.zeros((1, 3, 640, 640), np.float32)}
    lat = measure_latency(path, feeds, threads=1, warmup=1, runs=3)
    assert lat.runs == 3 and 0 < lat.min_ms <= lat.median_ms
    a, b, ratio = paired_speedup(path, path, "onnxruntime", 1, feeds, rounds=3)
    assert a > 0 and b > 0 and ratio == pytest.approx(a / b, rel=1e-2)
