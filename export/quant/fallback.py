"""Mixed-precision fallback: keep the layers that quantise worst in float until the gate passes.

The loop (:func:`quantize_with_fallback`):

1. pick the calibration method: quantise with each of ``methods`` (ranges cached per method)
   and keep the one whose gate score is best;
2. gate the all-int8 variant; if it passes, stop;
3. rank the quantised nodes by the damage they do (:func:`rank_nodes`): run the float and the
   quantised model on a few calibration inputs with every intermediate tensor as an output and
   measure, per node, how many dB of signal-to-quantisation-noise ratio (SQNR, float vs
   quantised tensor) are lost between its inputs and its output;
4. keep the worst not-yet-float nodes in float (``nodes_to_exclude``; 1, 2, 4, 8 … per round,
   by the search every int8 path shares, :func:`export.quant.float_search.grow_float_set`)
   and, when ``expand_inputs`` is set, the element-wise nodes feeding them, so that their input
   tensor is float too — excluding only a Conv leaves its input quantised by its producer;
5. re-quantise (calibration cached, ~1 s), gate, time, repeat until the gate passes, the
   round limit is reached or too large a share of the graph is float.

Every attempt is kept in :attr:`FallbackResult.attempts` with its float nodes, size, latency
and gate figures, so the report shows what each layer kept in float cost.

Example:
    >>> res = quantize_with_fallback("m_fp32.onnx", "m_int8.onnx", reader, gate)   # doctest: +SKIP
    >>> res.passed, res.float_nodes
    (True, ('/features/features.1/conv/conv.0/conv.0.0/Conv',))
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from export.gates.base import Gate, GateResult
from export.onnx.prep import session_with_outputs
from export.quant.calibration import FeedReader
from export.quant.float_search import grow_float_set
from export.quant.quantize import CalibrationMethod, QuantOptions, quantizable_op_types, quantize_onnx_int8
from export.select.timing import measure_latency

log = logging.getLogger(__name__)

__all__ = ["FallbackOptions", "Attempt", "FallbackResult", "NodeDamage", "rank_nodes", "quantize_with_fallback",
           "SQNR_CAP_DB", "COMPUTE_OPS"]

#: SQNR reported for a tensor without quantisation noise (and for graph inputs).
SQNR_CAP_DB = 100.0
#: An input SQNR counts for at most this in a node's damage: 8-bit rounding of a full-scale
#: signal gives ~6.02 · 8 = 48 dB, so a noiseless input (raw pixels, exactly representable)
#: does not make the first layer look 50 dB worse than it is.
DAMAGE_INPUT_CAP_DB = 48.0
#: Operators with weights: an island of float nodes grows backwards through other ops only.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Activations onnxruntime folds into the producer's output quantisation (kept with their producer).
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip"})
#: Suffix onnxruntime's QDQ quantiser gives the dequantised copy of a tensor.
DEQUANT_SUFFIX = "_DequantizeLinear_Output"
@dataclass(frozen=True)
class FallbackOptions:
    """Limits of the fallback loop.

    Attributes:
        methods: calibration methods tried first (the best by gate score is kept); empty:
            use ``QuantOptions.calibration`` only. ENTROPY is left out by default: its KL search
            takes minutes on a 2-core machine and clipped MobileNetV2 worse than MinMax here.
        max_rounds: re-quantisations after the all-int8 attempt.
        first_step: nodes kept float in the first round; the step doubles every round.
        max_float_fraction: stop before more than this share of the quantisable nodes is float.
        ranking_samples: calibration inputs used to rank nodes.
        expand_inputs: also keep float the element-wise nodes feeding a chosen node.
        threads / latency_runs: how each attempt's latency is measured (the fastest of the timed
            runs: the machine is shared, the minimum is the least disturbed figure).
    """

    methods: tuple[CalibrationMethod, ...] = (CalibrationMethod.MINMAX, CalibrationMethod.PERCENTILE)
    max_rounds: int = 6
    first_step: int = 1
    max_float_fraction: float = 0.5
    ranking_samples: int = 4
    expand_inputs: bool = True
    threads: int = 1
    latency_runs: int = 10

    def __post_init__(self) -> None:
        if self.max_rounds < 0 or self.first_step < 1 or self.ranking_samples < 1:
            raise ValueError("FallbackOptions: max_rounds >= 0, first_step >= 1 and ranking_samples >= 1 required")
        if not 0.0 < self.max_float_fraction <= 1.0:
            raise ValueError(f"FallbackOptions.max_float_fraction must be in (0, 1], got {self.max_float_fraction}")
        object.__setattr__(self, "methods", tuple(CalibrationMethod(m) for m in self.methods))


@dataclass(frozen=True)
class NodeDamage:
    """How much SQNR a node loses between its inputs and its output (float vs quantised model).

    Two SQNRs per tensor: against its energy (``sqnr_*_db``) and against its variation around
    each channel's mean (``centered_*_db``, the information it carries). The first finds a
    node that ruins a tensor dominated by its mean (YOLOX-Nano's sigmoid heads); the second one
    that keeps the mean but loses the information (destroyed weights plus bias correction).
    """

    node: str
    op_type: str
    sqnr_in_db: float
    sqnr_out_db: float
    centered_in_db: float = SQNR_CAP_DB
    centered_out_db: float = SQNR_CAP_DB

    @property
    def damage_db(self) -> float:
        """The larger of the two SQNR drops; a centred input already at or below 0 dB (no
        information left to lose) does not count."""
        drop = min(self.sqnr_in_db, DAMAGE_INPUT_CAP_DB) - self.sqnr_out_db
        if self.centered_in_db > 0.0:
            drop = max(drop, min(self.centered_in_db, DAMAGE_INPUT_CAP_DB) - max(self.centered_out_db, 0.0))
        return drop


@dataclass(frozen=True)
class Attempt:
    """One quantised variant tried by the loop."""

    label: str
    calibration: CalibrationMethod
    float_nodes: tuple[str, ...]
    gate: GateResult
    size: int
    latency_ms: float
    path: Path | None  # only the chosen attempt's file is kept

    def to_dict(self) -> dict:
        return {"label": self.label, "calibration": self.calibration.value, "float_nodes": list(self.float_nodes),
                "size": self.size, "latency_ms": round(self.latency_ms, 3), "passed": self.gate.passed,
                "metrics": self.gate.metrics, "failures": list(self.gate.failures)}


@dataclass(frozen=True)
class FallbackResult:
    """Outcome of :func:`quantize_with_fallback`.

    Attributes:
        path: the chosen variant (the first that passed, else the best-scoring attempt).
        passed: whether that variant passed its gate.
        chosen: the chosen :class:`Attempt`.
        attempts: every attempt, in order.
        float_size / float_latency_ms: the float model's, measured the same way.
        options: the quantisation options of the chosen variant (its ``nodes_to_exclude``).
        reason: one sentence for the report.
    """

    path: Path
    passed: bool
    chosen: Attempt
    attempts: tuple[Attempt, ...]
    float_size: int
    float_latency_ms: float
    options: QuantOptions
    reason: str
    ranking: tuple[NodeDamage, ...] = field(default_factory=tuple)

    @property
    def float_nodes(self) -> tuple[str, ...]:
        return self.chosen.float_nodes

    def to_dict(self) -> dict:
        first = self.attempts[0]
        return {"passed": self.passed, "reason": self.reason, "chosen": self.chosen.label,
                "calibration": self.chosen.calibration.value, "float_nodes": list(self.float_nodes),
                "float_size": self.float_size, "float_latency_ms": round(self.float_latency_ms, 3),
                "size": self.chosen.size, "latency_ms": round(self.chosen.latency_ms, 3),
                "speedup_vs_float": round(self.float_latency_ms / self.chosen.latency_ms, 3),
                "size_vs_float": round(self.chosen.size / self.float_size, 3),
                "cost_of_float_nodes": {"size_bytes": self.chosen.size - first.size,
                                        "latency_ms": round(self.chosen.latency_ms - first.latency_ms, 3)},
                "options": self.options.describe(),
                "attempts": [a.to_dict() for a in self.attempts]}


def rank_nodes(float_path: str | Path, quant_path: str | Path, reader: FeedReader, *, samples: int = 4,
               candidates: set[str] | None = None) -> list[NodeDamage]:
    """Rank the float model's nodes by the SQNR they lose in the quantised model, worst first.

    For a node, ``sqnr_in`` is the lowest SQNR of its activation inputs (float tensor vs the
    quantised model's dequantised copy) and ``sqnr_out`` the lowest of its outputs; the damage
    is the SQNR it loses (:attr:`NodeDamage.damage_db`, against the tensors' energy and against
    their variation around each channel's mean). A node whose own quantisation (weights,
    output rounding, an output range too coarse for the signal) hurts shows a large damage.

    Args:
        float_path: the fp32 model the variant was quantised from.
        quant_path: the QDQ variant.
        reader: calibration inputs; the first ``samples`` are used.
        samples: number of inputs.
        candidates: only rank these node names (default: every node of a quantisable type).

    Returns:
        ``NodeDamage`` list, largest damage first. Relu/Clip folded into their producer's output
        quantisation are not listed (their producer is, with their output's SQNR).
    """
    import onnx

    fm = onnx.load(str(float_path))
    qm = onnx.load(str(quant_path))
    inits = {i.name for i in fm.graph.initializer}
    graph_inputs = {i.name for i in fm.graph.input}
    tensors = [o for n in fm.graph.node for o in n.output if o]
    q_all = {o for n in qm.graph.node for o in n.output}
    q_name = {t: (t + DEQUANT_SUFFIX if t + DEQUANT_SUFFIX in q_all else t) for t in tensors if
              (t + DEQUANT_SUFFIX in q_all or t in q_all)}
    fs = session_with_outputs(fm, tensors, optimize=False)
    qs = session_with_outputs(qm, sorted(set(q_name.values())), optimize=False)
    f_names = [o.name for o in fs.get_outputs()]
    q_names = [o.name for o in qs.get_outputs()]
    energy: dict[str, float] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    noise: dict[str, float] = {}
    for k in range(min(samples, len(reader))):
        feeds = reader.feeds(k)
        fo = dict(zip(f_names, fs.run(None, {i.name: v for i, v in zip(fs.get_inputs(), feeds.values())})))
        qo = dict(zip(q_names, qs.run(None, {i.name: v for i, v in zip(qs.get_inputs(), feeds.values())})))
        for t, qt in q_name.items():
            a = np.asarray(fo[t], np.float64)
            b = np.asarray(qo[qt], np.float64).reshape(a.shape)
            per_channel = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1) if a.ndim >= 2 else a.reshape(1, -1)
            energy[t] = energy.get(t, 0.0) + float(np.sum(a * a))
            sums[t] = sums.get(t, 0.0) + per_channel.sum(axis=1)
            counts[t] = counts.get(t, 0) + per_channel.shape[1]
            noise[t] = noise.get(t, 0.0) + float(np.sum((a - b) ** 2))
    # Centred signal = variation around each channel's mean: a variant that answers the mean for
    # every input (destroyed weights plus bias correction) scores ~0 dB there, not the mean's energy.
    centred = {t: max(0.0, energy[t] - float(np.sum(sums[t] ** 2)) / max(1, counts[t])) for t in energy}

    producer = {o: n for n in fm.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in fm.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)

    def observed_output(t: str) -> str:
        """A compute node's output that onnxruntime folded into a Relu/Clip: use the activation's."""
        if t in energy:
            return t
        c = consumers.get(t, [])
        if len(c) == 1 and c[0].op_type in FUSED_ACTIVATIONS and c[0].output[0] in energy:
            return c[0].output[0]
        return t

    def sqnr(t: str, signal: dict[str, float], depth: int = 0) -> float:
        if depth > 8 or (t in graph_inputs and t not in signal):
            return SQNR_CAP_DB
        if t not in signal:  # not observable in the quantised graph (a removed Clip): its producer's inputs
            p = producer.get(t)
            ins = [x for x in (p.input if p is not None else ()) if x and x not in inits]
            return min((sqnr(x, signal, depth + 1) for x in ins), default=SQNR_CAP_DB)
        if noise[t] == 0.0:
            return SQNR_CAP_DB
        if signal[t] == 0.0:
            return -SQNR_CAP_DB
        return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, 10.0 * math.log10(signal[t] / noise[t])))

    ops = quantizable_op_types()
    out = []
    for n in fm.graph.node:
        if candidates is not None and n.name not in candidates:
            continue
        if candidates is None and n.op_type not in ops:
            continue
        ins = [x for x in n.input if x and x not in inits]
        if n.op_type in FUSED_ACTIVATIONS and ins and ins[0] not in energy:
            continue  # folded into its producer's output quantisation: ranked (and kept float) with it
        outs = [observed_output(x) for x in n.output if x]
        out.append(NodeDamage(n.name, n.op_type,
                              min((sqnr(x, energy) for x in ins), default=SQNR_CAP_DB),
                              min((sqnr(x, energy) for x in outs), default=SQNR_CAP_DB),
                              min((sqnr(x, centred) for x in ins), default=SQNR_CAP_DB),
                              min((sqnr(x, centred) for x in outs), default=SQNR_CAP_DB)))
    out.sort(key=lambda d: -d.damage_db)
    return out


def _neighbours(model) -> tuple[dict[str, list], dict[str, list]]:
    """``(feeders, consumers)``: node name -> nodes producing its inputs / reading its outputs."""
    prod = {o: n for n in model.graph.node for o in n.output}
    cons: dict[str, list] = {}
    for n in model.graph.node:
        for x in n.input:
            if x in prod:
                cons.setdefault(prod[x].name, []).append(n)
    return {n.name: [prod[x] for x in n.input if x in prod] for n in model.graph.node}, cons


def _island(name: str, feeders: dict[str, list], consumers: dict[str, list], excluded: set[str]) -> list[str]:
    """``name``, the non-compute nodes feeding it (recursively, up to compute nodes), and the
    activations (:data:`FUSED_ACTIVATIONS`) reading its output: onnxruntime fuses those into the
    producer's output quantisation, so leaving one quantised after a float Conv would quantise
    the Conv's unclipped output instead."""
    out, stack = [name], list(feeders.get(name, []))
    while stack:
        p = stack.pop()
        if p.name in excluded or p.name in out or p.op_type in COMPUTE_OPS:
            continue
        out.append(p.name)
        stack.extend(feeders.get(p.name, []))
    out += [c.name for c in consumers.get(name, []) if c.op_type in FUSED_ACTIVATIONS and c.name not in out]
    return out


def quantize_with_fallback(src: str | Path, dst: str | Path, reader: FeedReader, gate: Gate,
                           options: QuantOptions = QuantOptions(), fallback: FallbackOptions = FallbackOptions(), *,
                           model_name: str | None = None, progress: Callable[[str], None] | None = None
                           ) -> FallbackResult:
    """Quantise ``src`` to int8 QDQ, keeping the worst layers float until ``gate`` passes.

    Args:
        src: prepared fp32 model (also the gate's float model).
        dst: where the chosen variant is written.
        reader: calibration reader (from :mod:`export.gates.roles`).
        gate: the role's gate built on ``src``.
        options: base quantisation options (``nodes_to_exclude`` seeds the float set).
        fallback: loop limits.
        model_name: for messages.
        progress: called with one line per attempt.

    Returns:
        A :class:`FallbackResult` (``passed`` False when no attempt passed: the caller ships a
        float variant and says why).

    Raises:
        ExportStepError / ValueError: from :func:`~export.quant.quantize.quantize_onnx_int8`.
    """
    import onnx

    src, dst = Path(src), Path(dst)
    name = model_name or src.stem
    say = progress or (lambda line: log.info("%s", line))
    feeds = reader.feeds(0)
    float_lat = measure_latency(src, feeds, threads=fallback.threads, runs=fallback.latency_runs).min_ms
    fmodel = onnx.load(str(src))
    quantisable = [n.name for n in fmodel.graph.node
                   if n.op_type in (set(options.op_types) if options.op_types else quantizable_op_types())]
    feeders, consumers = _neighbours(fmodel)
    score = gate.score
    attempts: list[Attempt] = []
    ranking: list[NodeDamage] = []
    with tempfile.TemporaryDirectory(prefix=f"edgesight-fallback-{name}-") as tmp:
        work = Path(tmp)

        def attempt(label: str, opts: QuantOptions) -> Attempt:
            out = work / f"{label}.onnx"
            quantize_onnx_int8(src, out, reader, opts, calibration_cache=work / f"cal-{opts.calibration.value}.json",
                               model_name=name)
            res = gate.evaluate(out, variant=f"{name} int8 {label}")
            lat = measure_latency(out, feeds, threads=fallback.threads, runs=fallback.latency_runs).min_ms
            a = Attempt(label, opts.calibration, opts.nodes_to_exclude, res, out.stat().st_size, lat, out)
            attempts.append(a)
            say(f"{name}: {label}: {'PASS' if res.passed else 'fail'} {len(opts.nodes_to_exclude)} float node(s), "
                f"{lat:.2f} ms (float {float_lat:.2f}), {'; '.join(res.failures) or _brief(res.metrics)}")
            return a

        methods = fallback.methods or (options.calibration,)
        best: Attempt | None = None
        for m in methods:
            a = attempt(f"all-int8-{m.value}", _with_method(options, m))
            if best is None or (a.gate.passed, score(a.gate.metrics)) > (best.gate.passed, score(best.gate.metrics)):
                best = a
        assert best is not None
        base = _with_method(options, best.calibration)
        qset = set(quantisable)

        def rank(current: Attempt, kept: frozenset) -> list[str]:
            nonlocal ranking
            ranking = rank_nodes(src, current.path, reader, samples=fallback.ranking_samples,
                                 candidates=qset - kept)
            return [d.node for d in ranking]

        def group(node: str, kept: frozenset) -> list[str]:
            members = _island(node, feeders, consumers, set(kept)) if fallback.expand_inputs else [node]
            return [g for g in members if g in qset]

        if not best.gate.passed:
            grow_float_set(rank, lambda keep, rnd: attempt(f"round{rnd}", dataclasses.replace(base, nodes_to_exclude=keep)),
                           lambda a: (a.gate.passed, a.gate), first=best, total=len(quantisable),
                           max_fraction=fallback.max_float_fraction, max_rounds=fallback.max_rounds,
                           first_step=fallback.first_step, seed=tuple(options.nodes_to_exclude), group=group,
                           say=lambda line: say(f"{name}: {line}"))
        passing = [a for a in attempts if a.gate.passed]
        if passing:
            chosen = min(passing, key=lambda a: (len(a.float_nodes), a.latency_ms))
            reason = (f"passes its gate with {len(chosen.float_nodes)} node(s) in float, "
                      f"{float_lat / chosen.latency_ms:.2f}x the float model's speed")
        else:
            chosen = max(attempts, key=lambda a: score(a.gate.metrics))
            reason = (f"no int8 variant passed the gate after {len(attempts)} attempt(s); best: "
                      f"{'; '.join(chosen.gate.failures)}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp_dst = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(chosen.path, tmp_dst)
        os.replace(tmp_dst, dst)
        final = dataclasses.replace(chosen, path=dst)
        attempts = [final if a is chosen else dataclasses.replace(a, path=None) for a in attempts]
    chosen_opts = dataclasses.replace(_with_method(options, chosen.calibration), nodes_to_exclude=chosen.float_nodes)
    return FallbackResult(dst, bool(passing), final, tuple(attempts), src.stat().st_size, float_lat, chosen_opts,
                          reason, tuple(ranking[:20]))


def _with_method(options: QuantOptions, method: CalibrationMethod) -> QuantOptions:
    """``options`` calibrated by ``method`` (a percentile only goes with the percentile method)."""
    return dataclasses.replace(options, calibration=method,
                               percentile=options.percentile if method is CalibrationMethod.PERCENTILE else None)


def _brief(metrics: dict) -> str:
    keys = [k for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_float")][:3]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)
