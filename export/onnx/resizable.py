"""Free the height and width of an image model's ONNX graph when every size in it is computed.

YuNet's fixed 640×640 file states 640 only in its input and output shapes: its ``Reshape`` nodes
say ``[1, -1, C]`` and its ``Resize`` nodes scale by 2. Declaring those dimensions symbolic lets
onnxruntime run it at any multiple of the stride — what the device's face tracker needs to search a
region around the last face (:mod:`edge.face.tracking`). :func:`free_image_size` does that and
proves it: the freed graph must run at a second size and give the same outputs at the original
size; otherwise the file is left as it was and the reason returned.

The TFLite counterpart (constants the converter wrote) is :mod:`export.tflite.resizable`.

Example:
    >>> free_image_size("out/yunet_fp32.onnx", "yunet")        # None: freed  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.onnx.prep import run_ort, save_checked

__all__ = ["PROBE_STEP", "image_axes", "probe_size", "freed_copy", "free_image_size"]

#: Second sizes are multiples of this (YuNet's coarsest stride; any detector's grid divides it).
PROBE_STEP = 32


def image_axes(shape) -> tuple[int, int]:
    """(height axis, width axis) of a 4-D image tensor: NCHW when the 2nd dimension looks like channels.

    Raises:
        ValueError: not 4-D.
    """
    shape = list(shape)
    if len(shape) != 4:
        raise ValueError(f"an image input is 4-D, got shape {shape}")
    dims = [d if isinstance(d, int) and d > 0 else 10 ** 6 for d in shape]  # a free dim is not channels
    return (2, 3) if dims[1] <= 4 < min(dims[2], dims[3]) else (1, 2)


def probe_size(shape) -> tuple[int, int]:
    """A second (height, width) to check a freed graph at: about 60 % and 45 % of the original, on the grid."""
    h_ax, w_ax = image_axes(shape)
    pick = lambda v, f: max(PROBE_STEP, int(int(v) * f) // PROBE_STEP * PROBE_STEP)  # noqa: E731
    return pick(shape[h_ax], 0.6), pick(shape[w_ax], 0.45)


def freed_copy(model):
    """A copy of ``model`` with the first input's height/width and every output's non-batch dims symbolic."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    first = next(v for v in m.graph.input if v.name not in inits)
    dims = first.type.tensor_type.shape.dim
    for a, label in zip(image_axes([d.dim_value for d in dims]), ("height", "width")):
        dims[a].ClearField("dim_value")
        dims[a].dim_param = label
    for out in m.graph.output:
        for k, d in enumerate(out.type.tensor_type.shape.dim):
            if k:
                d.ClearField("dim_value")
                d.dim_param = f"{out.name}_{k}"
    del m.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(m)


def free_image_size(path: str | Path, model_name: str = "model") -> str | None:
    """Free the input height and width of the ONNX file at ``path`` in place, when its graph allows it.

    Returns:
        ``None`` when the file now takes any size (checked at :func:`probe_size` and unchanged at
        its own size); else why not, with the file untouched (a graph with a stated size inside,
        e.g. a ``Reshape`` to ``[1, 6400, 1]`` or a ``Flatten`` into a fixed ``Gemm``).
    """
    import onnx

    p = Path(path)
    model = onnx.load(str(p))
    inits = {i.name for i in model.graph.initializer}
    first = next(v for v in model.graph.input if v.name not in inits)
    shape = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
    try:
        h_ax, w_ax = image_axes(shape)
    except ValueError as e:
        return str(e)
    if shape[h_ax] is None or shape[w_ax] is None:
        return None  # already free
    x = np.random.default_rng(0).uniform(0, 255, [d or 1 for d in shape]).astype(np.float32)
    small = list(x.shape)
    small[h_ax], small[w_ax] = probe_size(shape)
    try:
        freed = freed_copy(model)
        same = run_ort(freed, {first.name: x})
        want = run_ort(model, {first.name: x})
        run_ort(freed, {first.name: np.ascontiguousarray(x[tuple(slice(0, n) for n in small)])})
    except Exception as e:  # noqa: BLE001 - any failure at the second size is the reason
        return f"{model_name}: does not run at {small[w_ax]}×{small[h_ax]} with its size freed ({type(e).__name__}: {str(e)[:200]})"
    if any(not np.array_equal(want[k], same[k]) for k in want):
        return f"{model_name}: freeing the size changed its outputs at {shape[w_ax]}×{shape[h_ax]}"
    save_checked(freed, p, f"freeing the input size of {model_name}")
    return None
