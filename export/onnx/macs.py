"""Multiply-accumulates of an ONNX model, counted once at export time and written into its card.

The device never parses a graph to count MACs: it reads :class:`edge.cards.Macs` from the card
(:mod:`edge.bench.roofline`). Here the ``onnx`` package is available, so shapes come from onnx's
own shape inference (with data propagation); a tensor whose shape it cannot state (e.g. a
Reshape target computed by Shape→Gather→Concat) is measured by running the graph once in
onnxruntime on zeros with that tensor added as an output.

Counted, by convention (the published MobileNet / YOLOX figures): Conv (grouped and depthwise),
ConvTranspose, Gemm, MatMul and their integer / QLinear forms. Element-wise ops, pooling and
resizing cost no MACs (they are memory-bound). Precision of a MAC: ``int8`` for the integer ops
and for ops fed by ``DequantizeLinear`` (QDQ: runtimes fuse them into int8 kernels), ``fp16`` when
the activations are float16, else ``fp32``.

Example:
    >>> count_onnx_macs("yolox_nano_416.onnx").total                         # doctest: +SKIP
    541292800
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference

from edge.cards import Macs

__all__ = ["MacCountError", "count_onnx_macs", "file_macs", "MAC_OPS"]

log = logging.getLogger(__name__)

#: Ops whose MACs are counted, with the positions of their data and weight inputs.
MAC_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1),
           "Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_INTEGER_OPS = frozenset({"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul"})


class MacCountError(ValueError):
    """The MACs of a model cannot be counted (symbolic input dims not given, shapes unknown)."""


def _fixed_inputs(model: onnx.ModelProto, input_shapes: dict | None, origin: str) -> tuple[int, ...]:
    """Make every real input's dims concrete in ``model`` (in place); the first input's shape."""
    inits = {i.name for i in model.graph.initializer}
    shapes = dict(input_shapes or {})
    first = None
    for i, vi in enumerate(x for x in model.graph.input if x.name not in inits):
        dims = vi.type.tensor_type.shape.dim
        want = shapes.get(vi.name)
        if want is not None:
            if len(want) != len(dims):
                raise MacCountError(f"{origin}: input {vi.name!r} has {len(dims)} dims, shape given {tuple(want)}")
            for d, v in zip(dims, want):
                d.Clear()
                d.dim_value = int(v)
        for k, d in enumerate(dims):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                if k == 0:  # a symbolic batch counts one sample
                    d.Clear()
                    d.dim_value = 1
                else:
                    raise MacCountError(f"{origin}: input {vi.name!r} has a symbolic dim {k} "
                                        f"({d.dim_param or '?'}): give its shape to count the MACs")
        if first is None:
            first = tuple(int(d.dim_value) for d in dims)
    return first or ()


def _measured_shapes(model: onnx.ModelProto, names: list[str], types: dict[str, int]) -> dict[str, tuple]:
    """Shapes of ``names`` measured by one onnxruntime run on zeros (the graph's inputs are concrete)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for n in names:
        if n not in known:
            m.graph.output.append(helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
                 "tensor(int8)": np.int8, "tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(i.type, np.float32)
        feeds[i.name] = np.zeros(i.shape, dtype)
    outs = sess.run(names, feeds)
    return {n: tuple(int(d) for d in o.shape) for n, o in zip(names, outs)}


def _node_macs(node, shape, attrs) -> int:
    x_i, w_i = MAC_OPS[node.op_type]
    xs, ws, out = shape(node.input[x_i]), shape(node.input[w_i]), shape(node.output[0])
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        return int(np.prod(out)) * int(np.prod(ws[1:]))
    if op == "ConvTranspose":  # every input element feeds C_out/group channels × the kernel window
        return int(np.prod(xs)) * int(np.prod(ws[1:]))
    if op == "Gemm":
        return int(np.prod(out)) * (xs[0] if attrs.get("transA", 0) else xs[-1])
    return int(np.prod(out)) * xs[-1]  # MatMul family: every output element is a K-long dot product


def count_onnx_macs(model: str | Path | onnx.ModelProto, input_shapes: dict | None = None) -> Macs:
    """MACs of one inference of an ONNX model, as the card field :class:`edge.cards.Macs`.

    Args:
        model: an ``.onnx`` path or a loaded model (not modified).
        input_shapes: concrete shapes for inputs with symbolic dims (``{"input": (1, 3, 480, 640)}``);
            a symbolic batch dim not given counts as 1.

    Raises:
        MacCountError: an input has a symbolic dim that ``input_shapes`` does not give.
        onnx.checker.ValidationError / onnx's DecodeError: not an ONNX model.
    """
    origin = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "model")
    m = onnx.ModelProto()
    m.CopyFrom(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False))
    first = _fixed_inputs(m, input_shapes, origin)
    inferred = shape_inference.infer_shapes(m, data_prop=True)
    shapes: dict[str, tuple | None] = {t.name: tuple(t.dims) for t in inferred.graph.initializer}
    types: dict[str, int] = {t.name: t.data_type for t in inferred.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        types.setdefault(vi.name, tt.elem_type)
        if vi.name in shapes:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim] if tt.HasField("shape") else None
        shapes[vi.name] = tuple(dims) if dims is not None and all(d > 0 for d in dims) else None
    nodes = [n for n in inferred.graph.node if n.op_type in MAC_OPS and n.domain in ("", "ai.onnx")]
    needed = []
    for n in nodes:
        x_i, w_i = MAC_OPS[n.op_type]
        needed += [t for t in (n.input[x_i], n.input[w_i], n.output[0]) if shapes.get(t) is None]
    if needed:
        shapes.update(_measured_shapes(inferred, sorted(set(needed)), types))
    producers = {o: n for n in inferred.graph.node for o in n.output}
    by_precision: dict[str, int] = {}
    for n in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        macs = _node_macs(n, shapes.__getitem__, attrs)
        src = producers.get(n.input[0])
        if n.op_type in _INTEGER_OPS or (src is not None and src.op_type == "DequantizeLinear"):
            prec = "int8"
        else:
            prec = "fp16" if types.get(n.input[0]) == TensorProto.FLOAT16 else "fp32"
        by_precision[prec] = by_precision.get(prec, 0) + macs
    return Macs(total=sum(by_precision.values()), by_precision=by_precision, input_shape=first,
                counted_by=f"export.onnx.macs (onnx {onnx.__version__})")


