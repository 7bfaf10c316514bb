"""Just enough of the protobuf wire format to fix one ONNX export habit, without the ``onnx`` package.

Old exporters list every weight (initialiser) as a graph input too, and some conversions leave
inputs that no node reads (the shared SFace fp32 file has 29 such dangling weight inputs).
onnxruntime then demands them as feeds ("Required inputs ... are missing") and OpenCV 5 refuses
the file. The fix is to drop those entries from ``graph.input``; initialisers stay initialisers,
so the output is unchanged. ``edge/`` must not import ``onnx`` (it is not installed on devices), so this module
reads and rewrites the two message levels involved directly.

The field numbers below, from onnx/onnx.proto (stable since IR version 3), are the one table the
device's ONNX readers share (this module, :mod:`edge.engines.onnx_prelu`,
:mod:`edge.bench.onnx_graph`).
"""

from __future__ import annotations

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
