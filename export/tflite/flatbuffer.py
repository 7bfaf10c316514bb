"""Small, checked edits of a ``.tflite`` flatbuffer: I/O names, uint8 I/O, operator listing.

litert-torch names a model's tensors ``serving_default_args_0`` / ``…_output_0_output``;
:func:`rename_io` gives them (and the signature keys) the source model's names, so one model
card describes the ONNX and the TFLite variant alike and decoders can look outputs up by name.

:func:`to_uint8_io` turns a full-integer model with int8 inputs/outputs into one with uint8
inputs/outputs by adding a requantising ``QUANTIZE`` op at each end (uint8 ↔ int8 with the same
scale and the zero point shifted by 128) — what TensorFlow's converter does for
``inference_input_type=tf.uint8``. Both work on the flatbuffer object API shipped with
ai-edge-litert (``ai_edge_litert.tools.flatbuffer_utils``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from export.onnx.from_torch import ExportError

__all__ = ["OpInfo", "rename_io", "names_from_signature", "float_outputs", "to_uint8_io", "list_ops", "io_types",
           "UINT8_ZERO_POINT_SHIFT"]

#: uint8 = int8 + 128, with the same scale (the zero point moves by the same amount).
UINT8_ZERO_POINT_SHIFT = 128
#: litert-torch's positional signature keys.
_POSITIONAL = re.compile(r"^(?:args|output)_(\d+)$")
#: QUANTIZE version that requantises between 8-bit types (TFLite's op version table).
_QUANTIZE_VERSION = 2


def _fb():
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    return schema, flatbuffer_utils


def _read(data: bytes):
    _, fu = _fb()
    return fu.read_model_from_bytearray(bytearray(data))


def _write(model) -> bytes:
    _, fu = _fb()
    return bytes(fu.convert_object_to_bytearray(model))


def _name(tensor) -> str:
    n = tensor.name
    return n.decode() if isinstance(n, bytes) else str(n)


def rename_io(data: bytes, input_names: Sequence[str], output_names: Sequence[str], model_name: str = "model") -> bytes:
    """Rename the main subgraph's input/output tensors and the signature keys, in order.

    Raises:
        ExportError: the counts differ from the model's.
    """
    model = _read(data)
    sg = model.subgraphs[0]
    if len(sg.inputs) != len(input_names) or len(sg.outputs) != len(output_names):
        raise ExportError(f"{model_name}: TFLite has {len(sg.inputs)} input(s)/{len(sg.outputs)} output(s), "
                          f"the source {len(input_names)}/{len(output_names)}")
    # litert-torch's signature keys are args_<k> / output_<k> in the torch call's order, but the
    # signature lists them sorted as strings (output_10 before output_2): order them by k.
    sig = model.signatureDefs[0] if model.signatureDefs else None
    if sig is not None:
        sig.inputs = _by_position(sig.inputs)
        sig.outputs = _by_position(sig.outputs)
    in_idx = [t.tensorIndex for t in sig.inputs] if sig else list(sg.inputs)
    out_idx = [t.tensorIndex for t in sig.outputs] if sig else list(sg.outputs)
    for idx, name in zip(in_idx, input_names):
        sg.tensors[idx].name = name.encode()
    for idx, name in zip(out_idx, output_names):
        sg.tensors[idx].name = name.encode()
    if sig is not None:
        for t, name in zip(sig.inputs, input_names):
            t.name = name.encode()
        for t, name in zip(sig.outputs, output_names):
            t.name = name.encode()
    sg.inputs, sg.outputs = in_idx, out_idx
    return _write(model)


def names_from_signature(data: bytes) -> bytes:
    """Give every input/output tensor its signature key as name (undoing a quantiser's renaming).

    When an operator that produces a model output is kept in float, ai-edge-quantizer appends a
    QUANTIZE op whose output (``obj_8_quantized``) becomes the model output, while the signature
    key stays ``obj_8``. Decoders look outputs up by name, so the key is the name; a tensor that
    already carried it is renamed ``<name>_inner``.
    """
    model = _read(data)
    sg = model.subgraphs[0]
    if not model.signatureDefs:
        return data
    changed = False
    for entry in [*model.signatureDefs[0].inputs, *model.signatureDefs[0].outputs]:
        key = _name(entry)
        t = sg.tensors[entry.tensorIndex]
        if _name(t) == key:
            continue
        for other in sg.tensors:
            if other is not t and _name(other) == key:
                other.name = f"{key}_inner".encode()
        t.name = key.encode()
        changed = True
    return _write(model) if changed else data


def float_outputs(data: bytes) -> bytes:
    """Drop the QUANTIZE ops that turn a float model output back into int8.

    When the operators producing an output are kept in float, ai-edge-quantizer still quantises
    the output (int8 I/O); for a model whose one output mixes ranges (YOLOX: box offsets and class
    probabilities) that final rounding alone loses the probabilities. The float tensor becomes
    the output again; other outputs are left as they are.
    """
    schema, fu = _fb()
    model = _read(data)
    sg = model.subgraphs[0]
    consumers: dict[int, int] = {}
    for op in sg.operators:
        for t in op.inputs:
            consumers[t] = consumers.get(t, 0) + 1
    producer = {op.outputs[0]: (i, op) for i, op in enumerate(sg.operators) if op.outputs}
    drop: set[int] = set()
    remap: dict[int, int] = {}
    for out in sg.outputs:
        hit = producer.get(out)
        if hit is None or fu.opcode_to_name(model, hit[1].opcodeIndex) != "QUANTIZE":
            continue
        src = hit[1].inputs[0]
        if sg.tensors[src].type != schema.TensorType.FLOAT32 or consumers.get(out, 0):
            continue
        drop.add(hit[0])
        remap[out] = src
    if not drop:
        return data
    sg.operators = [op for i, op in enumerate(sg.operators) if i not in drop]
    sg.outputs = [remap.get(t, t) for t in sg.outputs]
    for sig in model.signatureDefs or []:
        for entry in sig.outputs:
            entry.tensorIndex = remap.get(entry.tensorIndex, entry.tensorIndex)
    return names_from_signature(_write(model))


def _by_position(entries: list) -> list:
    """Signature entries sorted by the number in ``args_<k>`` / ``output_<k>`` (else unchanged)."""
    keys = [_POSITIONAL.match(_name(e)) for e in entries]
    if not all(keys):
        return list(entries)
    return [e for _, e in sorted(zip((int(k.group(1)) for k in keys), entries), key=lambda p: p[0])]


def _opcode_index(model, schema, builtin: int, version: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the pre-v3 field holds codes < 127 only
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _uint8_twin(schema, t, name: str):
    """A uint8 tensor with ``t``'s shape and scale and the zero point shifted by 128."""
    u = schema.TensorT()
    u.name = name.encode()
    u.shape = list(t.shape)
    u.shapeSignature = list(t.shapeSignature) if t.shapeSignature is not None else None
    u.type = schema.TensorType.UINT8
    u.buffer = t.buffer  # activation tensors share the empty buffer
    q = schema.QuantizationParametersT()
    q.scale = [float(s) for s in t.quantization.scale]
    q.zeroPoint = [int(z) + UINT8_ZERO_POINT_SHIFT for z in t.quantization.zeroPoint]
    q.quantizedDimension = 0
    u.quantization = q
    return u


def to_uint8_io(data: bytes, model_name: str = "model") -> bytes:
    """Wrap a full-integer model with int8 I/O so that its inputs and outputs are uint8.

    Raises:
        ExportError: an input or output is not a per-tensor quantised int8 tensor.
    """
    schema, _ = _fb()
    model = _read(data)
    sg = model.subgraphs[0]
    quant = _opcode_index(model, schema, schema.BuiltinOperator.QUANTIZE, _QUANTIZE_VERSION)
    for idx in [*sg.inputs, *sg.outputs]:
        t = sg.tensors[idx]
        q = t.quantization
        if t.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
            raise ExportError(f"{model_name}: uint8 I/O needs per-tensor int8 inputs/outputs; tensor "
                              f"{_name(t)!r} has type {t.type} and {0 if q is None or q.scale is None else len(q.scale)} scale(s)")
    remap: dict[int, int] = {}

    def requantise(idx: int, into_graph: bool):
        """A uint8 twin of tensor ``idx`` (taking its name) and the QUANTIZE op between the two."""
        t = sg.tensors[idx]
        name = _name(t)
        t.name = f"{name}_int8".encode()
        sg.tensors.append(_uint8_twin(schema, t, name))
        remap[idx] = len(sg.tensors) - 1
        op = schema.OperatorT()
        op.opcodeIndex = quant
        op.inputs, op.outputs = ([remap[idx]], [idx]) if into_graph else ([idx], [remap[idx]])
        return op

    front = [requantise(idx, True) for idx in sg.inputs]
    back = [requantise(idx, False) for idx in sg.outputs]
    sg.operators = front + list(sg.operators) + back
    sg.inputs = [remap[i] for i in sg.inputs]
    sg.outputs = [remap[i] for i in sg.outputs]
    for sig in model.signatureDefs or []:
        for t in [*sig.inputs, *sig.outputs]:
            t.tensorIndex = remap.get(t.tensorIndex, t.tensorIndex)
    return _write(model)


@dataclass(frozen=True)
class OpInfo:
    """One operator of the main subgraph: position, type and the name of its first output."""

    index: int
    op: str
    output: str
    quantized: bool  # its first output is an integer tensor


def list_ops(path: str | Path) -> list[OpInfo]:
    """The operators of a ``.tflite`` file's main subgraph, in execution order."""
    schema, fu = _fb()
    model = _read(Path(path).read_bytes())
    sg = model.subgraphs[0]
    ints = (schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16, schema.TensorType.INT32)
    out = []
    for i, op in enumerate(sg.operators):
        t = sg.tensors[op.outputs[0]]
        out.append(OpInfo(i, fu.opcode_to_name(model, op.opcodeIndex) or "?", _name(t), t.type in ints))
    return out


def io_types(path: str | Path) -> tuple[list[str], list[str]]:
    """Type names (``FLOAT32``, ``INT8``, ``UINT8`` …) of the main subgraph's inputs and outputs."""
    _, fu = _fb()
    model = _read(Path(path).read_bytes())
    sg = model.subgraphs[0]
    return ([fu.type_to_name(sg.tensors[i].type) for i in sg.inputs],
            [fu.type_to_name(sg.tensors[i].type) for i in sg.outputs])