def file_macs(path: str | Path, input_shapes: dict | None = None) -> Macs | None:
    """The card's ``macs`` for an exported ``.onnx`` or ``.tflite`` file; None when it cannot be counted.

    A TFLite file is counted from its interpreter's op list (:mod:`edge.bench.tflite_macs`, the
    same counter the device uses for a bare ``.tflite``) at the input shape its tensors are
    allocated at (the converted size, also for a graph of free height and width). An ONNX file
    with a symbolic input dim other than the batch gets none (logged) unless ``input_shapes``
    gives it (see :func:`count_onnx_macs`); the device scales such a count by the pixels it runs at.
    """
    p = Path(path)
    try:
        if p.suffix.lower() == ".tflite":
            from ai_edge_litert.interpreter import Interpreter

            from edge.bench.tflite_macs import count_tflite_macs

            c = count_tflite_macs(p)
            shape = tuple(int(d) for d in Interpreter(model_path=str(p)).get_input_details()[0]["shape"])
            return Macs(total=c.total, by_precision=dict(c.by_precision), input_shape=shape,
                        counted_by="edge.bench.tflite_macs (TFLite op list)")
        return count_onnx_macs(p, input_shapes)
    except MacCountError as e:
        log.info("no MACs in the card of %s: %s", p.name, e)
        return None
