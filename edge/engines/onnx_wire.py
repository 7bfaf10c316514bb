"""Just enough of the protobuf wire format to fix one ONNX export habit, without the ``onnx`` package.

Old exporters list every weight (initialiser) as a graph input too, and some conversions leave
inputs that no node reads (the shared SFace fp32 file has 29 such dangling weight inputs).
onnxruntime then demands them as feeds ("Required inputs ... are missing") and OpenCV 5 refuses
the file. The fix is to drop those entries from ``graph.input``; initialisers stay initialisers,
so the output is unchanged. ``edge/`` must not import ``onnx`` (it is not installed on devices), so this module
reads and rewrites the two message levels involved directly.

The field numbers below, from onnx/onnx.proto (stable since IR version 3), are the one table of
the device, and :func:`parse_node` / :func:`read_graph_info` its one node and graph reader
(used by :mod:`edge.engines.onnx_prelu` and the bare-model MAC fallback
:mod:`edge.bench.onnx_macs`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# ModelProto / OperatorSetIdProto
MODEL_OPSET_IMPORT, MODEL_GRAPH = 8, 7
OPSET_DOMAIN, OPSET_VERSION = 1, 2
# GraphProto
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
# NodeProto
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 3, 4, 5, 7
# AttributeProto
ATTR_NAME, ATTR_F, ATTR_I, ATTR_S, ATTR_T, ATTR_G, ATTR_FLOATS, ATTR_INTS, ATTR_STRINGS, ATTR_GRAPHS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 11)
ATTRIBUTE_G, ATTRIBUTE_GRAPHS = ATTR_G, ATTR_GRAPHS
# TensorProto
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_INT32_DATA = 1, 2, 4, 5
TENSOR_INT64_DATA, TENSOR_NAME, TENSOR_RAW_DATA, TENSOR_DOUBLE_DATA, TENSOR_DATA_LOCATION = 7, 8, 9, 10, 14
# ValueInfoProto / TypeProto / TypeProto.Tensor / TensorShapeProto / Dimension
VALUE_INFO_NAME, VALUE_INFO_TYPE = 1, 2
TYPE_TENSOR = 1
TENSOR_TYPE_ELEM, TENSOR_TYPE_SHAPE = 1, 2
SHAPE_DIM = 1
DIM_VALUE, DIM_PARAM = 1, 2

# wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes):
    """Yield ``(field_number, wire_type, payload_start, payload_end, record_start)`` per field."""
    pos = 0
    n = len(buf)
    while pos < n:
        start = pos
        key, pos = _read_varint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == _VARINT:
            _, pos2 = _read_varint(buf, pos)
            yield field, wt, pos, pos2, start
            pos = pos2
        elif wt == _I64:
            yield field, wt, pos, pos + 8, start
            pos += 8
        elif wt == _I32:
            yield field, wt, pos, pos + 4, start
            pos += 4
        elif wt == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > n:
                raise ValueError("truncated protobuf message")
            yield field, wt, pos, pos + length, start
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")


def _string_field(msg: bytes, number: int) -> str | None:
    for field, wt, a, b, _ in _fields(msg):
        if field == number and wt == _LEN:
            return bytes(msg[a:b]).decode("utf-8", "replace")
    return None


def removable_inputs(model_bytes: bytes) -> list[str]:
    """Graph inputs that are initialisers or that neither a node nor a graph output reads: they need
    no feed (old exporters list every weight as a graph input too: SFace, ULFD)."""
    graph = _graph(model_bytes)
    if graph is None:
        return []
    inits, inputs, nodes = _names(graph)
    used: set[str] = {_string_field(graph[a:b], VALUE_INFO_NAME) or "" for field, wt, a, b, _ in _fields(graph)
                      if field == GRAPH_OUTPUT and wt == _LEN}
    for node in nodes:
        _collect_node_inputs(node, used)
    return [n for n in inputs if n in inits or n not in used]


def _collect_node_inputs(node: bytes, acc: set[str]) -> None:
    """Add every input name a node reads, descending into If/Loop/Scan subgraphs."""
    for field, wt, a, b, _ in _fields(node):
        if wt != _LEN:
            continue
        if field == NODE_INPUT:
            acc.add(bytes(node[a:b]).decode("utf-8", "replace"))
        elif field == NODE_ATTRIBUTE:
            for f2, wt2, a2, b2, _ in _fields(node[a:b]):
                if wt2 == _LEN and f2 in (ATTRIBUTE_G, ATTRIBUTE_GRAPHS):
                    sub = node[a:b][a2:b2]
                    for f3, wt3, a3, b3, _ in _fields(sub):
                        if f3 == GRAPH_NODE and wt3 == _LEN:
                            _collect_node_inputs(sub[a3:b3], acc)


def _graph(model_bytes: bytes) -> memoryview | None:
    model_bytes = memoryview(model_bytes)  # slicing a memoryview copies nothing (weights are large)
    for field, wt, a, b, _ in _fields(model_bytes):
        if field == MODEL_GRAPH and wt == _LEN:
            return model_bytes[a:b]
    return None


def _names(graph: bytes) -> tuple[set[str], list[str], list[bytes]]:
    inits: set[str] = set()
    inputs: list[str] = []
    nodes: list[bytes] = []
    for field, wt, a, b, _ in _fields(graph):
        if wt != _LEN:
            continue
        if field == GRAPH_NODE:
            nodes.append(graph[a:b])
        elif field == GRAPH_INITIALIZER:
            name = _string_field(graph[a:b], TENSOR_NAME)
            if name:
                inits.add(name)
        elif field == GRAPH_INPUT:
            inputs.append(_string_field(graph[a:b], VALUE_INFO_NAME) or "")
    return inits, inputs, nodes


def strip_weight_inputs(model_bytes: bytes) -> tuple[bytes, list[str]]:
    """Drop :func:`removable_inputs` from ``graph.input``.

    Returns:
        ``(model_bytes, dropped_names)``; the bytes are the input object when nothing is dropped.
    """
    drop = set(removable_inputs(model_bytes))
    if not drop:
        return model_bytes, []
    graph = _graph(model_bytes)
    assert graph is not None
    new_graph = bytearray()
    dropped = 0
    for field, wt, a, b, start in _fields(graph):
        if field == GRAPH_INPUT and wt == _LEN and _string_field(graph[a:b], VALUE_INFO_NAME) in drop:
            dropped += 1
            continue
        new_graph += graph[start:b]
    out = bytearray()
    mv = memoryview(model_bytes)
    for field, wt, a, b, start in _fields(mv):
        if field == MODEL_GRAPH and wt == _LEN:
            out += _write_varint((MODEL_GRAPH << 3) | _LEN) + _write_varint(len(new_graph)) + new_graph
        else:
            out += mv[start:b]
    return bytes(out), sorted(drop)


# --- the one node and graph reader of edge/ (edge.engines.onnx_prelu, edge.bench.onnx_macs) --------

_INT64_WRAP, _INT64_SIGN = 1 << 64, 1 << 63


@dataclass(frozen=True)
class Node:
    """One graph node: op type, input and output names (``""`` = omitted optional), attributes.

    ``attrs`` holds int, float, string and their list attributes; tensor and graph attributes
    are left out (nothing on the device reads them).
    """

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict, compare=False)
    name: str = ""
    domain: str = ""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's shape as the file states it (``None`` dims symbolic, ``shape`` None unknown) and type."""

    shape: tuple | None
    dtype: int = 1


