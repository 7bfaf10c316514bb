"""MACs of a bare ONNX model (no card), from the shapes the file states: a deliberately small fallback.

The real count is made at export time with ``onnx`` (:mod:`export.onnx.macs`) and read from the
card's ``macs``. A model dropped on the device without a card gets only this: Conv / Gemm /
MatMul (and their integer / QLinear forms) whose weight is an initialiser and whose output shape
(input shape for ConvTranspose) the file itself states, as a graph output or in
``value_info``. There is no shape propagation.

What it cannot count (listed in :attr:`MacCount.uncounted` and shown by the bench report): any
such node whose shapes the file does not state, which in a file without ``value_info`` (most
exporters' output) is every node but those producing graph outputs; a node whose weight is
computed rather than stored; a graph input with a symbolic dim other than the batch (counted at
1). The total is then a lower bound, never a guess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.bench.macs import MacCount
from edge.engines.onnx_wire import read_graph_info
from edge.errors import ModelFormatError

__all__ = ["count_stated_onnx_macs"]

#: Ops counted, with the positions of their data and weight inputs.
MAC_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1),
           "Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_INTEGER_OPS = frozenset({"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul"})
FLOAT16 = 10


def count_stated_onnx_macs(path: str | Path) -> MacCount:
    """MACs of the nodes of an ONNX file whose shapes it states (see the module docstring).

    Raises:
        ModelFormatError: the file is not an ONNX model.
    """
    p = Path(path)
    try:
        g = read_graph_info(p.read_bytes())
    except ValueError as e:
        raise ModelFormatError(f"{p}: not a readable ONNX model ({e})") from e
    inputs = set(g.inputs)
    producers = {o: n for n in g.nodes for o in n.outputs}

    def shape(name: str):
        info = g.initializers.get(name) or g.stated.get(name)
        if info is None or info.shape is None:
            return None
        dims = list(info.shape)
        if dims and dims[0] is None and (name in inputs or name in producers):
            dims[0] = 1  # a symbolic batch counts one sample
        return None if any(d is None for d in dims) else dims

    total, by_precision, by_op, uncounted = 0, {}, {}, []
    for n in g.nodes:
        if n.op_type not in MAC_OPS or n.domain not in ("", "ai.onnx"):
            continue
        x_i, w_i = MAC_OPS[n.op_type]
        w = shape(n.inputs[w_i]) if n.inputs[w_i] in g.initializers else None
        x, out = shape(n.inputs[x_i]), shape(n.outputs[0])
        macs = _node_macs(n.op_type, n.attrs, x, w, out)
        if macs is None:
            uncounted.append(f"{n.op_type}:{n.name or n.outputs[0]}")
            continue
        src = producers.get(n.inputs[x_i])
        info = g.stated.get(n.inputs[x_i]) or g.initializers.get(n.inputs[w_i])
        if n.op_type in _INTEGER_OPS or (src is not None and src.op_type == "DequantizeLinear"):
            prec = "int8"
        else:
            prec = "fp16" if info is not None and info.dtype == FLOAT16 else "fp32"
        total += macs
        by_precision[prec] = by_precision.get(prec, 0) + macs
        by_op[n.op_type] = by_op.get(n.op_type, 0) + macs
    return MacCount(total, by_precision, by_op, tuple(uncounted), "onnx-stated-shapes")


def _node_macs(op: str, attrs: dict, x, w, out) -> int | None:
    """MACs of one node from its data, weight and output shapes (``None``: a shape is missing)."""
    if w is None:
        return None
    if op == "ConvTranspose":
        return int(np.prod(x)) * int(np.prod(w[1:])) if x is not None else None
    if out is None:
        return None
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if op == "Gemm":
        return int(np.prod(out)) * (w[1] if attrs.get("transB", 0) else w[0])
    return int(np.prod(out)) * w[-2] if len(w) >= 2 else None
