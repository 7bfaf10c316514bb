"""Roofline: multiply-accumulates per model, the latency lower bound they imply, the efficiency reached.

MACs come from the model's card (``card.macs``, counted once at export time with ``onnx`` by
:mod:`export.onnx.macs`; the registry cards carry theirs, checked by a test against that counter). A
model without a card: a TFLite file is counted from its interpreter's op list
(:mod:`edge.bench.tflite_macs`); a bare ONNX file gets the small fallback of
:mod:`edge.bench.onnx_macs`, which counts only the nodes whose shapes the file states and lists
the others as uncounted (the bench report shows them). Conv (grouped and depthwise),
ConvTranspose, Gemm, MatMul and their integer/QLinear forms carry MACs; element-wise ops,
pooling and resizing do not (memory-bound; the published MobileNet/YOLOX convention).

With a profile's peak for the precision the MACs run at (:class:`edge.profile.ComputeSpec`),
the lower bound is ``2 · MACs / peak`` (one MAC = two operations), scaled to the cores the run
may use; efficiency is that bound over the measured latency.

Example:
    >>> count = count_macs("yolox_nano_416.onnx", get_card("yolox_nano_416"))  # doctest: +SKIP
    >>> round(count.total / 1e9, 2)                                          # doctest: +SKIP
    0.52
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import msgspec
from pathlib import Path

import numpy as np

from edge.bench.macs import MacCount
from edge.errors import ModelFormatError

__all__ = ["MacCount", "Roofline", "count_macs", "card_macs", "roofline", "calibrate_peak_gflops",
           "peak_for", "FAR_FROM_BOUND", "PRECISIONS"]

#: A variant whose efficiency is below this fraction of its roofline bound is flagged.
FAR_FROM_BOUND = 0.05
PRECISIONS = ("fp32", "fp16", "int8")
#: numpy matmul size and repeats used by :func:`calibrate_peak_gflops`.
CALIBRATION_N = 1024
CALIBRATION_REPEATS = 12


def _pixels(shape) -> int | None:
    """Height × width of an image-like input shape (its last two dims for NCHW, middle two for NHWC)."""
    dims = [d for d in (shape or ()) if isinstance(d, int)]
    if len(shape or ()) != 4 or len(dims) != 4:
        return None
    hw = dims[2:] if dims[1] in (1, 3, 4) else dims[1:3]
    return hw[0] * hw[1]


def card_macs(card, input_shape=None) -> MacCount | None:
    """The card's export-time MACs as a :class:`MacCount`, or None when the card has none.

    Args:
        card: a :class:`edge.cards.ModelCard`.
        input_shape: the first input's shape the model runs at, when it differs from the one the
            MACs were counted at (a dynamic model): the figure is scaled by the pixel count, exact
            for a fully convolutional network whose strides divide both sizes.
    """
    m = getattr(card, "macs", None)
    if m is None:
        return None
    by, source = dict(m.by_precision), "card"
    if input_shape is not None and tuple(input_shape) != tuple(m.input_shape):
        have, want = _pixels(m.input_shape), _pixels(tuple(input_shape))
        if not have or not want:
            return None
        by = {k: v * want // have for k, v in by.items()}
        source = "card-scaled"
    return MacCount(sum(by.values()), by, {}, (), source)


def count_macs(path: str | Path, card=None, input_shapes: dict | None = None) -> MacCount | None:
    """MACs of a model: its card's (export time), else counted from a TFLite file, else the ONNX fallback.

    Args:
        path: the model file.
        card: its card, or None for a bare model.
        input_shapes: concrete input shapes of a run (``{"input": (1, 3, 480, 640)}``).

    Returns:
        A :class:`MacCount`, or ``None`` when neither the card nor the file gives one.
    """
    shape = None
    if input_shapes and card is not None and card.inputs:
        shape = input_shapes.get(card.inputs[0].name)
    from_card = card_macs(card, shape) if card is not None else None
    if from_card is not None:
        return from_card
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".tflite":
            from edge.bench.tflite_macs import count_tflite_macs

            return count_tflite_macs(path)
        if suffix == ".onnx":
            from edge.bench.onnx_macs import count_stated_onnx_macs

            return count_stated_onnx_macs(path)
    except (ModelFormatError, ImportError, OSError):
        return None
    return None


@dataclass(frozen=True)
class Roofline:
    """A variant's roofline figures.

    Attributes:
        macs: MACs of one inference; ``precision`` the one carrying most of them.
        peak_gops: peak of the cores used (all-core peak × min(threads, cores) / cores).
        lower_bound_ms: ``2 · MACs / peak``, summed over precisions.
        achieved_gops: ``2 · MACs`` over the measured latency.
        efficiency: lower bound / measured latency (1.0 = at the roofline).
        far_from_bound: efficiency below :data:`FAR_FROM_BOUND`.
    """

    macs: int
    precision: str
    peak_gops: float
    lower_bound_ms: float
    achieved_gops: float | None
    efficiency: float | None
    far_from_bound: bool
    peak_source: str = "datasheet"

    def to_dict(self) -> dict:
        return asdict(self)


def peak_for(compute, precision: str) -> float:
    """The profile's all-core peak (G op/s) for ``precision``; fp16 falls back to fp32 when not given."""
    if precision == "int8":
        return float(compute.peak_gops_int8)
    if precision == "fp16" and compute.peak_gflops_fp16:
        return float(compute.peak_gflops_fp16)
    return float(compute.peak_gflops_fp32)


