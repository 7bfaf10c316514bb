"""Count a TFLite model's multiply-accumulates from its interpreter's op list.

The LiteRT interpreter exposes every op (name, input and output tensor indices) and every
tensor's shape and dtype, which is all a MAC count needs; no flatbuffer schema is required.
Tensor layouts follow the TFLite schema: CONV_2D weights ``[out, kh, kw, in/groups]``,
DEPTHWISE_CONV_2D weights ``[1, kh, kw, out]``, FULLY_CONNECTED weights ``[out, in]``,
TRANSPOSE_CONV inputs ``(output_shape, weights [out, kh, kw, in], input)``.

The precision an op runs at is read from its activation input: ``uint8``/``int8``/``int16``
mean integer kernels, ``float16`` half precision; float32 activations with dequantised fp16
or int8 weights (BlazeFace ships fp16 weights behind DEQUANTIZE ops) run in float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.bench.macs import MacCount
from edge.errors import ModelFormatError

__all__ = ["count_tflite_macs"]

_INT_TYPES = (np.uint8, np.int8, np.int16)


def _precision(dtype) -> str:
    if dtype in _INT_TYPES:
        return "int8"
    return "fp16" if dtype == np.float16 else "fp32"


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _op_macs(op: str, ins: list, outs: list, shapes: dict) -> tuple[int, int] | None:
    """(MACs, index of the activation input) of one op, or None when it carries none."""
    if op == "CONV_2D":
        w = shapes[ins[1]]
        return _prod(shapes[outs[0]]) * _prod(w[1:]), 0
    if op == "DEPTHWISE_CONV_2D":
        w = shapes[ins[1]]
        return _prod(shapes[outs[0]]) * int(w[1]) * int(w[2]), 0
    if op == "FULLY_CONNECTED":
        w = shapes[ins[1]]
        return _prod(shapes[outs[0]]) * int(w[-1]), 0
    if op == "TRANSPOSE_CONV":
        w = shapes[ins[1]]
        return _prod(shapes[ins[2]]) * int(w[0]) * int(w[1]) * int(w[2]), 2
    if op == "BATCH_MATMUL":
        a = shapes[ins[0]]
        return _prod(shapes[outs[0]]) * int(a[-1]), 0
    return None


def count_tflite_macs(path: str | Path) -> MacCount:
    """MACs of the ``.tflite`` file at ``path``.

    Raises:
        ImportError: no LiteRT interpreter is installed (``pip install 'edgesight[litert]'``).
        ModelFormatError: the interpreter cannot read the file.
    """
    from edge.engines.litert import _import_interpreter

    interpreter_cls, _ = _import_interpreter()
    try:
        it = interpreter_cls(model_path=str(path))
        ops = it._get_ops_details()  # noqa: SLF001 - the interpreter's only op listing
        tensors = it.get_tensor_details()
    except (ValueError, RuntimeError) as e:
        raise ModelFormatError(f"{path}: LiteRT cannot read it ({e})") from e
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in tensors}
    dtypes = {t["index"]: t["dtype"] for t in tensors}
    total, by_precision, by_op, uncounted = 0, {}, {}, []
    for op in ops:
        name = op["op_name"]
        ins, outs = [int(i) for i in op["inputs"]], [int(o) for o in op["outputs"]]
        try:
            res = _op_macs(name, ins, outs, shapes)
        except (KeyError, IndexError):
            uncounted.append(f"{name}:{op['index']}")
            continue
        if res is None:
            continue
        macs, act = res
        prec = _precision(dtypes.get(ins[act]))
        total += macs
        by_precision[prec] = by_precision.get(prec, 0) + macs
        by_op[name] = by_op.get(name, 0) + macs
    return MacCount(total, by_precision, by_op, tuple(uncounted), "tflite-ops")
