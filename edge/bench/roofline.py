"""Roofline: multiply-accumulates per model, the latency lower bound they imply, the efficiency reached.

MACs are counted from the model itself: an ONNX graph through :mod:`edge.bench.onnx_graph` and
:mod:`edge.bench.onnx_shapes` (``edge/`` never imports ``onnx``), a TFLite model through its
interpreter's op list (:mod:`edge.bench.tflite_macs`). Conv (grouped and depthwise),
ConvTranspose, Gemm, MatMul and their integer/QLinear forms are counted; element-wise ops,
pooling and resizing are not (they are memory-bound and cost no MACs by convention, as in the
published MobileNet/YOLOX figures). A model neither can read falls back to ``card.extra["macs"]``.

With a profile's peak for the precision the MACs run at (:class:`edge.profile.ComputeSpec`),
the lower bound is ``2 · MACs / peak`` (one MAC = two operations), scaled to the cores the run
may use; efficiency is that bound over the measured latency.

Example:
    >>> count = count_macs("yolox_nano_416.onnx")                            # doctest: +SKIP
    >>> round(count.total / 1e9, 2)                                          # doctest: +SKIP
    1.08
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
from edge.bench.onnx_graph import FLOAT16, Graph, Node, read_graph
from edge.bench.onnx_shapes import infer_shapes
from edge.errors import ModelFormatError

__all__ = ["MacCount", "Roofline", "count_macs", "count_onnx_macs", "roofline", "calibrate_peak_gflops",
           "peak_for", "FAR_FROM_BOUND", "PRECISIONS"]

#: A variant whose efficiency is below this fraction of its roofline bound is flagged.
FAR_FROM_BOUND = 0.05
PRECISIONS = ("fp32", "fp16", "int8")
#: Ops whose MACs are counted, by where their data and weight inputs are.
_MAC_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1),
            "Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_INTEGER_OPS = frozenset({"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul"})
#: numpy matmul size and repeats used by :func:`calibrate_peak_gflops`.
CALIBRATION_N = 1024
CALIBRATION_REPEATS = 12


def _prod(dims) -> int | None:
    if dims is None or any(d is None for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64)) if dims else 1


def _node_macs(node: Node, metas: dict) -> int | None:
    def shape(i: int):
        if i >= len(node.inputs) or not node.inputs[i] or node.inputs[i] not in metas:
            return None
        return metas[node.inputs[i]].shape

    x_i, w_i = _MAC_OPS[node.op_type]
    xs, ws = shape(x_i), shape(w_i)
    out = metas.get(node.outputs[0]).shape if node.outputs[0] in metas else None
    if xs is None or ws is None:
        return None
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        n_out, per_out = _prod(out), _prod(ws[1:])
        return None if n_out is None or per_out is None else n_out * per_out
    if op == "ConvTranspose":
        n_in, per_in = _prod(xs), _prod(ws[1:])
        return None if n_in is None or per_in is None else n_in * per_in
    if op == "Gemm":
        k = xs[0] if node.attrs.get("transA", 0) else xs[-1]
        n_out = _prod(out)
        return None if k is None or n_out is None else n_out * k
    k, n_out = xs[-1], _prod(out)  # MatMul family: every output element is a K-long dot product
    return None if k is None or n_out is None else n_out * k


def _precision(node: Node, metas: dict, producers: dict[str, Node]) -> str:
    if node.op_type in _INTEGER_OPS:
        return "int8"
    src = producers.get(node.inputs[0])
    if src is not None and src.op_type == "DequantizeLinear":  # QDQ activations: runtimes fuse to int8 kernels
        return "int8"
    x = metas.get(node.inputs[0])
    return "fp16" if x is not None and x.dtype == FLOAT16 else "fp32"


def count_graph_macs(graph: Graph, input_shapes: dict | None = None) -> MacCount:
    """MACs of a parsed ONNX :class:`~edge.bench.onnx_graph.Graph` (see :func:`count_onnx_macs`)."""
    shapes = dict(input_shapes or {})
    for name, meta in graph.inputs.items():  # a symbolic batch dim counts one sample
        if name not in shapes and meta.shape and meta.shape[0] is None:
            shapes[name] = (1,) + tuple(meta.shape[1:])
    metas = infer_shapes(graph, shapes)
    producers = {o: n for n in graph.nodes for o in n.outputs}
    total, by_precision, by_op, uncounted = 0, {}, {}, []
    for node in graph.nodes:
        if node.op_type not in _MAC_OPS or node.domain not in ("", "ai.onnx"):
            continue
        macs = _node_macs(node, metas)
        if macs is None:
            uncounted.append(f"{node.op_type}:{node.name or node.outputs[0]}")
            continue
        prec = _precision(node, metas, producers)
        total += macs
        by_precision[prec] = by_precision.get(prec, 0) + macs
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return MacCount(total, by_precision, by_op, tuple(uncounted), "onnx-graph")


def count_onnx_macs(path: str | Path, input_shapes: dict | None = None) -> MacCount:
    """MACs of an ONNX model file.

    Args:
        path: ``.onnx`` file.
        input_shapes: concrete shapes for inputs with symbolic dims (``{"input": (1, 3, 480, 640)}``);
            a symbolic batch dim not given here counts as 1.

    Raises:
        ModelFormatError: the file is not an ONNX model.
    """
    return count_graph_macs(read_graph(path), input_shapes)


def _card_macs(card) -> MacCount | None:
    raw = (card.extra or {}).get("macs") if card is not None else None
    if raw is None:
        return None
    if isinstance(raw, dict):
        by = {k: int(v) for k, v in raw.items() if k in PRECISIONS}
        total = int(raw.get("total", sum(by.values())))
        return MacCount(total, by or {"fp32": total}, {}, (), "card")
    return MacCount(int(raw), {"fp32": int(raw)}, {}, (), "card")


def count_macs(path: str | Path, card=None, input_shapes: dict | None = None) -> MacCount | None:
    """MACs of a model file by its format, falling back to the card's ``extra["macs"]``.

    Returns:
        A :class:`MacCount`, or ``None`` when neither the file nor the card gives one.
    """
    suffix = Path(path).suffix.lower()
    counted: MacCount | None = None
    try:
        if suffix == ".onnx":
            counted = count_onnx_macs(path, input_shapes)
        elif suffix == ".tflite":
            from edge.bench.tflite_macs import count_tflite_macs

            counted = count_tflite_macs(path)
    except (ModelFormatError, ImportError):
        counted = None
    if counted is not None and counted.total > 0:
        return counted
    return _card_macs(card) or counted


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
