"""Turn an ONNX source into the clean fp32 graph every other variant is made from.

Steps, in order (each optional step is a field of :class:`PrepOptions`):

1. load, refusing a file whose weights are graph inputs *without* initialisers (it does not
   carry its weights) — a typed error naming the model and the input;
2. drop graph inputs that are initialisers or that no node reads (old exporters' habit; the
   shared SFace fp32 file has 29, ULFD all of its weights; onnxruntime 1.32 otherwise demands
   them as feeds and OpenCV 5 refuses the file);
3. upgrade the default-domain opset to :data:`MIN_QDQ_OPSET` when lower: per-channel QDQ
   writes ``DequantizeLinear`` with an ``axis`` attribute that opset 11 lacks
   (``yolox_nano_416`` and YuNet are opset 11, see ``../shared/models/MANIFEST.md``);
4. onnxruntime's *basic* offline graph optimisation (constant folding, Conv+BatchNormalization
   and Conv+Add fusion, Identity/Dropout removal: what ``quant_pre_process`` runs), so the
   quantiser sees one Conv where the source has Conv → BatchNormalization;
5. optional runtime-aware rewrites (:data:`REWRITES`), each verified output-identical;
6. a unique name for every node (``nodes_to_exclude`` and the fallback refer to nodes by name)
   and ONNX shape inference (the quantiser needs the value infos).

Example:
    >>> res = prepare_onnx("yolox_nano_416.onnx", "out/yolox_nano_416_fp32.onnx")   # doctest: +SKIP
    >>> res.opset_in, res.opset_out
    (11, 13)
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from export.variants import TOL_FP32, ExportStepError, Tolerance, check_agreement

log = logging.getLogger(__name__)

__all__ = ["MIN_QDQ_OPSET", "REWRITES", "PrepOptions", "PrepResult", "Rewrite", "prepare_onnx", "load_onnx",
           "default_opset", "strip_weight_inputs", "missing_weight_inputs", "upgrade_opset", "name_nodes",
           "rewrite_prelu", "run_ort", "save_checked"]

#: Lowest opset whose DequantizeLinear has the ``axis`` attribute (per-channel weights).
MIN_QDQ_OPSET = 13
#: Step name used in errors raised here.
STEP = "onnx_prep"
#: Input slots that hold weights: op type -> input indices (Conv W/B, Gemm B/C, MatMul B, PRelu slope).
WEIGHT_SLOTS: dict[str, tuple[int, ...]] = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2),
                                             "MatMul": (1,), "PRelu": (1,), "BatchNormalization": (1, 2, 3, 4)}
#: Rewrites :func:`prepare_onnx` can apply, by name (see :class:`PrepOptions`).
REWRITES = ("prelu",)


@dataclass(frozen=True)
class PrepOptions:
    """Options of :func:`prepare_onnx`.

    Attributes:
        min_opset: upgrade the default-domain opset to at least this (``0`` leaves it alone).
        optimize: run onnxruntime's basic offline graph optimisation (BatchNormalization
            folding, constant folding).
        rewrite_prelu: rewrite ``PRelu(x, a)`` as ``x + (a − 1) · Min(x, 0)`` (onnxruntime's
            PRelu kernel is two thirds of MobileFaceNet's fp32 time; same function).
        infer_shapes: run ONNX shape inference at the end.
        tolerance: how closely the prepared graph must reproduce the source on ``check_feeds``.
    """

    min_opset: int = MIN_QDQ_OPSET
    optimize: bool = True
    rewrite_prelu: bool = False
    infer_shapes: bool = True
    tolerance: Tolerance = TOL_FP32

    def __post_init__(self) -> None:
        if self.min_opset and not 7 <= self.min_opset <= 23:
            raise ValueError(f"min_opset must be 0 or between 7 and 23, got {self.min_opset}")


@dataclass(frozen=True)
class Rewrite:
    """One graph rewrite applied: how many nodes it replaced and how far the output moved."""

    name: str
    nodes: int
    max_abs_diff: float | None = None  # on the check feeds, None when none were given


@dataclass(frozen=True)
class PrepResult:
    """What :func:`prepare_onnx` did."""

    path: Path
    opset_in: int
    opset_out: int
    dropped_inputs: tuple[str, ...]
    rewrites: tuple[Rewrite, ...]
    nodes_in: int
    nodes_out: int
    max_abs_diff: float | None = None  # prepared vs source on the check feeds
    notes: tuple[str, ...] = field(default_factory=tuple)


def load_onnx(src: str | Path, model_name: str | None = None):
    """Load an ONNX file with its weights.

    Raises:
        ExportStepError: unreadable or not an ONNX model (step ``onnx_prep``).
    """
    import onnx

    p = Path(src)
    name = model_name or p.stem
    if not p.is_file():
        raise ExportStepError(name, STEP, f"model file not found: {p}")
    try:
        return onnx.load(str(p))
    except Exception as e:  # protobuf DecodeError, OSError
        raise ExportStepError(name, STEP, f"{p} is not a readable ONNX model ({type(e).__name__}: {e})") from e


def default_opset(model) -> int:
    """The model's default-domain (``""`` / ``ai.onnx``) opset version, 0 when absent."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def missing_weight_inputs(model) -> list[str]:
    """Graph inputs read in a weight slot (:data:`WEIGHT_SLOTS`) that have no initialiser."""
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    out = []
    for node in model.graph.node:
        for k in WEIGHT_SLOTS.get(node.op_type, ()):
            if k < len(node.input) and node.input[k] in inputs and node.input[k] not in inits:
                out.append(node.input[k])
    return sorted(set(out))


def strip_weight_inputs(model) -> list[str]:
    """Remove graph inputs that are initialisers or that neither a node nor an output reads (in place).

    Old exporters list every weight as a graph input too (SFace, ULFD): the weights stay
    initialisers, only the duplicate input entries go, which leaves the function unchanged. Which
    inputs go is decided by the device's reader (:func:`edge.engines.onnx_wire.removable_inputs`),
    so export and device drop the same ones.

    Returns:
        The names removed.
    """
    from edge.engines.onnx_wire import removable_inputs

    drop = set(removable_inputs(model.SerializeToString()))
    if not drop:
        return []
    keep = [vi for vi in model.graph.input if vi.name not in drop]
    dropped = [vi.name for vi in model.graph.input if vi.name in drop]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return dropped


def upgrade_opset(model, min_opset: int, model_name: str = "model"):
    """Return ``model`` converted to ``min_opset`` when its default-domain opset is lower.

    Raises:
        ExportStepError: the ONNX version converter cannot convert the graph.
    """
    from onnx import version_converter

    have = default_opset(model)
    if not min_opset or have >= min_opset:
        return model
    try:
        return version_converter.convert_version(model, min_opset)
    except Exception as e:
        raise ExportStepError(model_name, STEP, f"cannot upgrade opset {have} to {min_opset}: {e}") from e


def name_nodes(model) -> int:
    """Give every unnamed (or duplicate-named) node a unique name ``<OpType>_<index>``, in place.

    Returns:
        How many nodes were renamed.
    """
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = f"{node.op_type}_{i}"
            name, k = base, 1
            while name in seen:
                name, k = f"{base}_{k}", k + 1
            node.name = name
            renamed += 1
        seen.add(node.name)
    return renamed


def rewrite_prelu(model) -> int:
    """Rewrite every ``PRelu(x, slope)`` as ``x + (slope − 1) · Min(x, 0)`` in place.

    The same function for every ``x``: for ``x >= 0`` the second term is 0; for ``x < 0`` it is
    ``slope·x − x``. onnxruntime's PRelu kernel is two thirds of MobileFaceNet's fp32 time; this
    three-op form measured 6.1 ms against 6.7 ms for ``Max(x, 0) + slope · Min(x, 0)`` and 11.8 ms
    for PRelu (the ``slope − 1`` of two constants is folded when the session loads).

    Returns:
        The number of PRelu nodes rewritten.
    """
    from onnx import helper, numpy_helper

    zero, one = "edgesight_prelu_zero", "edgesight_prelu_one"
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        y = node.output[0]
        base = node.name or y
        sm1, neg, scaled = f"{base}_slope_m1", f"{base}_neg", f"{base}_negscaled"
        nodes += [helper.make_node("Sub", [slope, one], [sm1], name=f"{base}_sub"),
                  helper.make_node("Min", [x, zero], [neg], name=f"{base}_min"),
                  helper.make_node("Mul", [neg, sm1], [scaled], name=f"{base}_mul"),
                  helper.make_node("Add", [x, scaled], [y], name=f"{base}_add")]
        count += 1
    if count:
        model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        model.graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


def _ort_basic_optimize(model, model_name: str):
    """onnxruntime's ORT_ENABLE_BASIC offline optimisation of ``model`` (a new ModelProto)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgesight-prep-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(out)
        try:
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            optimized = onnx.load(str(out))
        except Exception as e:
            raise ExportStepError(model_name, STEP, f"onnxruntime cannot load the graph to optimise it: {e}") from e
    # Keep the source's opset imports and metadata; ORT may add its own domains.
    optimized.producer_name = model.producer_name or optimized.producer_name
    return optimized


def session_with_outputs(model, names, *, optimize: bool = True):
    """An onnxruntime session of ``model`` (a ModelProto, not modified) that also returns ``names``.

    ``optimize=False`` turns graph fusion off, so every intermediate tensor of a QDQ graph stays
    observable and is computed as float arithmetic on fake-quantised values (the numbers the
    fused int8 kernels give, to rounding).
    """
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_ort(model_or_path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX model (path or ModelProto) with edge's onnxruntime engine, one thread; feeds by position."""
    from edge.engines import load_engine

    if isinstance(model_or_path, (str, Path)):
        with load_engine(model_or_path, backend="onnxruntime", threads=1) as eng:
            return eng.run({i.name: v for i, v in zip(eng.inputs, feeds.values())})
    with tempfile.TemporaryDirectory(prefix="edgesight-prep-") as tmp:
        import onnx

        p = Path(tmp) / "m.onnx"
        onnx.save(model_or_path, str(p))
        return run_ort(p, feeds)


def _max_abs_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    return max(float(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).max())
               for x, y in zip(a.values(), b.values()))


