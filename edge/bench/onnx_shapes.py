"""Propagate tensor shapes (and small constant values) through an ONNX graph, without ``onnx``.

Covers the operators of the project's models and their usual neighbours: convolution and
pooling, Resize/Upsample, Concat/Split/Slice, Reshape/Flatten/Transpose/(Un)Squeeze, the
Shape→Gather→Unsqueeze→Concat chains that dynamic exporters emit, MatMul/Gemm, element-wise ops
with broadcasting, reductions, and the quantised QLinear*/Integer ops. Small integer tensors
are evaluated too, because Reshape and Slice take their shapes as inputs.

An op it does not know gets the shapes the exporter recorded in ``value_info`` when there are
any, else unknown shapes, which downstream MAC counting reports as uncounted.

Example:
    >>> metas = infer_shapes(read_graph("yolox_nano_416.onnx"))    # doctest: +SKIP
    >>> metas["output"].shape                                       # doctest: +SKIP
    (1, 3549, 85)
"""

from __future__ import annotations

import math

import numpy as np

from edge.bench.onnx_graph import ONNX_DTYPES, SMALL_TENSOR_ELEMENTS, Graph, Node, TensorMeta
from edge.bench.shape_rules import (BINARY, GLOBAL_POOLS, INT64, NP_BINARY, POOLS, REDUCES, UNARY, broadcast,
                                    conv_output, matmul_shape, norm_axis, value_list, window)

__all__ = ["infer_shapes", "conv_output", "broadcast"]


