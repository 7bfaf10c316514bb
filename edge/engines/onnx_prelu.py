"""Run ``PRelu`` on onnxruntime's fast kernels: the same function as ``x + (slope − 1) · Min(x, 0)``.

onnxruntime's CPU ``PRelu`` kernel broadcasts the per-channel slope element by element; it is
about 40 % of SFace's and two thirds of MobileFaceNet's fp32 time at one thread. ``Min``, ``Mul``
and ``Add`` with the same broadcast run on vectorised kernels. :func:`rewrite_prelu` swaps each
``PRelu`` whose slope is a float32 initialiser for those three nodes in the serialised model,
before the session is made — the file (and its sha256, which templates and cards are bound to)
is untouched; outputs agree to float rounding (``export.onnx.graph_opt.REWRITE_ATOL``, the same
rewrite ``edge-export`` applies to files).

Models with quantisation nodes are left alone (int8 graphs are judged as they were gated), as are
graphs with an opset below 8 (no multidirectional broadcasting in ``Min``).

Field numbers and the node reader: the shared ones of :mod:`edge.engines.onnx_wire` (onnx/onnx.proto).
"""

from __future__ import annotations

import numpy as np

from edge.engines.onnx_wire import (_LEN, _VARINT, GRAPH_INITIALIZER, GRAPH_NODE, MODEL_GRAPH, NODE_INPUT,
                                    NODE_NAME, NODE_OP_TYPE, NODE_OUTPUT, TENSOR_DATA_LOCATION, TENSOR_DATA_TYPE,
                                    TENSOR_DIMS, TENSOR_FLOAT_DATA, TENSOR_NAME, TENSOR_RAW_DATA, _fields, _graph,
                                    _read_varint, _write_varint, default_opset, parse_node)

__all__ = ["rewrite_prelu"]

FLOAT32 = 1
_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


def _len_field(number: int, payload: bytes) -> bytes:
    return _write_varint((number << 3) | _LEN) + _write_varint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    return _write_varint((number << 3) | _VARINT) + _write_varint(value)


def _node(op: str, inputs, outputs, name: str) -> bytes:
    msg = b"".join(_len_field(NODE_INPUT, i.encode()) for i in inputs)
    msg += b"".join(_len_field(NODE_OUTPUT, o.encode()) for o in outputs)
    return msg + _len_field(NODE_NAME, name.encode()) + _len_field(NODE_OP_TYPE, op.encode())


def _tensor(name: str, values: np.ndarray) -> bytes:
    v = np.ascontiguousarray(values, dtype="<f4")
    msg = b"".join(_varint_field(TENSOR_DIMS, int(d)) for d in v.shape)
    return msg + _varint_field(TENSOR_DATA_TYPE, FLOAT32) + _len_field(TENSOR_NAME, name.encode()) \
        + _len_field(TENSOR_RAW_DATA, v.tobytes())


def _float_initializer(msg) -> tuple[str | None, np.ndarray | None]:
    """``(name, values)`` of a float32 initialiser stored inline, else ``(name, None)``."""
    name, dims, dtype, raw, floats, external = None, [], None, None, None, False
    for field, wt, a, b, _ in _fields(msg):
        if field == TENSOR_NAME and wt == _LEN:
            name = bytes(msg[a:b]).decode("utf-8", "replace")
        elif field == TENSOR_DIMS:
            if wt == _VARINT:
                dims.append(_read_varint(msg, a)[0])
            elif wt == _LEN:  # packed
                pos, chunk = 0, bytes(msg[a:b])
                while pos < len(chunk):
                    d, pos = _read_varint(chunk, pos)
                    dims.append(d)
        elif field == TENSOR_DATA_TYPE and wt == _VARINT:
            dtype = _read_varint(msg, a)[0]
        elif field == TENSOR_RAW_DATA and wt == _LEN:
            raw = bytes(msg[a:b])
        elif field == TENSOR_FLOAT_DATA and wt == _LEN:
            floats = np.frombuffer(bytes(msg[a:b]), "<f4")
        elif field == TENSOR_DATA_LOCATION and wt == _VARINT and _read_varint(msg, a)[0] == 1:
            external = True
    if dtype != FLOAT32 or external:
        return name, None
    values = np.frombuffer(raw, "<f4") if raw is not None else floats
    n = int(np.prod(dims)) if dims else 1
    if values is None or values.size != n:
        return name, None
    return name, values.reshape(dims)


def rewrite_prelu(model_bytes: bytes) -> tuple[bytes, int]:
    """Replace each ``PRelu(x, slope)`` (float32 initialiser slope) by ``Add(x, Mul(Min(x, 0), slope − 1))``.

    Returns:
        ``(model_bytes, count)``; the input object itself when nothing is rewritten.
    """
    mv = memoryview(model_bytes)
    graph = _graph(mv)
    opset = default_opset(mv)
    if graph is None or opset is None or opset < 8:
        return model_bytes, 0
    slopes: dict[str, np.ndarray] = {}
    nodes = []
    for field, wt, a, b, _ in _fields(graph):
        if wt != _LEN:
            continue
        if field == GRAPH_INITIALIZER:
            name, values = _float_initializer(graph[a:b])
            if name and values is not None:
                slopes[name] = values
        elif field == GRAPH_NODE:
            nodes.append(parse_node(graph[a:b]))
    if any(n.op_type in _QUANT_OPS or n.op_type.startswith("QLinear") for n in nodes):
        return model_bytes, 0
    targets = {id(n) for n in nodes if n.op_type == "PRelu" and n.domain in ("", "ai.onnx")
               and len(n.inputs) == 2 and len(n.outputs) == 1 and n.inputs[1] in slopes}
    if not targets:
        return model_bytes, 0
    zero = "__edge_prelu_zero"
    new_graph = bytearray()
    node_iter = iter(nodes)
    extra_inits = [_tensor(zero, np.zeros((), np.float32))]
    made: set[str] = set()
    count = 0
    for field, wt, a, b, start in _fields(graph):
        if not (field == GRAPH_NODE and wt == _LEN):
            new_graph += graph[start:b]
            continue
        node = next(node_iter)
        if id(node) not in targets:
            new_graph += graph[start:b]
            continue
        (x, slope), (y,) = node.inputs, node.outputs
        slope_m1 = f"{slope}__edge_m1"
        if slope_m1 not in made:
            extra_inits.append(_tensor(slope_m1, slopes[slope].astype(np.float32) - np.float32(1.0)))
            made.add(slope_m1)
        base = node.name or y
        t_min, t_mul = f"{y}__edge_min", f"{y}__edge_mul"
        for op, ins, outs, suffix in (("Min", (x, zero), (t_min,), "min"), ("Mul", (t_min, slope_m1), (t_mul,), "mul"),
                                      ("Add", (x, t_mul), (y,), "add")):
            new_graph += _len_field(GRAPH_NODE, _node(op, ins, outs, f"{base}__edge_{suffix}"))
        count += 1
    for t in extra_inits:
        new_graph += _len_field(GRAPH_INITIALIZER, t)
    out = bytearray()
    for field, wt, a, b, start in _fields(mv):
        if field == MODEL_GRAPH and wt == _LEN:
            out += _len_field(MODEL_GRAPH, bytes(new_graph))
        else:
            out += mv[start:b]
    return bytes(out), count
