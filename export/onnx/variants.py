"""One call that makes and gates every ONNX variant of a model: what ``edge-export build`` uses.

:func:`make_onnx_variants` runs, for one float ONNX source and its card:

1. calibration data for the card's role (:func:`export.gates.roles.calibration_reader`) and its hash;
2. ``onnx_fp32``: :func:`export.onnx.prep.prepare_onnx` (opset >= 13, BatchNormalization folded,
   weight inputs dropped). When the graph has PRelu, the rewrite is applied, checked
   output-identical on a real input and timed against the graph without it (the report lists
   each rewrite and its measured effect);
3. ``onnx_fp16``: :func:`export.quant.quantize.convert_onnx_fp16`;
4. ``onnx_int8``: :func:`export.quant.fallback.quantize_with_fallback` (calibration method chosen by
   the gate, worst layers kept float until the gate passes);
5. every variant gated against the fp32 graph (:mod:`export.gates.base`) and timed.

Every artefact goes through :func:`export.variants.export_step` (loaded by ``edge``'s engine,
empty/NaN output refused). Nothing is chosen here: the caller picks the fastest variant that
passed on its profile's runtime, and writes the cards (with ``GateResult.card_thresholds``).

Example:
    >>> rep = make_onnx_variants(src, card, "out/", limits=GateLimits.from_profile(p))  # doctest: +SKIP
    >>> [(v.key, v.gate.passed) for v in rep.variants]                                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from edge.cards import ModelCard
from export.gates.base import GateLimits, GateResult
from export.gates.factory import make_gate
from export.gates.roles import Role, calibration_reader, role_data, role_of
from export.onnx.prep import PrepOptions, PrepResult, prepare_onnx
from export.quant.fallback import FallbackOptions, FallbackResult, quantize_with_fallback
from export.quant.quantize import QuantOptions, convert_onnx_fp16
from export.select.timing import measure_latency
from export.variants import export_step, get_target

log = logging.getLogger(__name__)

__all__ = ["VariantRecord", "RewriteEffect", "OnnxVariantsReport", "make_onnx_variants", "ONNX_KEYS"]

#: The ONNX rows of the export table, in build order.
ONNX_KEYS = ("onnx_fp32", "onnx_fp16", "onnx_int8")


@dataclass(frozen=True)
class VariantRecord:
    """One ONNX variant: file, size, gate verdict, latency by thread count (fastest run, ms)."""

    key: str
    path: Path
    size: int
    gate: GateResult
    latency_ms: dict
    seconds: float  # time taken to make it

    def to_dict(self) -> dict:
        return {"key": self.key, "file": self.path.name, "size": self.size, "passed": self.gate.passed,
                "metrics": self.gate.metrics, "failures": list(self.gate.failures),
                "card_thresholds": self.gate.card_thresholds,
                "latency_ms": {str(k): round(v, 3) for k, v in self.latency_ms.items()},
                "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class RewriteEffect:
    """A runtime-aware graph rewrite, verified output-identical, with its measured effect."""

    name: str
    nodes: int
    max_abs_diff: float | None
    latency_before_ms: float
    latency_after_ms: float

    def to_dict(self) -> dict:
        return {"name": self.name, "nodes": self.nodes, "max_abs_diff": self.max_abs_diff,
                "latency_before_ms": round(self.latency_before_ms, 3),
                "latency_after_ms": round(self.latency_after_ms, 3),
                "speedup": round(self.latency_before_ms / self.latency_after_ms, 3)}


@dataclass(frozen=True)
class OnnxVariantsReport:
    """Everything :func:`make_onnx_variants` made and measured."""

    model: str
    role: Role
    prep: PrepResult
    calibration_hash: str
    calibration_images: int
    data_note: str
    variants: tuple[VariantRecord, ...]
    fallback: FallbackResult | None
    rewrites: tuple[RewriteEffect, ...] = ()
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def variant(self, key: str) -> VariantRecord | None:
        return next((v for v in self.variants if v.key == key), None)

    def to_dict(self) -> dict:
        return {"model": self.model, "role": self.role.value, "calibration_hash": self.calibration_hash,
                "calibration_images": self.calibration_images, "data": self.data_note,
                "prep": {"opset_in": self.prep.opset_in, "opset_out": self.prep.opset_out,
                         "dropped_inputs": len(self.prep.dropped_inputs), "nodes_in": self.prep.nodes_in,
                         "nodes_out": self.prep.nodes_out, "max_abs_diff_vs_source": self.prep.max_abs_diff},
                "rewrites": [r.to_dict() for r in self.rewrites],
                "variants": [v.to_dict() for v in self.variants],
                "fallback": self.fallback.to_dict() if self.fallback else None,
                "seconds": round(self.seconds, 1), "notes": list(self.notes)}


def _has_op(path: Path, op: str) -> int:
    import onnx

    return sum(n.op_type == op for n in onnx.load(str(path), load_external_data=False).graph.node)


def make_onnx_variants(source: str | Path, card: ModelCard, out_dir: str | Path, *,
                       limits: GateLimits = GateLimits(), keys: Sequence[str] = ONNX_KEYS,
                       quant: QuantOptions = QuantOptions(), fallback: FallbackOptions = FallbackOptions(),
                       data_dir: str | Path | None = None, threads: Sequence[int] = (1,),
                       calibration_images: int | None = None,
                       progress: Callable[[str], None] | None = None) -> OnnxVariantsReport:
    """Make, check and gate the ONNX variants of one model.

    Args:
        source: the float ONNX source (any opset, weights possibly listed as inputs).
        card: its card (role from ``task``; preprocessing; labels).
        out_dir: receives ``<card.name>_fp32.onnx``, ``_fp16.onnx``, ``_int8.onnx``.
        limits: gate limits (``GateLimits.from_profile``).
        keys: which of :data:`ONNX_KEYS` to make (fp32 is always made: the others derive from it).
        quant / fallback: int8 options and fallback limits.
        data_dir: data directory (default ``edge.paths.data_dir()``).
        threads: thread counts the latency is measured at.
        calibration_images: cap on calibration files (default: the role's whole calibration split).
        progress: called with one line per step.

    Raises:
        ExportStepError: a step failed (the message names the model and the step).
        CalibrationError: unusable calibration data.
        ValueError: an unknown key, or a card with no role.
    """
    t_start = time.perf_counter()
    for k in keys:
        if k not in ONNX_KEYS:
            raise ValueError(f"make_onnx_variants: unknown key {k!r} (valid: {', '.join(ONNX_KEYS)})")
    say = progress or (lambda line: log.info("%s", line))
    role = role_of(card)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = role_data(role, data_dir, model_name=card.name)
    reader = calibration_reader(role, card, data_dir, max_images=calibration_images)
    feeds = reader.feeds(0)
    say(f"{card.name}: {role.value}; {data.note}; calibration hash {reader.hash[:16]}…")

    fp32 = out / get_target("onnx_fp32").filename(card.name)
    t0 = time.perf_counter()
    prelus = _has_op(Path(source), "PRelu")
    rewrites: list[RewriteEffect] = []
    preps: list[PrepResult] = []

    def prep_fp32(s, d, o):
        preps.append(prepare_onnx(s, d, o, check_feeds=feeds, model_name=card.name))
        return preps[-1].path

    if prelus:
        with tempfile.TemporaryDirectory(prefix="edgesight-prep-") as tmp:
            plain = Path(tmp) / "plain.onnx"
            prepare_onnx(source, plain, PrepOptions(), model_name=card.name)
            before = measure_latency(plain, feeds, threads=threads[0]).min_ms
    prep_res = export_step("onnx_fp32")(prep_fp32)(source, fp32, PrepOptions(rewrite_prelu=bool(prelus)),
                                                   check_feeds=feeds)
    prep = preps[-1]
    if prelus:
        after = measure_latency(fp32, feeds, threads=threads[0]).min_ms
        for r in prep.rewrites:
            rewrites.append(RewriteEffect(r.name, r.nodes, r.max_abs_diff, before, after))
            say(f"{card.name}: rewrite {r.name} ×{r.nodes}: identical output (max |Δ| {r.max_abs_diff}), "
                f"{before:.2f} → {after:.2f} ms")
    gate = make_gate(role, fp32, card, limits, data=data.selecting(), data_dir=data_dir)  # choices: selection split
    lat = lambda p: {t: measure_latency(p, feeds, threads=t).min_ms for t in threads}  # noqa: E731
    records = [VariantRecord("onnx_fp32", fp32, prep_res.size, gate.float_result(), lat(fp32),
                             time.perf_counter() - t0)]
    say(f"{card.name}: onnx_fp32 {records[0].size / 1e6:.2f} MB, {records[0].latency_ms}")

    if "onnx_fp16" in keys:
        t0 = time.perf_counter()
        path = out / get_target("onnx_fp16").filename(card.name)
        res = export_step("onnx_fp16")(lambda s, d: convert_onnx_fp16(s, d, model_name=card.name))(
            fp32, path, check_feeds=feeds)
        g = gate.evaluate(path, variant=path.name)
        records.append(VariantRecord("onnx_fp16", path, res.size, g, lat(path), time.perf_counter() - t0))
        say(f"{card.name}: onnx_fp16 {'PASS' if g.passed else 'FAIL'} {'; '.join(g.failures)}")

    fb = None
    if "onnx_int8" in keys:
        t0 = time.perf_counter()
        path = out / get_target("onnx_int8").filename(card.name)
        holder: list[FallbackResult] = []

        def int8(s, d):
            holder.append(quantize_with_fallback(s, d, reader, gate, quant, fallback, model_name=card.name,
                                                 progress=say))
            return holder[0].path

        res = export_step("onnx_int8")(int8)(fp32, path, check_feeds=feeds)
        fb = holder[0]
        records.append(VariantRecord("onnx_int8", path, res.size, fb.chosen.gate, lat(path), time.perf_counter() - t0))
        say(f"{card.name}: onnx_int8 {fb.reason}")
    return OnnxVariantsReport(card.name, role, prep, reader.hash, len(reader), data.note, tuple(records), fb,
                              tuple(rewrites), time.perf_counter() - t_start)