class _Propagator:
    def __init__(self, graph: Graph, input_shapes: dict | None) -> None:
        self.graph = graph
        self.metas: dict[str, TensorMeta] = dict(graph.initializers)
        for name, meta in graph.inputs.items():
            shape = (input_shapes or {}).get(name, meta.shape)
            self.metas[name] = TensorMeta(tuple(shape) if shape is not None else None, meta.dtype)

    def meta(self, node: Node, i: int) -> TensorMeta | None:
        if i >= len(node.inputs) or not node.inputs[i]:
            return None
        return self.metas.get(node.inputs[i])

    def shape(self, node: Node, i: int) -> tuple | None:
        m = self.meta(node, i)
        return m.shape if m is not None else None

    def dtype(self, node: Node, i: int = 0) -> int:
        m = self.meta(node, i)
        return m.dtype if m is not None else 1

    def attr_or_input(self, node: Node, attr: str, index: int) -> list | None:
        if attr in node.attrs and node.attrs[attr] is not None:
            return list(node.attrs[attr])
        return value_list(self.meta(node, index))

    def run(self) -> dict[str, TensorMeta]:
        for node in self.graph.nodes:
            try:
                outs = self.infer(node)
            except (ValueError, IndexError, TypeError, KeyError, AttributeError, ZeroDivisionError):
                outs = None
            if outs is None:
                outs = [self.graph.value_info.get(o, TensorMeta(None)) for o in node.outputs]
            for name, meta in zip(node.outputs, outs):
                if name:
                    if meta.value is not None and meta.value.size > SMALL_TENSOR_ELEMENTS:
                        meta = TensorMeta(meta.shape, meta.dtype)
                    self.metas[name] = meta
        return self.metas

    # -- per-op rules; each returns a list of TensorMeta (one per output) or None when unknown --

    def infer(self, node: Node) -> list[TensorMeta] | None:
        op = node.op_type
        handler = getattr(self, f"op_{op}", None)
        if handler is not None:
            return handler(node)
        x = self.meta(node, 0)
        if op in UNARY:
            dtype = self._dequant_dtype(node) if op == "DequantizeLinear" else (
                self.dtype(node, 2) if op == "QuantizeLinear" and self.meta(node, 2) is not None else
                (2 if op == "QuantizeLinear" else self.dtype(node)))
            value = x.value if op in ("Identity", "Dropout") and x is not None else None
            return [TensorMeta(x.shape if x else None, dtype, value)] + [TensorMeta(x.shape if x else None)] * (
                len(node.outputs) - 1)
        if op in BINARY:
            metas = [self.meta(node, i) for i in range(len(node.inputs))]
            shape = broadcast(*[m.shape if m else None for m in metas])
            value = None
            if op in NP_BINARY and all(m is not None and m.value is not None for m in metas):
                value = NP_BINARY[op](metas[0].value, metas[1].value)
            elif op == "Div" and all(m is not None and m.value is not None for m in metas):
                a, b = metas[0].value, metas[1].value
                value = a // b if np.issubdtype(a.dtype, np.integer) else a / b
            dtype = 9 if op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual") else (
                self.dtype(node, 1) if op == "Where" else self.dtype(node))
            return [TensorMeta(shape, dtype, value)]
        if op in POOLS:
            xs = x.shape
            kernel = tuple(node.attrs["kernel_shape"])
            shape = xs[:2] + window(node, xs, kernel)
            return [TensorMeta(shape, x.dtype)] * len(node.outputs)
        if op in GLOBAL_POOLS:
            return [TensorMeta(x.shape[:2] + (1,) * (len(x.shape) - 2), x.dtype)]
        if op in REDUCES:
            axes = self.attr_or_input(node, "axes", 1)
            keep = node.attrs.get("keepdims", 1)
            rank = len(x.shape)
            axes = [norm_axis(a, rank) for a in axes] if axes else list(range(rank))
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
            return [TensorMeta(shape, x.dtype)]
        return None

    def _dequant_dtype(self, node: Node) -> int:
        scale = self.meta(node, 1)
        return scale.dtype if scale is not None else 1

    def op_Constant(self, node: Node):
        a = node.attrs
        if isinstance(a.get("value"), TensorMeta):
            return [a["value"]]
        if "value_int" in a:
            return [TensorMeta((), INT64, np.asarray(a["value_int"], np.int64))]
        if "value_ints" in a:
            v = np.asarray(a["value_ints"], np.int64)
            return [TensorMeta(v.shape, INT64, v)]
        if "value_float" in a:
            return [TensorMeta((), 1, np.asarray(a["value_float"], np.float32))]
        if "value_floats" in a:
            v = np.asarray(a["value_floats"], np.float32)
            return [TensorMeta(v.shape, 1, v)]
        return None

    def op_Cast(self, node: Node):
        x = self.meta(node, 0)
        to = int(node.attrs.get("to", 1))
        value = x.value.astype(ONNX_DTYPES[to]) if x.value is not None and to in ONNX_DTYPES else None
        return [TensorMeta(x.shape, to, value)]

    def _conv(self, node: Node, x_i: int, w_i: int, dtype: int | None = None):
        xs, ws = self.shape(node, x_i), self.shape(node, w_i)
        kernel = tuple(node.attrs.get("kernel_shape") or ws[2:])
        shape = (xs[0], ws[0]) + window(node, xs, kernel)
        return [TensorMeta(shape, dtype if dtype is not None else self.dtype(node, x_i))]

    def op_Conv(self, node: Node):
        return self._conv(node, 0, 1)

    def op_ConvInteger(self, node: Node):
        return self._conv(node, 0, 1, 6)

    def op_QLinearConv(self, node: Node):
        return self._conv(node, 0, 3, self.dtype(node, 7))

    def op_ConvTranspose(self, node: Node):
        xs, ws = self.shape(node, 0), self.shape(node, 1)
        nsp = len(xs) - 2
        group = node.attrs.get("group", 1)
        kernel = tuple(node.attrs.get("kernel_shape") or ws[2:])
        strides = node.attrs.get("strides") or (1,) * nsp
        dil = node.attrs.get("dilations") or (1,) * nsp
        out_pad = node.attrs.get("output_padding") or (0,) * nsp
        if node.attrs.get("output_shape"):
            spatial = tuple(node.attrs["output_shape"])[-nsp:]
        else:
            pads = node.attrs.get("pads") or (0,) * (2 * nsp)
            auto = node.attrs.get("auto_pad", "NOTSET") or "NOTSET"
            spatial = tuple(
                None if xs[2 + i] is None else (xs[2 + i] * strides[i] if auto in ("SAME_UPPER", "SAME_LOWER") else
                                                strides[i] * (xs[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dil[i]
                                                + 1 - pads[i] - pads[i + nsp])
                for i in range(nsp))
        return [TensorMeta((xs[0], ws[1] * group) + spatial, self.dtype(node))]

    def op_MatMul(self, node: Node):
        return [TensorMeta(matmul_shape(self.shape(node, 0), self.shape(node, 1)), self.dtype(node))]

    def op_MatMulInteger(self, node: Node):
        return [TensorMeta(matmul_shape(self.shape(node, 0), self.shape(node, 1)), 6)]

    def op_QLinearMatMul(self, node: Node):
        return [TensorMeta(matmul_shape(self.shape(node, 0), self.shape(node, 3)), self.dtype(node, 7))]

    def op_Gemm(self, node: Node):
        a, b = self.shape(node, 0), self.shape(node, 1)
        m = a[1] if node.attrs.get("transA", 0) else a[0]
        n = b[0] if node.attrs.get("transB", 0) else b[1]
        return [TensorMeta((m, n), self.dtype(node))]

    def op_Resize(self, node: Node):
        x = self.meta(node, 0)
        rank = len(x.shape)
        axes = node.attrs.get("axes")
        sizes = value_list(self.meta(node, 3)) if len(node.inputs) > 3 else None
        scales = value_list(self.meta(node, 2 if self.graph.opset >= 11 else 1))
        axes = [norm_axis(a, rank) for a in axes] if axes else list(range(rank))
        shape = list(x.shape)
        if sizes:
            for a, s in zip(axes, sizes):
                shape[a] = int(s)
        elif scales:
            for a, s in zip(axes, scales):
                shape[a] = None if shape[a] is None else int(math.floor(shape[a] * s))
        else:
            return None
        return [TensorMeta(tuple(shape), x.dtype)]

    def op_Upsample(self, node: Node):
        x = self.meta(node, 0)
        scales = list(node.attrs.get("scales") or value_list(self.meta(node, 1)))
        return [TensorMeta(tuple(None if d is None else int(math.floor(d * s)) for d, s in zip(x.shape, scales)),
                           x.dtype)]

    def op_Concat(self, node: Node):
        metas = [self.meta(node, i) for i in range(len(node.inputs)) if node.inputs[i]]
        rank = len(metas[0].shape)
        axis = norm_axis(node.attrs.get("axis", 0), rank)
        shape = list(metas[0].shape)
        dims = [m.shape[axis] for m in metas]
        shape[axis] = None if any(d is None for d in dims) else sum(dims)
        value = None
        if all(m.value is not None for m in metas):
            value = np.concatenate([np.asarray(m.value) for m in metas], axis=axis)
        return [TensorMeta(tuple(shape), metas[0].dtype, value)]

    def op_Reshape(self, node: Node):
        x = self.meta(node, 0)
        target = node.attrs.get("shape") or value_list(self.meta(node, 1))
        if target is None:
            return None
        allowzero = node.attrs.get("allowzero", 0)
        shape = [x.shape[i] if (t == 0 and not allowzero) else t for i, t in enumerate(target)]
        if -1 in shape:
            known = [d for d in shape if d != -1]
            total = None if x.shape is None or None in x.shape else int(np.prod(x.shape))
            rest = int(np.prod(known)) if None not in known else None
            shape[shape.index(-1)] = None if total is None or rest in (None, 0) else total // rest
        value = np.asarray(x.value).reshape(shape) if x.value is not None and None not in shape else None
        return [TensorMeta(tuple(shape), x.dtype, value)]

    def op_Flatten(self, node: Node):
        x = self.meta(node, 0)
        axis = norm_axis(node.attrs.get("axis", 1), len(x.shape))

        def prod(ds):
            return None if None in ds else int(np.prod(ds))
        return [TensorMeta((prod(x.shape[:axis]), prod(x.shape[axis:])), x.dtype)]

    def op_Transpose(self, node: Node):
        x = self.meta(node, 0)
        perm = node.attrs.get("perm") or tuple(reversed(range(len(x.shape))))
        value = np.transpose(x.value, perm) if x.value is not None else None
        return [TensorMeta(tuple(x.shape[p] for p in perm), x.dtype, value)]

    def op_Squeeze(self, node: Node):
        x = self.meta(node, 0)
        axes = self.attr_or_input(node, "axes", 1)
        rank = len(x.shape)
        axes = {norm_axis(a, rank) for a in axes} if axes else {i for i, d in enumerate(x.shape) if d == 1}
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        value = np.asarray(x.value).reshape(shape) if x.value is not None else None
        return [TensorMeta(shape, x.dtype, value)]

    def op_Unsqueeze(self, node: Node):
        x = self.meta(node, 0)
        axes = self.attr_or_input(node, "axes", 1)
        rank = len(x.shape) + len(axes)
        axes = sorted(norm_axis(a, rank) for a in axes)
        shape = list(x.shape)
        for a in axes:
            shape.insert(a, 1)
        value = np.asarray(x.value).reshape(shape) if x.value is not None else None
        return [TensorMeta(tuple(shape), x.dtype, value)]

    def op_Shape(self, node: Node):
        x = self.meta(node, 0)
        dims = list(x.shape)
        start, end = node.attrs.get("start", 0), node.attrs.get("end", len(dims))
        dims = dims[start:end]
        value = np.asarray(dims, np.int64) if None not in dims else None
        return [TensorMeta((len(dims),), INT64, value)]

    def op_Size(self, node: Node):
        x = self.meta(node, 0)
        value = np.asarray(int(np.prod(x.shape)), np.int64) if x.shape is not None and None not in x.shape else None
        return [TensorMeta((), INT64, value)]

    def op_Gather(self, node: Node):
        data, idx = self.meta(node, 0), self.meta(node, 1)
        axis = norm_axis(node.attrs.get("axis", 0), len(data.shape))
        shape = data.shape[:axis] + idx.shape + data.shape[axis + 1:]
        value = None
        if data.value is not None and idx.value is not None:
            value = np.take(data.value, idx.value.astype(np.int64), axis=axis)
        return [TensorMeta(shape, data.dtype, value)]

    def op_Slice(self, node: Node):
        x = self.meta(node, 0)
        if self.graph.opset < 10:
            starts, ends, axes, steps = (node.attrs.get("starts"), node.attrs.get("ends"),
                                         node.attrs.get("axes"), None)
        else:
            starts, ends = value_list(self.meta(node, 1)), value_list(self.meta(node, 2))
            axes = value_list(self.meta(node, 3)) if len(node.inputs) > 3 and node.inputs[3] else None
            steps = value_list(self.meta(node, 4)) if len(node.inputs) > 4 and node.inputs[4] else None
        if starts is None or ends is None:
            return None
        rank = len(x.shape)
        axes = [norm_axis(a, rank) for a in (axes or range(len(starts)))]
        steps = steps or [1] * len(starts)
        shape = list(x.shape)
        index = [slice(None)] * rank
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[a] = slice(int(s), int(e), int(st))
            if shape[a] is not None:
                shape[a] = len(range(*index[a].indices(shape[a])))
        value = np.asarray(x.value)[tuple(index)] if x.value is not None else None
        return [TensorMeta(tuple(shape), x.dtype, value)]

    def op_Split(self, node: Node):
        x = self.meta(node, 0)
        axis = norm_axis(node.attrs.get("axis", 0), len(x.shape))
        split = self.attr_or_input(node, "split", 1)
        n = len(node.outputs)
        if not split:
            total = x.shape[axis]
            if total is None:
                return None
            chunk = -(-total // n)
            split = [chunk] * (n - 1) + [total - chunk * (n - 1)]
        return [TensorMeta(x.shape[:axis] + (int(s),) + x.shape[axis + 1:], x.dtype) for s in split]

    def op_Pad(self, node: Node):
        x = self.meta(node, 0)
        pads = self.attr_or_input(node, "pads", 1)
        rank = len(x.shape)
        axes = value_list(self.meta(node, 3)) if len(node.inputs) > 3 and node.inputs[3] else list(range(rank))
        shape = list(x.shape)
        for j, a in enumerate(norm_axis(a, rank) for a in axes):
            if shape[a] is not None:
                shape[a] += int(pads[j]) + int(pads[j + len(axes)])
        return [TensorMeta(tuple(shape), x.dtype)]

    def op_ArgMax(self, node: Node):
        x = self.meta(node, 0)
        axis = norm_axis(node.attrs.get("axis", 0), len(x.shape))
        keep = node.attrs.get("keepdims", 1)
        shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape) if keep or i != axis)
        return [TensorMeta(shape, INT64)]

    op_ArgMin = op_ArgMax

    def op_Tile(self, node: Node):
        x, reps = self.meta(node, 0), value_list(self.meta(node, 1))
        return [TensorMeta(tuple(None if d is None else d * int(r) for d, r in zip(x.shape, reps)), x.dtype)]

    def op_Expand(self, node: Node):
        x, target = self.meta(node, 0), value_list(self.meta(node, 1))
        return [TensorMeta(broadcast(x.shape, tuple(int(t) for t in target)), x.dtype)]

    def op_ConstantOfShape(self, node: Node):
        target = value_list(self.meta(node, 0))
        value = node.attrs.get("value")
        dtype = value.dtype if isinstance(value, TensorMeta) else 1
        return [TensorMeta(tuple(int(t) for t in target), dtype)]

    def op_DepthToSpace(self, node: Node):
        x, b = self.meta(node, 0), node.attrs["blocksize"]
        n, c, h, w = x.shape
        return [TensorMeta((n, c // (b * b), h * b, w * b), x.dtype)]

    def op_SpaceToDepth(self, node: Node):
        x, b = self.meta(node, 0), node.attrs["blocksize"]
        n, c, h, w = x.shape
        return [TensorMeta((n, c * b * b, h // b, w // b), x.dtype)]


def infer_shapes(graph: Graph, input_shapes: dict[str, tuple] | None = None) -> dict[str, TensorMeta]:
    """Shapes (and small values) of every tensor of ``graph``.

    Args:
        graph: from :func:`edge.bench.onnx_graph.read_graph`.
        input_shapes: concrete shapes for graph inputs with symbolic dims, e.g.
            ``{"input": (1, 3, 480, 640)}`` for a dynamic-size detector.

    Returns:
        tensor name → :class:`TensorMeta` (``shape`` ``None`` or with ``None`` dims where unknown).
    """
    return _Propagator(graph, input_shapes).run()
