"""The arithmetic of ONNX shape rules, shared by :mod:`edge.bench.onnx_shapes`: operator
families, numpy-style broadcasting with unknown dims, and convolution/pooling window sizes.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from edge.bench.onnx_graph import Node, TensorMeta

__all__ = ["INT64", "UNARY", "BINARY", "POOLS", "GLOBAL_POOLS", "REDUCES", "NP_BINARY", "broadcast",
           "conv_output", "matmul_shape", "window", "norm_axis", "value_list"]

INT64 = 7

UNARY = frozenset("""Identity Relu Sigmoid Tanh Clip LeakyRelu PRelu HardSigmoid HardSwish Exp Log Sqrt Neg Abs
Softmax LogSoftmax BatchNormalization InstanceNormalization LRN Erf Floor Ceil Round Not Elu Selu Softplus
Softsign Mish Gelu LayerNormalization Dropout Reciprocal Sign Sin Cos IsNaN QuantizeLinear DequantizeLinear
CumSum Hardmax Celu ThresholdedRelu Shrink""".split())
BINARY = frozenset("Add Sub Mul Div Pow Max Min Sum Mean Equal Greater Less GreaterOrEqual LessOrEqual And Or Xor "
                   "Where Mod BitShift".split())
POOLS = frozenset("MaxPool AveragePool LpPool".split())
GLOBAL_POOLS = frozenset("GlobalAveragePool GlobalMaxPool GlobalLpPool".split())
REDUCES = frozenset("ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
                    "ReduceLogSumExp ReduceSumSquare".split())
NP_BINARY: dict[str, Callable] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum,
                                   "Min": np.minimum, "Equal": np.equal, "Greater": np.greater, "Less": np.less}


def broadcast(*shapes: tuple | None) -> tuple | None:
    """Numpy-style broadcast of shapes with unknown (``None``) dims; ``None`` if any shape is unknown."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = [d for d in dims if d is not None and d != 1]
        if any(d is None for d in dims) and not known:
            out.append(None)
        else:
            out.append(known[0] if known else 1)
    return tuple(out)


def conv_output(size: int | None, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int,
                auto_pad: str = "NOTSET", ceil_mode: bool = False) -> int | None:
    """One spatial output size of a convolution or pooling window (ONNX's rules)."""
    if size is None:
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-size // stride)
    effective = dilation * (kernel - 1) + 1
    if auto_pad == "VALID":
        pad_begin = pad_end = 0
    span = size + pad_begin + pad_end - effective
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:  # last window must start inside the input
        out -= 1
    return out


def window(node: Node, x: tuple, kernel: tuple) -> tuple[int | None, ...]:
    nsp = len(kernel)
    strides = node.attrs.get("strides") or (1,) * nsp
    dil = node.attrs.get("dilations") or (1,) * nsp
    pads = node.attrs.get("pads") or (0,) * (2 * nsp)
    auto = node.attrs.get("auto_pad", "NOTSET") or "NOTSET"
    ceil = bool(node.attrs.get("ceil_mode", 0))
    return tuple(conv_output(x[2 + i], kernel[i], strides[i], dil[i], pads[i], pads[i + nsp], auto, ceil)
                 for i in range(nsp))


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def value_list(meta: TensorMeta | None) -> list | None:
    if meta is None or meta.value is None:
        return None
    return [x.item() for x in np.asarray(meta.value).reshape(-1)]


def matmul_shape(a: tuple, b: tuple) -> tuple:
    """Output shape of ``MatMul(a, b)`` (numpy matmul rules: 1-D operands, broadcast batch dims)."""
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    out = broadcast(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out
