"""Make a fixed-size convolutional ``.tflite`` accept other input heights and widths.

litert-torch converts at one input size and writes every size it computed as a constant: a
``RESHAPE`` to ``[1, 6400, 1]`` where the ONNX graph said ``[1, -1, 1]``, a nearest-neighbour
``RESIZE`` to ``[40, 40]`` where it said "scale 2". LiteRT can resize the input tensor, but those
constants then contradict the new size (XNNPACK refuses the reshape). The face tracker searches a
region around the last face (:mod:`edge.face.tracking`), so a face detector must run at the
region's size — a 640×640 graph searches 640×640 pixels whatever the region.

:func:`make_resizable` rewrites exactly those constants and nothing else:

- ``RESHAPE`` ``[batch, h, w, c] → [batch, h·w, c]`` (the one target dimension that depends on
  the spatial size) gets ``-1`` there;
- ``RESIZE_NEAREST_NEIGHBOR`` by an integer factor ``k`` (no corner alignment) becomes
  ``CONCATENATION`` of ``k²`` copies along channels followed by ``DEPTH_TO_SPACE(k)`` — the same
  values, with no size in the graph, and both operators run in XNNPACK in float and int8;
- the inputs' shape signature gets ``-1`` for height and width.

Every other operator must be one whose output size follows from its input size alone
(:data:`SIZE_FREE_OPS`); anything else is refused, naming the operator. The rewritten model is
then checked: at the original size its outputs equal the original's exactly, and at a second size
(:func:`check_resizable`) they agree with the source ONNX run at that size.

Example:
    >>> data = make_resizable(Path("yunet_fp32.tflite").read_bytes(), "yunet")        # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from export.onnx.from_torch import ExportError
from export.onnx.prep import run_ort
from export.onnx.resizable import freed_copy, image_axes, probe_size
from export.tflite.flatbuffer import _fb, _name, _opcode_index, _read, _write

__all__ = ["SIZE_FREE_OPS", "make_resizable", "is_resizable", "check_resizable", "write_resizable"]

#: Operators whose output height/width follow from the input's (constants hold no size).
SIZE_FREE_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D",
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "LOGISTIC", "RELU", "RELU6", "RELU_N1_TO_1", "TANH",
    "HARD_SWISH", "PRELU", "LEAKY_RELU", "QUANTIZE", "DEQUANTIZE", "TRANSPOSE", "PAD", "PADV2",
    "CONCATENATION", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "ABS", "NEG",
})
#: Each DEPTH_TO_SPACE/CONCATENATION version that handles int8 (TFLite's op version table).
_D2S_VERSION = 2
_CONCAT_VERSION = 2


def _set_const(model, sg, idx: int, value: np.ndarray) -> None:
    """Give tensor ``idx`` its own buffer holding ``value`` (int32), leaving a shared buffer alone."""
    schema, _ = _fb()
    buf = schema.BufferT()
    buf.data = np.frombuffer(np.asarray(value, np.int32).tobytes(), np.uint8).copy()
    model.buffers.append(buf)
    sg.tensors[idx].buffer = len(model.buffers) - 1


def _spatial_axes(shape) -> tuple[int, int]:
    try:
        return image_axes(shape)
    except ValueError as e:
        raise ExportError(f"a resizable graph needs 4-D image inputs: {e}") from None


def make_resizable(data: bytes, model_name: str = "model") -> bytes:
    """Rewrite a float or quantised ``.tflite`` so its inputs may take any height and width.

    Raises:
        ExportError: an operator ties the graph to its size (named), or a reshape/resize is not of
            the forms described in the module docstring.
    """
    schema, fu = _fb()
    model = _read(data)
    if len(model.subgraphs) != 1:
        raise ExportError(f"{model_name}: {len(model.subgraphs)} subgraphs; a resizable graph needs one")
    sg = model.subgraphs[0]
    ops_out = []
    concat = d2s = None
    for op in sg.operators:
        name = fu.opcode_to_name(model, op.opcodeIndex)
        if name == "RESHAPE":
            _free_reshape(model, sg, op, model_name)
        elif name == "RESIZE_NEAREST_NEIGHBOR":
            if concat is None:
                concat = _opcode_index(model, schema, schema.BuiltinOperator.CONCATENATION, _CONCAT_VERSION)
                d2s = _opcode_index(model, schema, schema.BuiltinOperator.DEPTH_TO_SPACE, _D2S_VERSION)
            ops_out.extend(_nearest_as_depth_to_space(model, sg, op, concat, d2s, model_name))
            continue
        elif name not in SIZE_FREE_OPS:
            raise ExportError(f"{model_name}: operator {name} (output {_name(sg.tensors[op.outputs[0]])!r}) may "
                              "depend on the input size; the graph cannot be made resizable")
        ops_out.append(op)
    sg.operators = ops_out
    for idx in sg.inputs:
        t = sg.tensors[idx]
        hw = _spatial_axes(t.shape)
        sig = list(t.shape)
        for a in hw:
            sig[a] = -1
        t.shapeSignature = sig
    return _write(model)


def _free_reshape(model, sg, op, model_name: str) -> None:
    src = [int(d) for d in sg.tensors[op.inputs[0]].shape]
    out = sg.tensors[op.outputs[0]]
    target = [int(d) for d in out.shape]
    # [b, h, w, c] → [b, h·w, c]: the middle dimension is the one that changes with the size
    if len(src) != 4 or len(target) != 3 or target[0] != src[0] or target[2] != src[3] or target[1] != src[1] * src[2]:
        raise ExportError(f"{model_name}: RESHAPE {src} → {target} (output {_name(out)!r}) is not a flattening "
                          "of height × width; the graph cannot be made resizable")
    new = np.array([target[0], -1, target[2]], np.int32)
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        _set_const(model, sg, op.inputs[1], new)
    opts = op.builtinOptions
    if opts is not None and getattr(opts, "newShape", None) is not None:
        opts.newShape = [int(v) for v in new]
    out.shapeSignature = [int(v) for v in new]


def _nearest_as_depth_to_space(model, sg, op, concat: int, d2s: int, model_name: str) -> list:
    schema, _ = _fb()
    x = sg.tensors[op.inputs[0]]
    y = sg.tensors[op.outputs[0]]
    (_, h, w, c), (_, oh, ow, oc) = x.shape, y.shape
    opts = op.builtinOptions
    k = oh // h if h else 0
    if (k < 2 or oh != k * h or ow != k * w or oc != c or (opts is not None and opts.alignCorners)):
        raise ExportError(f"{model_name}: RESIZE_NEAREST_NEIGHBOR {list(x.shape)} → {list(y.shape)} (output "
                          f"{_name(y)!r}) is not an integer upscale without corner alignment; "
                          "the graph cannot be made resizable")
    qx, qy = x.quantization, y.quantization
    if qx is not None and qx.scale is not None and len(qx.scale):
        if list(qx.scale) != list(qy.scale) or list(qx.zeroPoint) != list(qy.zeroPoint):
            raise ExportError(f"{model_name}: RESIZE_NEAREST_NEIGHBOR {_name(y)!r} requantises; "
                              "the graph cannot be made resizable")
    tiled = schema.TensorT()
    tiled.name = f"{_name(y)}_tiled".encode()
    tiled.shape = [1, h, w, c * k * k]
    tiled.type = x.type
    tiled.buffer = 0  # an activation: the empty buffer
    tiled.quantization = qx
    sg.tensors.append(tiled)
    t_idx = len(sg.tensors) - 1
    cat = schema.OperatorT()
    cat.opcodeIndex = concat
    cat.inputs, cat.outputs = [op.inputs[0]] * (k * k), [t_idx]
    cat.builtinOptionsType = schema.BuiltinOptions.ConcatenationOptions
    cat.builtinOptions = schema.ConcatenationOptionsT()
    cat.builtinOptions.axis = 3
    up = schema.OperatorT()
    up.opcodeIndex = d2s
    up.inputs, up.outputs = [t_idx], list(op.outputs)
    up.builtinOptionsType = schema.BuiltinOptions.DepthToSpaceOptions
    up.builtinOptions = schema.DepthToSpaceOptionsT()
    up.builtinOptions.blockSize = k
    return [cat, up]


def is_resizable(path: str | Path) -> bool:
    """True when every input of the ``.tflite`` file declares a free height and width."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return all(sum(1 for s in d["shape_signature"] if s < 0) >= 2 for d in it.get_input_details())


