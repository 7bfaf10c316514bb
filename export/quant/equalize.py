"""Channel equalisation across ``Conv → PRelu → Conv`` pairs, before per-tensor int8 activations.

Full-integer TFLite gives each activation tensor *one* scale. When the channels of a conv's
output span very different ranges, the narrow channels keep only a few of the 255 levels. PRelu
is positively homogeneous per channel (``prelu(a·x) = a·prelu(x)`` for ``a > 0``, whatever the
slope's sign), so channel ``c`` of the first conv can be divided by ``s_c`` (its weights and
bias) and the second conv's input channel ``c`` multiplied by ``s_c``: the function is unchanged
(float rounding only) and the activations between them are rescaled at will. This is the
cross-layer equalisation of Nagel et al., "Data-Free Quantization" (ICCV 2019), with the scale
chosen from the activations as in SmoothQuant (Xiao et al., 2023):

    s_c = r_c^α / w_c^(1−α)

where ``r_c`` is channel ``c``'s largest |value| over the calibration samples and ``w_c`` the
largest |weight| of the second conv's input channel ``c``. A depthwise second conv has int8
weights per channel ``c`` anyway, so there the activations are fully equalised (``α = 1``).
Only pairs with nothing else reading the middle tensors are rescaled.

Example:
    >>> n = equalize_prelu_chain("m.onnx", "m_eq.onnx", samples)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["equalize_prelu_chain", "ALPHA", "EQUALIZE_ID"]

#: SmoothQuant's migration strength for a dense (not depthwise) second conv.
ALPHA = 0.75
#: Recorded in reports: which rewrite made the quantised graph.
EQUALIZE_ID = "prelu_chain_equalisation_v1"
#: Channels that never reach this |value| on the calibration data keep their scale.
_TINY = 1e-6


def _pairs(graph, init: dict) -> list[tuple]:
    """``(conv1, prelu, conv2)`` nodes where conv1 → prelu → conv2 is private (no other reader)."""
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    out = []
    for n in graph.node:
        if n.op_type != "Conv" or n.input[1] not in init:
            continue
        r1 = readers.get(n.output[0], [])
        if len(r1) != 1 or r1[0].op_type != "PRelu" or n.output[0] in outputs:
            continue
        p = r1[0]
        r2 = readers.get(p.output[0], [])
        if len(r2) != 1 or r2[0].op_type != "Conv" or r2[0].input[1] not in init or p.output[0] in outputs:
            continue
        if p.input[1] not in init:
            continue
        out.append((n, p, r2[0]))
    return out


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _channel_ranges(model, tensors: Sequence[str], samples: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel max |value| (axis 1) of ``tensors`` over ``samples``, by onnxruntime."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in known:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = {t: None for t in tensors}
    for x in samples:
        for t, v in zip(tensors, sess.run(list(tensors), {name: np.asarray(x, np.float32)})):
            r = np.abs(v).max(axis=tuple(i for i in range(v.ndim) if i != 1))
            out[t] = r if out[t] is None else np.maximum(out[t], r)
    return out


def equalize_prelu_chain(src: str | Path, dst: str | Path, samples: Sequence[np.ndarray], *,
                         alpha: float = ALPHA) -> int:
    """Write ``src`` with every private ``Conv → PRelu → Conv`` pair channel-equalised.

    Args:
        src: float ``.onnx`` (weight inputs are dropped, as everywhere in export).
        dst: destination ``.onnx`` (written to a temporary name, then renamed).
        samples: real, preprocessed inputs of the model's (single) input — the calibration data.
        alpha: migration strength towards the activations for a dense second conv, in [0, 1].

    Returns:
        The number of pairs rescaled.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or no samples.
        ExportError: the rewritten graph fails ``onnx.checker``.
    """
    from onnx import numpy_helper

    from export.onnx.to_torch import load_onnx_model

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"equalize_prelu_chain: alpha must be in [0, 1], got {alpha}")
    if not len(samples):
        raise ValueError("equalize_prelu_chain: no calibration samples")
    m = load_onnx_model(src)
    init = {i.name: i for i in m.graph.initializer}
    arr = {k: numpy_helper.to_array(v).astype(np.float64) for k, v in init.items()}
    pairs = _pairs(m.graph, init)
    ranges = _channel_ranges(m, [c1.output[0] for c1, _, _ in pairs], samples)
    shared = {}
    for n in m.graph.node:
        for i in n.input:
            shared[i] = shared.get(i, 0) + 1
    done = 0
    for c1, p, c2 in pairs:
        w1, w2 = c1.input[1], c2.input[1]
        if any(shared.get(k, 0) != 1 for k in (w1, w2, p.input[1]) + tuple(c1.input[2:3])):
            continue  # a weight read by another node too: rescaling it would change that node
        r = ranges[c1.output[0]]
        if _group(c2) == 1:
            wc = np.abs(arr[w2]).max(axis=(0, 2, 3))
        elif _group(c2) == arr[w2].shape[0] == len(r):
            wc = None  # depthwise: int8 weights per channel, equalise the activations fully
        else:
            continue
        ok = r > _TINY
        if wc is None:
            s = np.where(ok, r / max(float(r[ok].max()) if ok.any() else 1.0, _TINY), 1.0)
        else:
            ok &= wc > _TINY
            s = np.where(ok, r ** alpha / np.maximum(wc, _TINY) ** (1.0 - alpha), 1.0)
            s = s / np.exp(np.mean(np.log(s[ok]))) if ok.any() else s
        arr[w1] = arr[w1] / s.reshape(-1, *([1] * (arr[w1].ndim - 1)))
        if len(c1.input) > 2 and c1.input[2]:
            arr[c1.input[2]] = arr[c1.input[2]] / s
        if wc is None:
            arr[w2] = arr[w2] * s.reshape(-1, 1, 1, 1)
        else:
            arr[w2] = arr[w2] * s.reshape(1, -1, 1, 1)
        done += 1
    for k, t in init.items():
        t.CopyFrom(numpy_helper.from_array(arr[k].astype(numpy_helper.to_array(t).dtype), k))
    from export.onnx.prep import save_checked

    out = save_checked(m, dst, f"channel equalisation of {src}")
    log.info("equalised %d Conv→PRelu→Conv pair(s) of %s into %s", done, src, out)
    return done
