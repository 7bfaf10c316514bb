"""Read an ONNX graph's structure (nodes, attributes, initialiser dims, input shapes) without ``onnx``.

``edge/`` must not import the ``onnx`` package (devices do not have it), so this module decodes
the few protobuf messages that describe a graph with the wire-format reader of
:mod:`edge.engines.onnx_wire`. Weights are never decoded: an initialiser contributes its dims and
element type, plus its values when it is small (shape vectors, Resize scales, Slice bounds),
which is all the shape propagation of :mod:`edge.bench.onnx_shapes` needs.

Field numbers are the shared table of :mod:`edge.engines.onnx_wire` (onnx/onnx.proto).

Example:
    >>> g = read_graph("yolox_nano_416.onnx")                 # doctest: +SKIP
    >>> g.inputs["images"], g.nodes[0].op_type                # doctest: +SKIP
    ((1, 3, 416, 416), 'Slice')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.engines.onnx_wire import (_I32, _I64, _LEN, _VARINT, ATTR_F, ATTR_FLOATS, ATTR_I, ATTR_INTS, ATTR_NAME, ATTR_S,
                                    ATTR_STRINGS, ATTR_T, DIM_VALUE, GRAPH_INITIALIZER, GRAPH_INPUT,
                                    GRAPH_NODE, GRAPH_OUTPUT, GRAPH_VALUE_INFO, MODEL_GRAPH, MODEL_OPSET_IMPORT,
                                    NODE_ATTRIBUTE, NODE_DOMAIN, NODE_INPUT, NODE_NAME, NODE_OP_TYPE, NODE_OUTPUT,
                                    OPSET_DOMAIN, OPSET_VERSION, SHAPE_DIM, TENSOR_DATA_TYPE, TENSOR_DIMS,
                                    TENSOR_DOUBLE_DATA, TENSOR_FLOAT_DATA, TENSOR_INT32_DATA, TENSOR_INT64_DATA,
                                    TENSOR_NAME, TENSOR_RAW_DATA, TENSOR_TYPE_ELEM, TENSOR_TYPE_SHAPE, TYPE_TENSOR,
                                    VALUE_INFO_NAME, VALUE_INFO_TYPE, _fields, _read_varint)
from edge.errors import ModelFormatError

__all__ = ["Graph", "Node", "TensorMeta", "read_graph", "parse_graph", "ONNX_DTYPES", "SMALL_TENSOR_ELEMENTS"]

#: ONNX TensorProto.DataType -> numpy dtype (the element types these graphs use).
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
FLOAT16 = 10

#: Initialisers and constants with at most this many elements are decoded (shape vectors,
#: scales, slice bounds); larger ones (weights) keep only their dims.
SMALL_TENSOR_ELEMENTS = 64

_INT64_WRAP = 1 << 64
_INT64_SIGN = 1 << 63


@dataclass(frozen=True)
class TensorMeta:
    """What is known about one tensor: its shape (``None`` dims unknown), element type, small value."""

    shape: tuple | None
    dtype: int = 1
    value: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Node:
    """One graph node: op type, input and output names (``""`` = omitted optional), attributes."""

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict, compare=False)
    name: str = ""
    domain: str = ""


@dataclass(frozen=True)
class Graph:
    """The parts of an ONNX model that MAC counting and shape propagation need.

    ``inputs`` holds the real graph inputs (initialisers listed as inputs are excluded) with
    their declared shapes (``None`` for a symbolic dim); ``value_info`` the shapes an exporter
    recorded for intermediate tensors, used only for ops the propagation does not know.
    """

    nodes: tuple[Node, ...]
    initializers: dict[str, TensorMeta]
    inputs: dict[str, TensorMeta]
    outputs: tuple[str, ...]
    value_info: dict[str, TensorMeta]
    opset: int


def _signed(v: int) -> int:
    return v - _INT64_WRAP if v >= _INT64_SIGN else v


def _varints(buf, a: int, b: int) -> list[int]:
    out, pos = [], a
    while pos < b:
        v, pos = _read_varint(buf, pos)
        out.append(_signed(v))
    return out


def _text(buf, a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("utf-8", "replace")


def _repeated_ints(msg, number: int) -> list[int]:
    """A repeated int64/int32 field, packed or not."""
    out: list[int] = []
    for f, wt, a, b, _ in _fields(msg):
        if f != number:
            continue
        if wt == _LEN:
            out.extend(_varints(msg, a, b))
        elif wt == _VARINT:
            out.append(_signed(_read_varint(msg, a)[0]))
    return out


def _repeated_floats(msg, number: int, fmt: str = "<f") -> list[float]:
    size = struct.calcsize(fmt)
    out: list[float] = []
    for f, wt, a, b, _ in _fields(msg):
        if f != number:
            continue
        if wt == _LEN:
            out.extend(x[0] for x in struct.iter_unpack(fmt, bytes(msg[a:b])))
        elif wt in (_I32, _I64):
            out.append(struct.unpack(fmt, bytes(msg[a:a + size]))[0])
    return out


def parse_tensor(msg) -> tuple[str, TensorMeta]:
    """Name and :class:`TensorMeta` of a ``TensorProto``; the value only when it is small."""
    name, dtype, raw = "", 1, None
    for f, wt, a, b, _ in _fields(msg):
        if f == TENSOR_NAME and wt == _LEN:
            name = _text(msg, a, b)
        elif f == TENSOR_DATA_TYPE and wt == _VARINT:
            dtype = _read_varint(msg, a)[0]
        elif f == TENSOR_RAW_DATA and wt == _LEN:
            raw = (a, b)
    dims = tuple(_repeated_ints(msg, TENSOR_DIMS))
    count = int(np.prod(dims)) if dims else 1
    value = None
    np_dtype = ONNX_DTYPES.get(dtype)
    if np_dtype is not None and count <= SMALL_TENSOR_ELEMENTS:
        if raw is not None:
            value = np.frombuffer(bytes(msg[raw[0]:raw[1]]), dtype=np.dtype(np_dtype).newbyteorder("<")).copy()
        elif dtype in (1, 10):
            value = np.asarray(_repeated_floats(msg, TENSOR_FLOAT_DATA) if dtype == 1
                               else _repeated_ints(msg, TENSOR_INT32_DATA), np.float32)
        elif dtype == 11:
            value = np.asarray(_repeated_floats(msg, TENSOR_DOUBLE_DATA, "<d"), np.float64)
        elif dtype == 7:
            value = np.asarray(_repeated_ints(msg, TENSOR_INT64_DATA), np.int64)
        else:
            value = np.asarray(_repeated_ints(msg, TENSOR_INT32_DATA), np_dtype)
        value = value.astype(np_dtype) if value.size == count else None
        if value is not None:
            value = value.reshape(dims)
    return name, TensorMeta(dims, dtype, value)


def _parse_attribute(msg) -> tuple[str, object]:
    name, value = "", None
    ints: list[int] | None = None
    floats: list[float] | None = None
    strings: list[str] = []
    for f, wt, a, b, _ in _fields(msg):
        if f == ATTR_NAME and wt == _LEN:
            name = _text(msg, a, b)
        elif f == ATTR_I and wt == _VARINT:
            value = _signed(_read_varint(msg, a)[0])
        elif f == ATTR_F and wt == _I32:
            value = struct.unpack("<f", bytes(msg[a:b]))[0]
        elif f == ATTR_S and wt == _LEN:
            value = _text(msg, a, b)
        elif f == ATTR_T and wt == _LEN:
            value = parse_tensor(msg[a:b])[1]
        elif f == ATTR_INTS:
            ints = (ints or []) + (_varints(msg, a, b) if wt == _LEN else [_signed(_read_varint(msg, a)[0])])
        elif f == ATTR_FLOATS:
            floats = (floats or []) + ([x[0] for x in struct.iter_unpack("<f", bytes(msg[a:b]))] if wt == _LEN
                                       else [struct.unpack("<f", bytes(msg[a:b]))[0]])
        elif f == ATTR_STRINGS and wt == _LEN:
            strings.append(_text(msg, a, b))
    if value is None:
        value = tuple(ints) if ints is not None else tuple(floats) if floats is not None else (
            tuple(strings) if strings else None)
    return name, value


def _parse_node(msg) -> Node:
    ins: list[str] = []
    outs: list[str] = []
    attrs: dict = {}
    op, name, domain = "", "", ""
    for f, wt, a, b, _ in _fields(msg):
        if wt != _LEN:
            continue
        if f == NODE_INPUT:
            ins.append(_text(msg, a, b))
        elif f == NODE_OUTPUT:
            outs.append(_text(msg, a, b))
        elif f == NODE_OP_TYPE:
            op = _text(msg, a, b)
        elif f == NODE_NAME:
            name = _text(msg, a, b)
        elif f == NODE_DOMAIN:
            domain = _text(msg, a, b)
        elif f == NODE_ATTRIBUTE:
            k, v = _parse_attribute(msg[a:b])
            attrs[k] = v
    return Node(op, tuple(ins), tuple(outs), attrs, name, domain)


def _parse_value_info(msg) -> tuple[str, TensorMeta]:
    name, dtype, dims = "", 1, None
    for f, wt, a, b, _ in _fields(msg):
        if f == VALUE_INFO_NAME and wt == _LEN:
            name = _text(msg, a, b)
        elif f == VALUE_INFO_TYPE and wt == _LEN:
            for f2, wt2, a2, b2, _ in _fields(msg[a:b]):
                if f2 != TYPE_TENSOR or wt2 != _LEN:
                    continue
                tt = msg[a:b][a2:b2]
                for f3, wt3, a3, b3, _ in _fields(tt):
                    if f3 == TENSOR_TYPE_ELEM and wt3 == _VARINT:
                        dtype = _read_varint(tt, a3)[0]
                    elif f3 == TENSOR_TYPE_SHAPE and wt3 == _LEN:
                        dims = []
                        for f4, wt4, a4, b4, _ in _fields(tt[a3:b3]):
                            if f4 == SHAPE_DIM and wt4 == _LEN:
                                dim_msg = tt[a3:b3][a4:b4]
                                v = [_read_varint(dim_msg, a5)[0] for f5, wt5, a5, b5, _ in _fields(dim_msg)
                                     if f5 == DIM_VALUE and wt5 == _VARINT]
                                dims.append(int(v[0]) if v and v[0] > 0 else None)
    return name, TensorMeta(tuple(dims) if dims is not None else None, dtype)


def parse_graph(model_bytes: bytes, *, origin: str = "model") -> Graph:
    """Parse serialized ``ModelProto`` bytes into a :class:`Graph`.

    Raises:
        ModelFormatError: the bytes are not an ONNX model (no graph, or a broken message).
    """
    mv = memoryview(model_bytes)
    graph_span, opset = None, 0
    try:
        for f, wt, a, b, _ in _fields(mv):
            if f == MODEL_GRAPH and wt == _LEN:
                graph_span = (a, b)
            elif f == MODEL_OPSET_IMPORT and wt == _LEN:
                domain, version = "", 0
                for f2, wt2, a2, b2, _ in _fields(mv[a:b]):
                    if f2 == OPSET_DOMAIN and wt2 == _LEN:
                        domain = _text(mv[a:b], a2, b2)
                    elif f2 == OPSET_VERSION and wt2 == _VARINT:
                        version = _read_varint(mv[a:b], a2)[0]
                if domain in ("", "ai.onnx"):
                    opset = version
        if graph_span is None:
            raise ModelFormatError(f"{origin}: not an ONNX model (no graph)")
        g = mv[graph_span[0]:graph_span[1]]
        nodes, inits, declared, outputs, value_info = [], {}, [], [], {}
        for f, wt, a, b, _ in _fields(g):
            if wt != _LEN:
                continue
            if f == GRAPH_NODE:
                nodes.append(_parse_node(g[a:b]))
            elif f == GRAPH_INITIALIZER:
                name, meta = parse_tensor(g[a:b])
                inits[name] = meta
            elif f == GRAPH_INPUT:
                declared.append(_parse_value_info(g[a:b]))
            elif f == GRAPH_OUTPUT:
                outputs.append(_parse_value_info(g[a:b])[0])
            elif f == GRAPH_VALUE_INFO:
                name, meta = _parse_value_info(g[a:b])
                value_info[name] = meta
    except ValueError as e:  # truncated varint / message from the wire reader
        raise ModelFormatError(f"{origin}: broken ONNX protobuf ({e})") from e
    inputs = {n: m for n, m in declared if n not in inits}
    return Graph(tuple(nodes), inits, inputs, tuple(outputs), value_info, opset)


def read_graph(path: str | Path) -> Graph:
    """Parse the ONNX file at ``path``.

    Raises:
        FileNotFoundError: no such file.
        ModelFormatError: not an ONNX model.
    """
    p = Path(path)
    return parse_graph(p.read_bytes(), origin=str(p))