def _run_tflite(path: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from edge.engines import load_engine

    with load_engine(path, backend="litert", threads=1) as eng:
        return eng.run(feeds)


def check_resizable(tflite_path: str | Path, onnx_src: str | Path, feed: Mapping[str, np.ndarray], tolerance,
                    *, size: tuple[int, int] | None = None):
    """Run a resizable ``.tflite`` and its float ONNX source at a size other than the original and compare.

    The input is ``feed`` (a real, preprocessed input at the original size) cropped to ``size``
    (default :func:`probe_size`) from its top-left corner; the ONNX source runs with its
    dimensions freed (its own graph). Returns the worst output's
    :class:`~export.variants.Agreement` under ``tolerance`` (check ``.passed``).

    Raises:
        ExportError: the model does not run at that size or an output's shape differs.
    """
    import onnx

    from export.variants import check_agreement

    p = Path(tflite_path)
    (name, x), = feed.items()
    h_ax, w_ax = _spatial_axes(x.shape)
    hw = size or probe_size(x.shape)
    crop = [slice(None)] * x.ndim
    crop[h_ax], crop[w_ax] = slice(0, hw[0]), slice(0, hw[1])
    x = np.ascontiguousarray(x[tuple(crop)])
    try:
        got = _run_tflite(p, {name: x})
    except Exception as e:  # noqa: BLE001 - any runtime failure at the new size is the finding
        raise ExportError(f"{p.name}: does not run at {hw[1]}×{hw[0]}: {e}") from e
    want = run_ort(freed_copy(onnx.load(str(onnx_src))), {name: x})
    for (k, ref), out in zip(want.items(), got.values()):
        if out.shape != ref.shape:
            raise ExportError(f"{p.name}: output {k!r} is {out.shape} at {hw[1]}×{hw[0]}, the ONNX source's {ref.shape}")
    return check_agreement(want, got, tolerance)


def write_resizable(path: str | Path, model_name: str = "model") -> Path:
    """Rewrite ``path`` in place (atomically) with :func:`make_resizable`; outputs at the original size
    must stay exactly as they were.

    Raises:
        ExportError: as :func:`make_resizable`, or the rewrite changed an output at the original size.
    """
    from ai_edge_litert.interpreter import Interpreter

    p = Path(path)
    before = p.read_bytes()
    after = make_resizable(before, model_name)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.stem, suffix=".resizable.tflite")
    os.close(fd)
    try:
        Path(tmp).write_bytes(after)
        d = Interpreter(model_path=str(p)).get_input_details()[0]
        info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
        rng = np.random.default_rng(1)
        x = (rng.integers(info.min, info.max + 1, d["shape"]) if info else rng.uniform(0, 255, d["shape"])).astype(d["dtype"])
        a, b = _raw_outputs(p, d["name"], x), _raw_outputs(Path(tmp), d["name"], x)
        for k in a:
            if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k]):
                raise ExportError(f"{p.name}: making it resizable changed output {k!r} at the original size")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def _raw_outputs(path: Path, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(next(d["index"] for d in it.get_input_details() if d["name"] == name), x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}