def prepare_onnx(src: str | Path, dst: str | Path, options: PrepOptions = PrepOptions(), *,
                 check_feeds: Mapping[str, np.ndarray] | None = None, model_name: str | None = None) -> PrepResult:
    """Write the cleaned-up fp32 graph of ``src`` to ``dst`` (see the module docstring).

    Args:
        src: the source ``.onnx``.
        dst: output ``.onnx`` (written to a temporary name and renamed).
        options: which steps to run.
        check_feeds: a real, preprocessed input (``{name: array}``); when given, the prepared
            graph must reproduce the source within ``options.tolerance`` and every rewrite's
            effect is measured on it.
        model_name: used in messages (default: the file stem).

    Returns:
        A :class:`PrepResult`.

    Raises:
        ExportStepError: unreadable file, weights that are inputs without values, a failed opset
            conversion or optimisation, or a prepared graph that disagrees with the source.
    """
    import onnx

    name = model_name or Path(src).stem
    model = load_onnx(src, name)
    missing = missing_weight_inputs(model)
    if missing:
        raise ExportStepError(name, STEP, f"{len(missing)} weight(s) are graph inputs without values "
                                          f"({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}): the file "
                                          "does not carry its weights; export it with the weights as initialisers")
    nodes_in, opset_in = len(model.graph.node), default_opset(model)
    dropped = strip_weight_inputs(model)
    reference = run_ort(model, check_feeds) if check_feeds is not None else None
    model = upgrade_opset(model, options.min_opset, name)
    if options.optimize:
        model = _ort_basic_optimize(model, name)
    rewrites: list[Rewrite] = []
    if options.rewrite_prelu:
        before = run_ort(model, check_feeds) if check_feeds is not None else None
        n = rewrite_prelu(model)
        if n:
            diff = _max_abs_diff(before, run_ort(model, check_feeds)) if before is not None else None
            rewrites.append(Rewrite("prelu", n, diff))
    name_nodes(model)
    if options.infer_shapes:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception as e:
            raise ExportStepError(name, STEP, f"ONNX shape inference failed: {e}") from e
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".onnx.tmp", dir=out.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        diff = None
        if reference is not None:
            got = run_ort(Path(tmp), check_feeds)
            ag = check_agreement(reference, got, options.tolerance)
            diff = _max_abs_diff(reference, got)
            if not ag.passed:
                raise ExportStepError(name, STEP, f"the prepared graph disagrees with the source on {ag.output!r}: "
                                                  f"cosine {ag.cosine:.6f}, max rel. error {ag.rel_err:.2e}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    res = PrepResult(out, opset_in, default_opset(model), tuple(dropped), tuple(rewrites), nodes_in,
                     len(model.graph.node), diff)
    log.info("%s: prepared %s (opset %d -> %d, %d -> %d nodes, %d weight inputs dropped, rewrites %s)", name,
             out.name, res.opset_in, res.opset_out, nodes_in, res.nodes_out, len(dropped),
             ", ".join(f"{r.name}×{r.nodes}" for r in rewrites) or "none")
    return res


def save_checked(model, dst: str | Path, what: str) -> Path:
    """Check ``model`` with ``onnx.checker`` and write it to ``dst`` atomically (a temporary file
    beside it, then a rename): a failed rewrite never leaves a half-written or invalid file.

    Raises:
        ExportError: the checker refuses the graph (``what`` names the step, e.g. "PRelu rewrite of X").
    """
    import onnx

    from export.onnx.from_torch import ExportError

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{what} produced an invalid graph: {e}") from e
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out
