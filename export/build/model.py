"""One model's path through ``edge-export build``: float ONNX → variants → checks → gates → pick.

For a source model of a role this module:

1. makes the float ONNX reference (PyTorch sources are exported, ONNX sources prepared by
   :func:`export.onnx.prep.prepare_onnx`);
2. produces the requested variants (:mod:`export.tflite.convert` for TFLite, :mod:`export.quant.quantize`
   for ONNX) — each is loaded by ``edge``'s engine and compared with the float ONNX on a real
   input within its per-format tolerance;
3. gates every variant with the role's accuracy gate (:mod:`export.gates.base`); a full-integer
   TFLite variant that fails gets layers kept in float (:mod:`export.tflite.fallback`) until it
   passes or the limit is reached;
4. picks, among the variants of the profile's format that passed their gate, the one that runs
   fastest *on the board* (:mod:`export.select.cost_model`): by timings recorded on the board
   (``--board-timings``) or else by the board's cost model (roofline of its profile plus known
   runtime facts). Every variant is also timed here, on the profile runtime's backend; those
   milliseconds are reported, never used to choose (the build machine is not the board).

Example:
    >>> mb = ModelBuild(source, work_dir, ctx)       # doctest: +SKIP
    >>> outcome = mb.run()                            # doctest: +SKIP
    >>> outcome.chosen.path                           # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import msgspec
import numpy as np

from edge.cards import GateRecord, ModelCard, load_card
from edge.registry import get_card, resolve
from export.variants import ExportStepError, check_agreement, get_target

log = logging.getLogger(__name__)

__all__ = ["SourceModel", "BuildContext", "VariantReport", "ModelOutcome", "ModelBuild", "measure_latency_ms"]

#: Roles whose TFLite variants are made resizable in height and width (export.tflite.resizable):
#: the device's face tracker searches a region around the last face with the face detector.
RESIZABLE_ROLES = frozenset({"face_detector"})
#: Latency measurement: warm-up runs, then runs until both limits are reached.
LATENCY_WARMUP = 3
LATENCY_MIN_RUNS = 10
LATENCY_MIN_SECONDS = 1.0
LATENCY_MAX_RUNS = 200


@dataclass(frozen=True)
class SourceModel:
    """A float source model of a role: its registry name and, for PyTorch sources, the exporter.

    Attributes:
        role: the bundle role.
        name: registry card name.
        loader: ``"module:function"`` building the torch module from the weights path (PyTorch
            sources), ``None`` for ONNX sources.
        exporter: ``"module:function"`` ``(out_dir) -> (onnx_path, card_path)`` exporting the
            float ONNX (PyTorch sources).
    """

    role: str
    name: str
    loader: str | None = None
    exporter: str | None = None
    path: Path | None = None  # a user's model file (its card beside it), instead of a registry name

    @property
    def is_torch(self) -> bool:
        return self.loader is not None


@dataclass(frozen=True)
class BuildContext:
    """What every model build shares."""

    keys: tuple[str, ...]  # target keys to produce
    runtime_format: str  # "tflite" | "onnx": the format the profile's runtime loads
    runtime_backend: str  # edge backend name used for timing
    threads: int
    limits: object  # export.gates.base.GateLimits
    max_calibration: int = 64
    fallback: bool = True
    progress: Callable[[str], None] = lambda msg: None
    user_data: dict = field(default_factory=dict)  # role -> export.gates.roles.RoleData from the user's data
    profile: object = None  # edge.profile.DeviceProfile: the board the variant is chosen for
    board_timings: object = None  # export.select.cost_model.BoardTimings measured on that board, or None


@dataclass
class VariantReport:
    """Everything measured about one variant (JSON-ready through :meth:`to_dict`)."""

    key: str
    path: Path
    size: int
    seconds: float = 0.0
    agreement: dict = field(default_factory=dict)
    gate: object = None  # export.gates.base.GateResult
    latency_ms: float | None = None
    keep_float: tuple[str, ...] = ()
    note: str = ""
    card: ModelCard | None = None
    report: object = None  # export.gates.base.GateResult on the report split
    refused: tuple[str, ...] = ()  # int8 targets missed (export.select.targets)

    @property
    def passed(self) -> bool:
        return self.gate is not None and self.gate.passed and not self.refused

    def to_dict(self) -> dict:
        return {"key": self.key, "file": self.path.name, "size": self.size, "seconds": round(self.seconds, 2),
                "agreement": self.agreement, "latency_ms": self.latency_ms,
                "gate": self.gate.to_dict() if self.gate is not None else None, "passed": self.passed,
                "report": self.report.to_dict() if self.report is not None else None,
                "refused": list(self.refused), "kept_float": list(self.keep_float), "note": self.note}


@dataclass
class ModelOutcome:
    """The result of :meth:`ModelBuild.run`."""

    source: SourceModel
    card: ModelCard  # the source's registry card
    float_onnx: Path
    variants: list[VariantReport]
    chosen: VariantReport
    reason: str
    calibration_hash: str
    calibration_note: str
    calibration_images: int
    prep: dict
    fallback: list[dict]
    calibration_trials: list[dict] = field(default_factory=list)
    calibration_stat: str | None = None
    splits: dict = field(default_factory=dict)
    choice: dict = field(default_factory=dict)  # export.select.cost_model.Choice.to_dict(): basis, board, estimates


def _call(spec: str, *args):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)(*args)


def measure_latency_ms(path: Path, backend: str, threads: int, feeds: dict) -> float:
    """Median wall time of one inference here (warm-up first; at least 10 runs and 1 s)."""
    from edge.engines import load_engine

    with load_engine(path, backend=backend, threads=threads) as eng:
        f = {i.name: x for i, x in zip(eng.inputs, feeds.values())}
        for _ in range(LATENCY_WARMUP):
            eng.run(f)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < LATENCY_MAX_RUNS and (len(times) < LATENCY_MIN_RUNS
                                                   or time.perf_counter() - start < LATENCY_MIN_SECONDS):
            t0 = time.perf_counter()
            eng.run(f)
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


def _agreement(ag) -> dict:
    tol = ag.tolerance
    return {"cosine": round(ag.cosine, 6), "rel_err": round(ag.rel_err, 6), "within_tolerance": ag.passed,
            "tolerance": {"min_cosine": tol.min_cosine, "max_rel_err": tol.max_rel_err}}


def _run(path: Path, backend: str, feeds: dict) -> dict:
    from edge.engines import load_engine

    with load_engine(path, backend=backend, threads=1) as eng:
        return eng.run({i.name: x for i, x in zip(eng.inputs, feeds.values())})


class ModelBuild:
    """Build, check, gate and time the variants of one source model (see the module docstring)."""

    def __init__(self, source: SourceModel, work: Path, ctx: BuildContext) -> None:
        self.source, self.ctx = source, ctx
        self.work = Path(work) / source.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.ref = resolve(str(source.path) if source.path is not None else source.name)
        self.card = self.ref.card if source.path is not None else get_card(source.name)
        self._qsvs: dict | None = None
        self._onnx_fallback: list | None = None
        self._calibration_trials: list[dict] = []
        self._calibration_stat: str | None = None
        self._float_onnx: Path | None = None
        self._int8_src: Path | None = None  # the float TFLite the full-integer variants are made from
        self._float_tflite: Path | None = None  # the float TFLite (fixed size) the other variants are made from
        # RESIZABLE_ROLES: None until tried on the float variant, then whether its graph could be freed
        self._resizable: bool | None = None if source.role in RESIZABLE_ROLES else False
        self._resizable_note = ""

    def say(self, msg: str) -> None:
        self.ctx.progress(f"{self.source.role}/{self.source.name}: {msg}")

    # -- float reference -------------------------------------------------------------------------
    def float_onnx(self) -> tuple[Path, ModelCard, dict]:
        """The float ONNX the variants are checked and gated against, its card, and what prep did."""
        from export.onnx.from_torch import write_card

        if self.source.is_torch:
            self.say("exporting the float model to ONNX")
            onnx_path, card_path = _call(self.source.exporter, self.work / "onnx")
            return Path(onnx_path), load_card(card_path), {"exported_from": "pytorch"}
        from export.onnx.prep import PrepOptions, prepare_onnx

        self.say("preparing the float ONNX (weight inputs, opset, basic optimisation)")
        dst = self.work / "onnx" / f"{self.source.name}_fp32.onnx"
        res = prepare_onnx(self.ref.path, dst, PrepOptions(rewrite_prelu=self.ctx.runtime_format == "onnx"),
                           model_name=self.source.name)
        prep = {"opset_in": res.opset_in, "opset_out": res.opset_out, "dropped_weight_inputs": len(res.dropped_inputs),
                "rewrites": [{"name": r.name, "nodes": r.nodes, "max_abs_diff": r.max_abs_diff} for r in res.rewrites],
                "nodes_in": res.nodes_in, "nodes_out": res.nodes_out}
        if self.source.role in RESIZABLE_ROLES:  # the ONNX variants are made from it: they take any size too
            from export.onnx.resizable import free_image_size

            why = free_image_size(res.path, self.source.name)
            prep["image_size_free"] = why is None
            if why is not None:
                prep["image_size_fixed_because"] = why
                self.say(f"input size stays fixed: {why}")
        card = load_card(write_card(self.card, res.path, dst.with_suffix(".json"), name=dst.stem))
        return res.path, card, prep

    # -- variants --------------------------------------------------------------------------------
    def _tflite_fp32(self, dst: Path) -> Path:
        from export.tflite.convert import onnx_to_tflite, torch_to_tflite

        if self.source.is_torch:
            model = _call(self.source.loader, self.ref.path)
            spec = self.card.inputs[0]
            return torch_to_tflite(model, [np.zeros(spec.shape, np.float32)], dst, input_names=[spec.name],
                                   output_names=[o.name for o in self.card.outputs], model_name=self.source.name)
        return onnx_to_tflite(self.ref.path, dst, model_name=self.source.name)

    def _equalised_fp32(self, reader) -> Path | None:
        """A float TFLite of the channel-equalised float ONNX (:mod:`export.quant.equalize`), or ``None``
        for a PyTorch source or a graph without a ``Conv → PRelu → Conv`` pair."""
        from export.quant.equalize import equalize_prelu_chain
        from export.tflite.convert import onnx_to_tflite

        if self.source.is_torch or self._float_onnx is None:
            return None
        dst = self.work / "onnx" / f"{self.source.name}_equalised.onnx"
        samples = [next(iter(reader.feeds(i).values())) for i in range(len(reader))]
        if not equalize_prelu_chain(self._float_onnx, dst, samples):
            return None
        self.say("converting the channel-equalised float ONNX to TFLite")
        return onnx_to_tflite(dst, self.work / "tflite" / f"{self.source.name}_equalised_fp32.tflite",
                              model_name=self.source.name)

    def _choose_calibration(self, fp32: Path, reader, gate) -> dict:
        """Calibrate with each range statistic, gate each all-int8 model, keep the best ranges.

        No statistic wins everywhere (measured here: min/max is best for MobileNetV2 and ruins
        YOLOX; the smoothed min/max is the reverse), so the gate decides, by its own score
        (:meth:`export.gates.base.Gate.score`). A graph with ``Conv → PRelu → Conv`` pairs is also
        tried channel-equalised (:mod:`export.quant.equalize`; SFace passes only so, see
        docs/quantisation.md); the winner's float TFLite becomes :attr:`_int8_src`.
        """
        from export.tflite.convert import CalibrationStat, TfliteQuantOptions, calibrate_tflite, quantize_tflite, tflite_card

        score = gate.score
        best = None
        graphs = [("plain", fp32)]
        equalised = self._equalised_fp32(reader)
        if equalised is not None:
            graphs.append(("equalised", equalised))
        for graph, src in graphs:
            for stat in CalibrationStat:
                self.say(f"calibrating TFLite activations ({graph}, {stat.value}) on {len(reader)} real inputs")
                qsvs = calibrate_tflite(src, reader, TfliteQuantOptions(stat=stat, threads=self.ctx.threads),
                                        model_name=self.source.name)
                tag = stat.value if graph == "plain" else f"{graph}_{stat.value}"
                path = quantize_tflite(src, self.work / "tflite" / f"{self.source.name}_{tag}_int8.tflite",
                                       "tflite_int8", qsvs=qsvs, model_name=self.source.name)
                res = gate.evaluate(path, card=tflite_card(self.card, path, "tflite_int8"))
                self._calibration_trials.append({"statistic": stat.value, "graph": graph, "passed": res.passed,
                                                 "score": round(score(res.metrics), 5), "metrics": res.metrics,
                                                 "failures": list(res.failures)})
                key = (res.passed, score(res.metrics))
                if best is None or key > best[0]:
                    best = (key, stat, qsvs, graph, src)
        self.say(f"activation ranges: {best[1].value} on the {best[3]} graph (best gate score)")
        self._calibration_stat = best[1].value  # the graph is the best trial's "graph"
        self._int8_src = best[4]
        return best[2]

    def _tflite(self, key: str, fp32: Path | None, reader, feeds: dict, reference: dict, gate) -> VariantReport:
        from export.tflite.convert import TfliteQuantOptions, make_variant, tflite_card

        dst = self.work / "tflite" / get_target(key).filename(self.source.name)
        t0 = time.perf_counter()
        if key == "tflite_fp32":
            self.say("converting to TFLite fp32 (litert-torch)")
            if self._resizable is None:  # quantisers get the converter's own fixed-size graph
                fp32 = self._tflite_fp32(dst.with_name(f"{dst.stem}_fixed.tflite"))
                shutil.copyfile(fp32, dst)
            else:
                fp32 = self._tflite_fp32(dst)
            self._float_tflite = fp32
        elif get_target(key).calibrated and self._qsvs is None:
            self._qsvs = self._choose_calibration(fp32, reader, gate)
        if key != "tflite_fp32":
            self.say(f"making {key}")
        # Only an fp32 conversion that changes the numbers is a broken converter, and stops the build;
        # a reduced-precision variant outside its tolerance is recorded and rejected by the gate.
        target = get_target(key)
        # the float variant checks its own file (for RESIZABLE_ROLES a copy of the fixed graph, to be freed)
        src = dst if key == "tflite_fp32" else (self._int8_src if target.calibrated and self._int8_src else fp32)
        result, ag = make_variant(key, src, dst, check_feeds=feeds, reference=reference,
                                  options=TfliteQuantOptions(), qsvs=self._qsvs, model_name=self.source.name,
                                  strict=target.precision.value == "fp32")
        refused, note = self._make_resizable(key, result.path, fp32, feeds)
        card = tflite_card(self.card, result.path, key)
        return VariantReport(key, result.path, result.path.stat().st_size, time.perf_counter() - t0, _agreement(ag),
                             card=card, note=note, refused=refused)

    def _make_resizable(self, key: str, path: Path, fixed_fp32: Path, feeds: dict) -> tuple[tuple[str, ...], str]:
        """Free a variant's input height and width (RESIZABLE_ROLES) and check it at a second size.

        The float variant decides: a graph that cannot be freed, or whose float variant disagrees
        with the float ONNX at the second size, stays at its fixed size for every variant (said in
        the note; the device then searches whole frames). A quantised variant that disagrees at
        the second size beyond its tolerance is refused. Returns ``(refused, note)``.
        """
        from export.onnx.from_torch import ExportError
        from export.tflite.resizable import check_resizable, write_resizable

        if self._resizable is False:
            return (), self._resizable_note
        target = get_target(key)
        try:
            write_resizable(path, self.source.name)
            ag = check_resizable(path, self._float_onnx, feeds, target.tolerance)
        except ExportError as e:
            if key != "tflite_fp32":
                raise ExportStepError(self.source.name, f"{key} resizable", str(e)) from e
            ag, why = None, str(e)
        if key == "tflite_fp32":
            if ag is not None and not ag.passed:
                why = f"at a second size it disagrees with the float ONNX on {ag.output!r} (cosine {ag.cosine:.5f})"
            if ag is None or not ag.passed:
                shutil.copyfile(fixed_fp32, path)
                self._resizable = False
                self._resizable_note = f"fixed input size (the tracker searches whole frames): {why}"
                self.say(self._resizable_note)
                return (), self._resizable_note
            self._resizable = True
        note = (f"input height and width free (against the float ONNX at a second size: "
                f"{'within' if ag.passed else 'outside'} its tolerance; worst output {ag.output!r}, cosine "
                f"{ag.cosine:.5f}, rel. error {ag.rel_err:.3g}, abs. error {ag.abs_err:.3g})")
        if not ag.passed:
            return (f"disagrees with the float model at a second input size on {ag.output!r} "
                    f"(cosine {ag.cosine:.5f}, min {target.tolerance.min_cosine})",), note
        return (), note

    def _onnx(self, key: str, float_onnx: Path, reader, feeds: dict, reference: dict, gate) -> VariantReport:
        from export.onnx.from_torch import write_card
        from export.quant.quantize import QuantOptions, convert_onnx_fp16, quantize_onnx_int8

        target = get_target(key)
        dst = self.work / "onnx" / target.filename(self.source.name)
        t0 = time.perf_counter()
        self.say(f"making {key}")
        fallback = None
        if key == "onnx_fp32":
            dst = float_onnx
        elif key == "onnx_fp16":
            convert_onnx_fp16(float_onnx, dst, model_name=self.source.name)
        elif self.ctx.fallback:  # export.quant.fallback: calibration method choice + layers kept float
            from export.quant.fallback import FallbackOptions, quantize_with_fallback

            fallback = quantize_with_fallback(float_onnx, dst, reader, gate, QuantOptions(),
                                              FallbackOptions(threads=self.ctx.threads), model_name=self.source.name,
                                              progress=self.say)
            self._onnx_fallback = [{"kept_float": len(a.float_nodes), "file": a.label, "passed": a.gate.passed,
                                    "failures": list(a.gate.failures), "calibration": a.calibration.value,
                                    "latency_ms": round(a.latency_ms, 3), "size": a.size,
                                    "layers": [{"output": n} for n in a.float_nodes]} for a in fallback.attempts]
        else:
            quantize_onnx_int8(float_onnx, dst, reader, QuantOptions(), model_name=self.source.name)
        got = _run(dst, "onnxruntime", feeds)
        ag = check_agreement(reference, got, target.tolerance)
        if not ag.passed and target.precision.value == "fp32":  # else: the gate repeats the check and rejects it
            raise ExportStepError(self.source.name, f"{key} check", f"{dst.name} disagrees with the float model on "
                                  f"{ag.output!r}: cosine {ag.cosine:.5f}, rel. error {ag.rel_err:.3g}")
        card = load_card(write_card(self.card, dst, dst.with_suffix(".json"), name=dst.stem,
                                    provenance={"variant": key, "io_dtype": target.io_dtype}))
        rep = VariantReport(key, dst, dst.stat().st_size, time.perf_counter() - t0, _agreement(ag), card=card)
        if fallback is not None:
            rep.gate, rep.keep_float, rep.note = fallback.chosen.gate, fallback.float_nodes, fallback.reason
        return rep

    # -- fallback --------------------------------------------------------------------------------
    def _tflite_fallback(self, failed: VariantReport, fp32: Path, reader, gate) -> tuple[VariantReport | None, list]:
        from export.tflite.convert import TfliteQuantOptions, quantize_tflite, tflite_card
        from export.quant.float_search import grow_float_set
        from export.tflite.fallback import rank_layers
        from export.tflite.flatbuffer import list_ops

        self.say(f"{failed.key} failed its gate ({'; '.join(failed.gate.failures)}); ranking layers by "
                 "quantisation error")
        samples = [reader.feeds(i) for i in range(min(len(reader), 8))]
        rankings: dict[str, object] = {}

        def rank(path: Path, kept: frozenset) -> list[str]:
            ranking = rank_layers(fp32, path, samples)
            for r in ranking:
                rankings.setdefault(r.output, r)
            return [r.output for r in ranking if r.added > 0]  # an operator that adds no error stays int8

        def quantize(keep: tuple[str, ...], _round: int) -> Path:
            dst = failed.path.with_name(f"{self.source.name}_keep{len(keep)}{get_target(failed.key).suffix}")
            self.say(f"re-quantising with the {len(keep)} worst layer(s) in float")
            return quantize_tflite(fp32, dst, failed.key, options=TfliteQuantOptions(keep_float=keep),
                                   qsvs=self._qsvs, model_name=self.source.name)

        def accept(path: Path):
            try:
                res = gate.evaluate(path, card=tflite_card(self.card, path, failed.key))
            except ExportStepError as e:  # an attempt that cannot even run is a rejected attempt
                from export.gates.base import GateResult

                res = GateResult(self.source.role, path.name, {}, False, (f"could not be evaluated: {e}",))
            return res.passed, res

        steps = grow_float_set(rank, quantize, accept, first=failed.path, total=len(list_ops(fp32)), say=self.say)
        log_rows = [{"kept_float": len(s.keep_float), "file": s.path.name, "passed": s.accepted,
                     "size": s.path.stat().st_size, "failures": list(s.detail.failures)} for s in steps]
        for row, s in zip(log_rows, steps):
            row["layers"] = [{"output": n[:120], "op": rankings[n].op, "index": rankings[n].index,
                              "added_error": round(rankings[n].added, 4)} for n in s.keep_float if n in rankings]
        if not steps or not steps[-1].accepted:
            return None, log_rows
        s = steps[-1]
        card = tflite_card(self.card, s.path, failed.key, provenance={"kept_float": len(s.keep_float)})
        rep = VariantReport(failed.key, s.path, s.path.stat().st_size, 0.0, failed.agreement, s.detail,
                            keep_float=s.keep_float, note=f"{len(s.keep_float)} layer(s) kept in float", card=card)
        return rep, log_rows

    # -- the whole thing -------------------------------------------------------------------------
    def run(self) -> ModelOutcome:
        from export.gates.factory import make_gate
        from export.gates.roles import calibration_reader, role_data

        from export.select.cost_model import board_speedup
        from export.select.report_split import report_variants, selection_limits

        float_onnx, float_card, prep = self.float_onnx()
        self._float_onnx = float_onnx
        data = self.ctx.user_data.get(self.source.role) or role_data(self.source.role, model_name=self.source.name)
        self.say(f"loading calibration data ({data.note})")
        reader = calibration_reader(self.source.role, float_card, max_images=self.ctx.max_calibration, data=data)
        feeds = reader.feeds(0)
        reference = _run(float_onnx, "onnxruntime", feeds)
        # Every choice below (statistic, layers kept float, verdict) is made on the selection split.
        gate = make_gate(self.source.role, float_onnx, float_card, selection_limits(self.source.role, self.ctx.limits),
                         data=data.selecting(), threads=self.ctx.threads)
        self.say("measuring the float model on the selection split")
        gate.reference  # noqa: B018 - measure the float model once, up front (progress is clearer)
        variants: list[VariantReport] = []
        fp32_tflite: Path | None = None
        for key in self.ctx.keys:
            if key.startswith("tflite"):
                v = self._tflite(key, fp32_tflite, reader, feeds, reference, gate)
                if key == "tflite_fp32":
                    fp32_tflite = self._float_tflite
            else:
                v = self._onnx(key, float_onnx, reader, feeds, reference, gate)
            if v.gate is None:
                self.say(f"gating {v.path.name}")
                v.gate = gate.evaluate(v.path, card=v.card)
            variants.append(v)
        fallback_log: list = list(self._onnx_fallback or [])
        if self.ctx.fallback and fp32_tflite is not None:
            for v in list(variants):
                if v.key == "tflite_int8" and not v.passed:
                    fixed, fallback_log = self._tflite_fallback(v, self._int8_src or fp32_tflite, reader, gate)
                    if fixed is not None:
                        variants.append(fixed)
        for v in variants:
            if get_target(v.key).format.value == self.ctx.runtime_format:
                v.latency_ms = measure_latency_ms(v.path, self.ctx.runtime_backend, self.ctx.threads, feeds)
        report_gate = make_gate(self.source.role, float_onnx, float_card, self.ctx.limits, data=data,
                                threads=self.ctx.threads)
        self.say("measuring the variants on the report split (nothing is chosen on it)")
        report_variants(self.source.role, variants, gate, report_gate, self.ctx.runtime_format, self.say,
                        speed=lambda a, b: board_speedup(a.path, b.path, self.ctx.profile, self.ctx.board_timings,
                                                         cards=(a.card, b.card)))
        chosen, reason, choice = self._choose(variants)
        chosen.card = self._final_card(chosen)
        cal_hash = reader.hash
        return ModelOutcome(self.source, self.card, float_onnx, variants, chosen, reason, cal_hash, data.note,
                            len(reader), prep, fallback_log, self._calibration_trials, self._calibration_stat,
                            splits=data.record(), choice=choice)

    def _choose(self, variants: list[VariantReport]) -> tuple[VariantReport, str, dict]:
        """The passing variant of the runtime's format that runs fastest on the board (export.select.cost_model)."""
        from export.select.cost_model import BASIS_COST_MODEL, choose, estimate

        fmt = self.ctx.runtime_format
        mine = [v for v in variants if get_target(v.key).format.value == fmt]
        ok = [v for v in mine if v.passed]
        if not mine:
            raise ExportStepError(self.source.name, "choose", f"no {fmt} variant was built (check --formats)")
        if not ok:
            raise ExportStepError(self.source.name, "choose", f"no {fmt} variant passed its gate: " + "; ".join(
                f"{v.path.name}: {', '.join(tuple(v.gate.failures) + v.refused)}" for v in mine))
        prof = self.ctx.profile
        try:
            choice = choose([(v.path, get_target(v.key), v.size, v.passed, v.card) for v in mine], prof,
                            self.ctx.board_timings)
        except ValueError as e:
            raise ExportStepError(self.source.name, "choose", str(e)) from e
        best = mine[choice.index]
        reason = choice.reason
        if choice.basis == BASIS_COST_MODEL:
            cost = {v.path.name: e["estimate_ms"] for v, e in ((v, choice.estimates.get(v.path.name)) for v in ok) if e}
            rejected = []
            for v in mine:
                if v.passed:
                    continue
                try:
                    est = estimate(v.path, get_target(v.key), prof, card=v.card).estimate_ms
                except ValueError:
                    continue
                if est < cost[best.path.name]:
                    rejected.append(f"{v.path.name} ({est:.3f} ms: {'; '.join(tuple(v.gate.failures) + v.refused)})")
            if rejected:
                reason += "; faster on the board but rejected by the gate: " + ", ".join(rejected)
        self.say(f"chosen for {prof.name}: {best.path.name} ({choice.basis})")
        return best, reason, choice.to_dict(best.key)

    def _final_card(self, v: VariantReport) -> ModelCard:
        card = v.card
        thresholds = {**msgspec.to_builtins(card.thresholds), **(v.gate.card_thresholds or {})}
        provenance = card.provenance
        if v.keep_float:
            provenance = msgspec.structs.replace(provenance, kept_float=tuple(v.keep_float))
        return replace(card, thresholds=thresholds, provenance=provenance,
                       gate=GateRecord(passed=v.gate.passed, metrics=dict(v.gate.metrics)))


def default_threads(profile_threads: int) -> int:
    """The profile's thread count, capped at this machine's cores."""
    return max(1, min(int(profile_threads), os.cpu_count() or 1))