@dataclass(frozen=True)
class GraphInfo:
    """The structure of an ONNX graph, weights never decoded.

    Attributes:
        nodes: the top-level nodes, in file order.
        initializers: dims and element type of every initialiser.
        inputs: the real graph inputs (initialisers listed as inputs excluded), in order.
        stated: every shape the file states: graph inputs, outputs and ``value_info``.
        opset: the default-domain opset.
    """

    nodes: tuple[Node, ...]
    initializers: dict[str, TensorInfo]
    inputs: tuple[str, ...]
    stated: dict[str, TensorInfo]
    opset: int


def _signed(v: int) -> int:
    return v - _INT64_WRAP if v >= _INT64_SIGN else v


def _text(buf, a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("utf-8", "replace")


def _packed_or_single(msg, wt: int, a: int, b: int) -> list[int]:
    if wt == _VARINT:
        return [_signed(_read_varint(msg, a)[0])]
    out, pos = [], a
    while pos < b:
        v, pos = _read_varint(msg, pos)
        out.append(_signed(v))
    return out


def _parse_attribute(msg) -> tuple[str, object]:
    name, value, ints, floats, strings = "", None, None, None, []
    for f, wt, a, b, _ in _fields(msg):
        if f == ATTR_NAME and wt == _LEN:
            name = _text(msg, a, b)
        elif f == ATTR_I and wt == _VARINT:
            value = _signed(_read_varint(msg, a)[0])
        elif f == ATTR_F and wt == _I32:
            value = struct.unpack("<f", bytes(msg[a:b]))[0]
        elif f == ATTR_S and wt == _LEN:
            value = _text(msg, a, b)
        elif f == ATTR_INTS and wt in (_LEN, _VARINT):
            ints = (ints or []) + _packed_or_single(msg, wt, a, b)
        elif f == ATTR_FLOATS and wt in (_LEN, _I32):
            floats = (floats or []) + [x[0] for x in struct.iter_unpack("<f", bytes(msg[a:b]))]
        elif f == ATTR_STRINGS and wt == _LEN:
            strings.append(_text(msg, a, b))
    if value is None:
        value = tuple(ints) if ints is not None else tuple(floats) if floats is not None else (
            tuple(strings) if strings else None)
    return name, value


def parse_node(msg) -> Node:
    """A ``NodeProto``'s bytes as a :class:`Node`."""
    ins, outs, attrs, op, name, domain = [], [], {}, "", "", ""
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


def _tensor_info(msg) -> tuple[str, TensorInfo]:
    name, dtype, dims = "", 1, []
    for f, wt, a, b, _ in _fields(msg):
        if f == TENSOR_NAME and wt == _LEN:
            name = _text(msg, a, b)
        elif f == TENSOR_DATA_TYPE and wt == _VARINT:
            dtype = _read_varint(msg, a)[0]
        elif f == TENSOR_DIMS and wt in (_LEN, _VARINT):
            dims += _packed_or_single(msg, wt, a, b)
    return name, TensorInfo(tuple(dims), dtype)


def _value_info(msg) -> tuple[str, TensorInfo]:
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
                                dim = tt[a3:b3][a4:b4]
                                v = [_read_varint(dim, a5)[0] for f5, wt5, a5, _b5, _ in _fields(dim)
                                     if f5 == DIM_VALUE and wt5 == _VARINT]
                                dims.append(int(v[0]) if v and v[0] > 0 else None)
    return name, TensorInfo(tuple(dims) if dims is not None else None, dtype)


def default_opset(model) -> int | None:
    """The default-domain opset a ``ModelProto``'s bytes import, or None."""
    for field_no, wt, a, b, _ in _fields(model):
        if field_no == MODEL_OPSET_IMPORT and wt == _LEN:
            domain, version = "", None
            for f2, wt2, a2, b2, _ in _fields(model[a:b]):
                if f2 == OPSET_DOMAIN and wt2 == _LEN:
                    domain = _text(model[a:b], a2, b2)
                elif f2 == OPSET_VERSION and wt2 == _VARINT:
                    version = _read_varint(model[a:b], a2)[0]
            if domain in ("", "ai.onnx"):
                return version
    return None


def read_graph_info(model_bytes: bytes) -> GraphInfo:
    """The :class:`GraphInfo` of serialized ``ModelProto`` bytes.

    Raises:
        ValueError: not an ONNX model (no graph) or a broken protobuf message.
    """
    mv = memoryview(model_bytes)
    graph = _graph(mv)
    if graph is None:
        raise ValueError("not an ONNX model (no graph)")
    nodes, inits, declared, stated = [], {}, [], {}
    for f, wt, a, b, _ in _fields(graph):
        if wt != _LEN:
            continue
        if f == GRAPH_NODE:
            nodes.append(parse_node(graph[a:b]))
        elif f == GRAPH_INITIALIZER:
            name, info = _tensor_info(graph[a:b])
            inits[name] = info
        elif f in (GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO):
            name, info = _value_info(graph[a:b])
            stated[name] = info
            if f == GRAPH_INPUT:
                declared.append(name)
    return GraphInfo(tuple(nodes), inits, tuple(n for n in declared if n not in inits), stated,
                     default_opset(mv) or 0)