def roofline(macs: MacCount, compute, latency_ms: float | None, *, threads: int | None, cores: int) -> Roofline:
    """Lower bound and efficiency of one measured variant.

    Args:
        macs: the model's :class:`MacCount`.
        compute: a :class:`edge.profile.ComputeSpec` (all-core peaks).
        latency_ms: measured latency (p50), or ``None`` when nothing was measured.
        threads: threads the run used (``None`` = all cores).
        cores: cores of the board.
    """
    used = min(threads or cores, cores) / cores
    bound_s = 0.0
    for prec, n in (macs.by_precision or {"fp32": macs.total}).items():
        bound_s += 2.0 * n / (peak_for(compute, prec) * 1e9 * used)
    bound_ms = bound_s * 1e3
    peak = peak_for(compute, macs.precision) * used
    achieved = efficiency = None
    if latency_ms:
        achieved = 2.0 * macs.total / (latency_ms * 1e-3) / 1e9
        efficiency = bound_ms / latency_ms
    source = "calibrated" if getattr(compute, "calibrated", False) else "datasheet"
    return Roofline(macs.total, macs.precision, peak, bound_ms, achieved, efficiency,
                    efficiency is not None and efficiency < FAR_FROM_BOUND, source)


@dataclass(frozen=True)
class Calibration:
    """A measured float32 matrix-multiply peak (G flop/s for all cores)."""

    gflops: float
    n: int
    repeats: int
    best_s: float
    median_s: float
    gflops_all_threads: float
    gflops_one_thread: float | None
    cores: int
    method: str = ("numpy float32 matmul, best of repeats; peak = max(all BLAS threads, one thread × cores), "
                   "since a multi-threaded BLAS loses most to other processes on a busy machine")

    def to_dict(self) -> dict:
        return asdict(self)


#: BLAS thread-count variables set to 1 for the one-thread measurement.
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def matmul_times(n: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` timed ``n×n`` float32 matrix multiplies (after one untimed)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm the BLAS threads and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return times


def _one_thread_times(n: int, repeats: int) -> list[float] | None:
    """:func:`matmul_times` in a child process whose BLAS is limited to one thread (set before numpy loads)."""
    env = dict(os.environ, **{v: "1" for v in _BLAS_THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                         *filter(None, [os.environ.get("PYTHONPATH")])])
    code = f"import json; from edge.bench.roofline import matmul_times; print(json.dumps(matmul_times({n}, {repeats})))"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def calibrate_peak_gflops(n: int = CALIBRATION_N, repeats: int = CALIBRATION_REPEATS,
                          cores: int | None = None) -> Calibration:
    """Measure this machine's float32 peak with timed ``n×n`` numpy matrix multiplies.

    Two measurements (2·n³ flop each, best of ``repeats``): with every BLAS thread, and with one
    thread (in a child process) scaled by the core count. The larger is the peak: on an idle
    machine they agree, on a busy one the multi-threaded figure collapses (its threads wait
    for each other) while one thread still gets a core.
    """
    cores = cores or os.cpu_count() or 1
    times = matmul_times(n, repeats)
    flop = 2.0 * n ** 3
    all_threads = flop / min(times) / 1e9
    one = _one_thread_times(n, repeats)
    one_thread = flop / min(one) / 1e9 if one else None
    peak = max(all_threads, (one_thread or 0.0) * cores)
    return Calibration(peak, n, repeats, min(times), float(np.median(times)), all_threads, one_thread, cores)


def calibrated_compute(compute, calibration: Calibration):
    """``compute`` with the measured fp32 peak; int8/fp16 peaks scaled by the datasheet's ratios."""
    ratio_int8 = compute.peak_gops_int8 / compute.peak_gflops_fp32
    ratio_fp16 = (compute.peak_gflops_fp16 / compute.peak_gflops_fp32) if compute.peak_gflops_fp16 else None
    g = calibration.gflops
    return msgspec.structs.replace(compute, peak_gflops_fp32=g, peak_gops_int8=g * ratio_int8,
                   peak_gflops_fp16=g * ratio_fp16 if ratio_fp16 else None, calibrated=True)
