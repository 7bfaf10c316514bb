"""AdaRound-style weight rounding: choose each int8 weight's rounding (down or up) to minimise
the layer's output error on calibration activations, instead of rounding to nearest.

Rounding to nearest minimises each weight's own error, not the layer's output error; AdaRound
(Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020)
learns, per weight, a soft rounding ``h(V) ∈ [0, 1]`` (rectified sigmoid) added to
``floor(W / s)``, minimising the layer's reconstruction error plus a regulariser that pushes
every ``h`` to 0 or 1 (its exponent ``β`` annealed from 20 to 2), then rounds hard.

What is cheaper here, and still AdaRound's objective: for a Conv/Gemm the output error of one
output channel ``o`` over the data is a quadratic form of its weights, so

    E ‖w_o · x_f − w̃_o · x_q‖² = w_o H_ff w_oᵀ − 2 w̃_o H_qf w_oᵀ + w̃_o H_qq w̃_oᵀ

with ``x_f`` the layer's input patches (im2col) in the float model, ``x_q`` the same patches in
the round-to-nearest quantised model (upstream rounding and the input's own quantisation
included: AdaRound's "asymmetric" reconstruction, with the inputs of one quantised pass rather
than re-run after every layer) and ``H`` their second-moment (Gram) matrices, accumulated once
per layer over the calibration images. Each optimisation step then costs one
``[Cout, D] × [D, D]`` product (``D`` = input channels per group × kernel area), not a
convolution over the images, so a whole model takes minutes on a 2-core CPU. The scales, zero
points and clipping range are those onnxruntime chose (read from the quantised model); only the
integers change, and every output channel keeps whichever of round-to-nearest and the learned
rounding has the lower error (the objective is exact per channel, so this can only help on the
calibration data).

The result is written into the quantised model's weight initialisers
(:func:`apply_rounding`); :func:`export.quant.quantize.quantize_onnx_int8` does that when
``QuantOptions.adaround`` is set, before and after bias correction.

Example:
    >>> ints, stats = adaround_weights("m_fp32.onnx", "m_int8.onnx", reader)        # doctest: +SKIP
    >>> qmodel = apply_rounding(onnx.load("m_int8.onnx"), ints)                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["AdaRoundOptions", "LayerRounding", "QuantisedWeight", "quantised_weights", "layer_grams",
           "optimise_rounding", "adaround_weights", "apply_rounding"]

#: Rectified sigmoid stretch (AdaRound's ζ and γ).
ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundOptions:
    """Limits of the rounding optimisation.

    Attributes:
        iterations: Adam steps per layer (AdaRound uses 10 000 on minibatches; the Gram form is
            exact, so a few hundred full-batch steps converge).
        learning_rate: Adam's step on ``V``.
        reg_weight: λ of the rounding regulariser, relative to the layer's round-to-nearest error
            (the reconstruction term is normalised by it, the regulariser by the weight count).
        warmup: share of the iterations without the regulariser.
        beta: the regulariser's exponent, annealed from the first to the second value.
        samples: calibration inputs used for the Gram matrices.
        damping: added to the diagonal of ``H_qq`` as a share of its mean diagonal, so a layer
            with fewer input positions than weights per channel (a classifier's Gemm on a few
            dozen images) is not fitted to the calibration images alone.
        min_positions_per_dim: layers with fewer input positions (images × output pixels) than
            this many per weight of an output channel keep round-to-nearest (too few samples to
            choose ``D`` roundings on).
        threads: torch threads.
    """

    iterations: int = 400
    learning_rate: float = 1e-2
    reg_weight: float = 0.01
    warmup: float = 0.2
    beta: tuple[float, float] = (20.0, 2.0)
    samples: int = 32
    damping: float = 0.01
    min_positions_per_dim: float = 4.0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.samples < 1 or self.threads < 1:
            raise ValueError("AdaRoundOptions: iterations, samples and threads must be >= 1")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"AdaRoundOptions.warmup must be in [0, 1), got {self.warmup}")
        if self.learning_rate <= 0 or self.reg_weight < 0 or self.damping < 0 or self.min_positions_per_dim < 0:
            raise ValueError("AdaRoundOptions: learning_rate > 0; reg_weight, damping, min_positions_per_dim >= 0")


@dataclass(frozen=True)
class QuantisedWeight:
    """One quantised Conv/Gemm weight of a QDQ model.

    ``ints`` is the stored integer tensor (initialiser ``init``), ``scale``/``zero_point``
    broadcast to its shape; ``lo``/``hi`` the integer range onnxruntime used for it.
    """

    node: str
    op_type: str
    float_weight: str  # the float model's initialiser name
    init: str
    ints: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    lo: int
    hi: int


@dataclass(frozen=True)
class LayerRounding:
    """What the optimisation did to one layer (output error on the calibration data)."""

    node: str
    weights: int
    changed: int  # integers that differ from round-to-nearest
    error_nearest: float  # E‖w·x_f − w̃·x_q‖² summed over output channels, round-to-nearest
    error_adaround: float  # the same with the chosen rounding
    skipped: str = ""

    def to_dict(self) -> dict:
        return {"node": self.node, "weights": self.weights, "changed": self.changed,
                "error_nearest": self.error_nearest, "error_adaround": self.error_adaround,
                "skipped": self.skipped}


def quantised_weights(float_model, qmodel) -> dict[str, QuantisedWeight]:
    """``{node name: QuantisedWeight}`` for every Conv/Gemm of ``qmodel`` whose weight is a
    ``DequantizeLinear`` of an integer initialiser and whose float weight ``float_model`` has."""
    from onnx import numpy_helper

    from export.quant.bias_correction import dequantize_params

    finit = {t.name for t in float_model.graph.initializer}
    fnodes = {n.name: n for n in float_model.graph.node}
    init = {t.name: t for t in qmodel.graph.initializer}
    prod = {o: n for n in qmodel.graph.node for o in n.output}
    out = {}
    for node in qmodel.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.name not in fnodes:
            continue
        fw = fnodes[node.name].input[1]
        dq = prod.get(node.input[1])
        if fw not in finit or dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in init:
            continue
        q = numpy_helper.to_array(init[dq.input[0]])
        if q.dtype not in (np.int8, np.uint8):
            continue
        scale, zero = dequantize_params(dq, init, q.shape)
        out[node.name] = QuantisedWeight(node.name, node.op_type, fw, dq.input[0], q, scale, zero,
                                         int(q.min()), int(q.max()))
    return out


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _patches(x: np.ndarray, node, weight_shape: tuple[int, ...]):
    """Input patches of a Conv/Gemm as ``[groups, D, positions]`` (torch), or None for a layout
    not handled (auto_pad, 1-D/3-D convolutions, transposed Gemm input)."""
    import torch
    import torch.nn.functional as F

    a = _attrs(node)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if node.op_type == "Gemm":
        if a.get("transA", 0):
            return None
        return t.reshape(-1, t.shape[-1]).T.unsqueeze(0)  # [1, K, N]
    if len(weight_shape) != 4 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    k = tuple(weight_shape[2:])
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if any(pads):
        t = F.pad(t, (pads[1], pads[3], pads[0], pads[2]))
    cols = F.unfold(t, k, dilation=tuple(a.get("dilations", [1, 1])), stride=tuple(a.get("strides", [1, 1])))
    g = int(a.get("group", 1))
    n, d, length = cols.shape  # d = C·kh·kw, channel-major: each group's block is contiguous
    return cols.reshape(n, g, d // g, length).permute(1, 2, 0, 3).reshape(g, d // g, n * length)


def layer_grams(float_path: str | Path, quant_path: str | Path, reader, nodes: list[str] | None = None, *,
                samples: int = 32) -> dict[str, tuple]:
    """Second moments of every quantised Conv/Gemm's input patches over calibration inputs.

    Returns:
        ``{node: (H_ff, H_qf, H_qq, positions)}``, each ``H`` a ``[groups, D, D]`` float64 torch
        tensor (``x_f`` float-model patches, ``x_q`` the quantised model's), ``positions`` the
        number of patches averaged.
    """
    import onnx

    from export.onnx.prep import session_with_outputs

    fm, qm = onnx.load(str(float_path)), onnx.load(str(quant_path))
    qw = quantised_weights(fm, qm)
    fnodes = {n.name: n for n in fm.graph.node}
    qnodes = {n.name: n for n in qm.graph.node}
    want = [n for n in (nodes if nodes is not None else qw) if n in qw]
    f_in = {n: fnodes[n].input[0] for n in want}
    q_in = {n: qnodes[n].input[0] for n in want}
    fs = session_with_outputs(fm, sorted(set(f_in.values())))
    qs = session_with_outputs(qm, sorted(set(q_in.values())), optimize=False)
    fnames, qnames = [o.name for o in fs.get_outputs()], [o.name for o in qs.get_outputs()]
    acc: dict[str, list] = {}
    count = min(samples, len(reader))
    for k in range(count):
        feeds = reader.feeds(k)
        fo = dict(zip(fnames, fs.run(None, {i.name: v for i, v in zip(fs.get_inputs(), feeds.values())})))
        qo = dict(zip(qnames, qs.run(None, {i.name: v for i, v in zip(qs.get_inputs(), feeds.values())})))
        for n in want:
            pf = _patches(fo[f_in[n]], fnodes[n], qw[n].ints.shape)
            if pf is None:
                continue
            pq = _patches(qo[q_in[n]], fnodes[n], qw[n].ints.shape).double()
            pf = pf.double()
            h = acc.setdefault(n, [0.0, 0.0, 0.0, 0])
            h[0] = h[0] + pf @ pf.transpose(1, 2)
            h[1] = h[1] + pq @ pf.transpose(1, 2)
            h[2] = h[2] + pq @ pq.transpose(1, 2)
            h[3] += pf.shape[2]
    return {n: (h[0] / h[3], h[1] / h[3], h[2] / h[3], h[3]) for n, h in acc.items()}


def _rows_by_group(rows: np.ndarray, groups: int):
    """``[Cout, D]`` -> ``[groups, Cout/groups, D]`` (output channels are group-major)."""
    return rows.reshape(groups, rows.shape[0] // groups, rows.shape[1])


def _channel_error(w, wt, hff, hqf, hqq):
    """Per output channel ``E‖w·x_f − w̃·x_q‖²`` for ``[G, C, D]`` weights (torch)."""
    a = (w @ hff * w).sum(-1)
    b = (wt @ hqf * w).sum(-1)
    c = (wt @ hqq * wt).sum(-1)
    return a - 2 * b + c


def _adam(v, base, s, z, hqq, cross, lo: float, hi: float, norm: float, options: AdaRoundOptions):
    """Adam on ``V`` with the gradient written out: the reconstruction term is quadratic, so its
    gradient is one product with ``H_qq`` (autograd would spend three).

    Loss: ``Σ_o (w̃_o H_qq w̃_oᵀ − 2 w̃_o · cross_o) / norm + λ · mean(1 − |2h − 1|^β)`` with
    ``w̃ = (clip(base + h(V)) − z) · s`` and ``cross = w · H_qfᵀ`` (the constant term dropped).
    """
    import torch

    m, u = torch.zeros_like(v), torch.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    warm = int(options.warmup * options.iterations)
    with torch.no_grad():
        for it in range(options.iterations):
            sig = torch.sigmoid(v)
            raw = sig * (ZETA - GAMMA) + GAMMA
            h = raw.clamp(0.0, 1.0)
            q = base + h
            wt = (q.clamp(lo, hi) - z) * s
            grad_h = 2.0 * (wt @ hqq - cross) / norm * s * ((q > lo) & (q < hi))
            if it >= warm:
                frac = (it - warm) / max(1, options.iterations - warm)
                beta = options.beta[1] + 0.5 * (options.beta[0] - options.beta[1]) * (1 + math.cos(math.pi * frac))
                d = 2 * h - 1
                grad_h -= options.reg_weight / h.numel() * 2.0 * beta * d.abs().pow(beta - 1) * torch.sign(d)
            g = grad_h * ((raw > 0) & (raw < 1)) * sig * (1 - sig) * (ZETA - GAMMA)
            m.mul_(b1).add_(g, alpha=1 - b1)
            u.mul_(b2).addcmul_(g, g, value=1 - b2)
            step = options.learning_rate * math.sqrt(1 - b2 ** (it + 1)) / (1 - b1 ** (it + 1))
            v -= step * m / (u.sqrt() + eps)
    return v


def optimise_rounding(weight: QuantisedWeight, node, float_weight: np.ndarray, grams: tuple,
                      options: AdaRoundOptions = AdaRoundOptions()) -> tuple[np.ndarray, LayerRounding]:
    """The integers of one layer chosen by AdaRound on its Gram matrices.

    Args:
        weight: the layer's round-to-nearest weight (scales, zero points, range).
        node: its ONNX node (Gemm's transB, Conv's group).
        float_weight: the float weight it was quantised from.
        grams: ``(H_ff, H_qf, H_qq, positions)`` from :func:`layer_grams`.
        options: optimisation limits.

    Returns:
        ``(integers shaped like weight.ints, LayerRounding)``; a channel keeps round-to-nearest
        where that has the lower output error.
    """
    import torch

    hff, hqf, hqq, positions = grams
    groups, d = hqq.shape[0], hqq.shape[1]
    transposed = weight.op_type == "Gemm" and not _attrs(node).get("transB", 0)

    def rows(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T) if transposed else a.reshape(a.shape[0], -1)

    def unrows(r: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(r.T) if transposed else r.reshape(weight.ints.shape)

    near = rows(weight.ints).astype(np.float64)
    info = dict(node=weight.node, weights=int(near.size))
    if near.shape[0] % groups or near.shape[1] != d:
        return weight.ints, LayerRounding(**info, changed=0, error_nearest=math.nan, error_adaround=math.nan,
                                          skipped=f"weight {near.shape} does not match its input patches (D={d})")
    s = rows(np.asarray(weight.scale, np.float64))
    z = rows(np.asarray(weight.zero_point, np.float64))
    wf = rows(float_weight.astype(np.float64))
    t = lambda a: _rows_by_group(torch.from_numpy(np.ascontiguousarray(a)), groups)  # noqa: E731
    W, S, Z, Q0 = t(wf), t(s), t(z), t(near)
    base = torch.floor(W / S) + Z  # the integer below w/s, zero point included
    deq = lambda q: (q - Z) * S  # noqa: E731
    err_near = _channel_error(W, deq(Q0), hff, hqf, hqq)
    if positions < options.min_positions_per_dim * d:
        return weight.ints, LayerRounding(**info, changed=0, error_nearest=float(err_near.sum()),
                                          error_adaround=float(err_near.sum()),
                                          skipped=f"{positions} input positions for {d} weights per channel")
    hqq_d = hqq + options.damping * torch.diagonal(hqq, dim1=1, dim2=2).mean(-1)[:, None, None] * \
        torch.eye(d, dtype=hqq.dtype)
    rest = (W / S - torch.floor(W / S)).clamp(0.01, 0.99)
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).float()
    lo, hi = float(weight.lo), float(weight.hi)
    v = _adam(v, base.float(), S.float(), Z.float(), hqq_d.float(), (W @ hqf.transpose(1, 2)).float(),
              lo, hi, float(err_near.sum()) or 1.0, options)
    with torch.no_grad():
        q = torch.clamp(base + (v.double() >= 0).double(), lo, hi)
        err_ada = _channel_error(W, deq(q), hff, hqf, hqq)
        keep = (err_ada < err_near)[..., None]  # per output channel: the better of the two
        chosen = torch.where(keep, q, Q0)
        err = torch.where(keep[..., 0], err_ada, err_near)
    out = chosen.reshape(-1, d).numpy()
    ints = unrows(np.rint(out)).astype(weight.ints.dtype)
    return ints, LayerRounding(**info, changed=int((ints != weight.ints).sum()),
                               error_nearest=float(err_near.sum()), error_adaround=float(err.sum()))


def adaround_weights(float_path: str | Path, quant_path: str | Path, reader,
                     options: AdaRoundOptions = AdaRoundOptions(), *, nodes: list[str] | None = None
                     ) -> tuple[dict[str, np.ndarray], list[LayerRounding]]:
    """AdaRound integers for the quantised Conv/Gemm weights of ``quant_path``.

    Args:
        float_path: the fp32 model ``quant_path`` was quantised from.
        quant_path: its round-to-nearest QDQ model (scales and ranges are kept).
        reader: calibration reader (``feeds(i)``, ``len()``).
        options: optimisation limits.
        nodes: only these node names (default: every quantised Conv/Gemm).

    Returns:
        ``({quantised weight initialiser name: integers}, [LayerRounding per layer])``.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    torch.set_num_threads(options.threads)
    fm, qm = onnx.load(str(float_path)), onnx.load(str(quant_path))
    qw = quantised_weights(fm, qm)
    finit = {t.name: t for t in fm.graph.initializer}
    fnodes = {n.name: n for n in fm.graph.node}
    t0 = time.perf_counter()
    grams = layer_grams(float_path, quant_path, reader, nodes, samples=options.samples)
    t1 = time.perf_counter()
    ints, stats = {}, []
    for name, g in grams.items():
        w = qw[name]
        q, st = optimise_rounding(w, fnodes[name], numpy_helper.to_array(finit[w.float_weight]), g, options)
        stats.append(st)
        if st.changed:
            ints[w.init] = q
    log.info("adaround: %d layer(s) (%d changed) in %.0f s (Gram matrices %.0f s), output error %.4g -> %.4g",
             len(stats), len(ints), time.perf_counter() - t0, t1 - t0,
              sum(s.error_nearest for s in stats if not math.isnan(s.error_nearest)),
              sum(s.error_adaround for s in stats if not math.isnan(s.error_adaround)))
    return ints, stats


def apply_rounding(qmodel, ints: dict[str, np.ndarray]):
    """``qmodel`` (modified in place and returned) with the named integer initialisers replaced.

    Raises:
        ValueError: a name the model does not have, or a shape or dtype that differs.
    """
    from onnx import numpy_helper

    index = {t.name: i for i, t in enumerate(qmodel.graph.initializer)}
    for name, q in ints.items():
        if name not in index:
            raise ValueError(f"apply_rounding: the quantised model has no initialiser {name!r}")
        old = numpy_helper.to_array(qmodel.graph.initializer[index[name]])
        if old.shape != q.shape or old.dtype != q.dtype:
            raise ValueError(f"apply_rounding: {name}: {q.dtype}{list(q.shape)} does not match the model's "
                             f"{old.dtype}{list(old.shape)}")
        qmodel.graph.initializer[index[name]].CopyFrom(numpy_helper.from_array(q, name))
    return qmodel
