"""Which variant runs fastest on the board: a cost model of the board, or timings made on it.

The build machine is not the board: an x86 CPU runs int8 with VNNI and fp16 not at all, a
Cortex-A72 has no fp16 arithmetic and no int8 dot product, a Cortex-A76 has both, a Jetson runs
the model on its GPU. So the variant shipped for a board is chosen on one of two bases:

* ``board-timings`` — an ``edge bench`` JSON report made on the board itself
  (``edge-export build --board-timings FILE``): each variant's median latency there, matched by
  file name. The report must have been made on that board (its profile or fingerprint says so).
* ``cost-model`` — a roofline of the board from its profile: the MACs counted in the variant's
  file (:func:`edge.bench.roofline.count_macs`) at the precision the board's runtime really
  computes them in (:data:`RUNTIME_FACTS`), over the profile's peak for that precision and the
  share of the cores the runtime uses; and the variant's bytes over the memory bandwidth. The
  larger of the two is the estimate (a lower bound: what ranks the variants, not milliseconds).

Within :data:`TIE` of the fastest, the smaller file wins (less to load, less memory).

Example:
    >>> est = estimate(Path("m_int8.tflite"), get_target("tflite_int8"), load_profile("rpi5"))  # doctest: +SKIP
    >>> est.precision, round(est.estimate_ms, 2)                                                # doctest: +SKIP
    ('int8', 0.41)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from edge.bench.roofline import MacCount, card_macs, peak_for
from edge.profile import DeviceProfile
from export.variants import Format, Precision, Scheme, Target, target_for_file

__all__ = ["RuntimeFact", "RUNTIME_FACTS", "CORE_FEATURES", "Estimate", "BoardTimings", "Choice",
           "BoardTimingsError", "XNNPACK_SPLIT", "xnnpack_partitions", "runtime_precision", "estimate", "load_board_timings", "choose", "board_speedup", "TIE",
           "BASIS_COST_MODEL", "BASIS_BOARD_TIMINGS"]

BASIS_COST_MODEL = "cost-model"
BASIS_BOARD_TIMINGS = "board-timings"
#: Variants within this share of the fastest are a tie; the smaller file wins.
TIE = 0.05

#: What a CPU core can compute in: fp16 arithmetic (ARMv8.2-A FP16) and the int8 dot product
#: (SDOT/UDOT). The profile's int8 peak already reflects the dot product; the fp16 flag decides
#: whether an fp16 model runs in fp16 at all. Arm Cortex-A technical reference manuals.
CORE_FEATURES: dict[str, dict[str, bool]] = {
    "Cortex-A53": {"fp16": False, "dot": False},   # ARMv8.0-A (Raspberry Pi Zero 2 W, Pi 3)
    "Cortex-A55": {"fp16": True, "dot": True},     # ARMv8.2-A
    "Cortex-A57": {"fp16": False, "dot": False},   # ARMv8.0-A (Jetson Nano CPU)
    "Cortex-A72": {"fp16": False, "dot": False},   # ARMv8.0-A (Raspberry Pi 4)
    "Cortex-A76": {"fp16": True, "dot": True},     # ARMv8.2-A (Raspberry Pi 5)
    "Cortex-A78": {"fp16": True, "dot": True},
    "Cortex-A78AE": {"fp16": True, "dot": True},   # ARMv8.2-A (Jetson Orin CPU)
}


@dataclass(frozen=True)
class RuntimeFact:
    """One known fact about how a runtime computes a kind of variant on a kind of board.

    Attributes:
        name: short identifier, shown in reports.
        applies: ``(format, precision, scheme)`` of the variant, ``None`` parts match anything.
        where: ``"gpu"`` (TensorRT/CUDA first among the providers), ``"fp16-cpu"`` (a core with
            fp16 arithmetic), ``"cpu"`` (any CPU).
        computes: the precision the float MACs of such a variant are computed in.
        note: the fact, in a sentence, with where it comes from.
    """

    name: str
    applies: tuple[Format | None, Precision | None, Scheme | None]
    where: str
    computes: Precision
    note: str
    excludes: bool = False  # the roofline cannot bound such a variant: the cost model does not choose it


#: First match wins. MACs the counter already sees as int8 (QDQ / full-integer graphs) run on the
#: int8 path of every runtime here; these facts are about the float ones.
RUNTIME_FACTS: tuple[RuntimeFact, ...] = (
    RuntimeFact("tensorrt-fp16", (Format.ONNX, None, None), "gpu-trt-fp16", Precision.FP16,
                "onnxruntime's TensorRT provider with trt_fp16_enable builds fp16 kernels for float layers "
                "(onnxruntime TensorRT execution provider documentation)"),
    RuntimeFact("gpu-fp16", (Format.ONNX, Precision.FP16, None), "gpu", Precision.FP16,
                "an fp16 graph runs its convolutions in fp16 on the GPU (CUDA/TensorRT providers)"),
    RuntimeFact("xnnpack-fp16", (Format.TFLITE, Precision.FP16, Scheme.FLOAT), "fp16-cpu", Precision.FP16,
                "XNNPACK computes in fp16 on cores with ARMv8.2 fp16 arithmetic (Cortex-A76, A78, A55) when the "
                "model's metadata allows it (reduced_precision_support): about twice the fp32 throughput (TensorFlow "
                "blog, 'Half-precision inference doubles on-device inference performance', 2023)"),
    RuntimeFact("fp16-weights-dequantised", (Format.TFLITE, Precision.FP16, Scheme.FLOAT), "cpu", Precision.FP32,
                "fp16 weights are upsampled to fp32 before the first inference and computed in fp32 on a CPU "
                "(LiteRT float16 quantization guide) — always without fp16 arithmetic (Cortex-A72, A53, x86), and "
                "on a Cortex-A76 too unless the file's metadata allows fp16: fp32 speed, half the file"),
    RuntimeFact("ort-cpu-fp16", (Format.ONNX, Precision.FP16, None), "cpu", Precision.FP32,
                "onnxruntime's CPU provider has no fp16 convolution kernels here: an fp16 graph computes in fp32 "
                "between inserted casts"),
    RuntimeFact("dynamic-range-float", (Format.TFLITE, Precision.INT8, Scheme.DYNAMIC_RANGE), "cpu", Precision.FP32,
                "dynamic-range int8 keeps float activations: its arithmetic is float (no int8 speed-up)"),
)

#: A TFLite variant that XNNPACK takes in more pieces than the model's fp32 file: the ops between
#: the pieces run on LiteRT's own kernels. Counted by applying the LiteRT interpreter's XNNPACK
#: delegate to the file (the delegate's op rules are the board's too).
XNNPACK_SPLIT = RuntimeFact(
    "xnnpack-split", (Format.TFLITE, None, None), "cpu", Precision.FP32,
    "XNNPACK does not take every op of this variant (it splits the graph into more partitions than the fp32 "
    "model's); the ops between run on LiteRT's reference kernels, which the roofline cannot bound — in this "
    "project that made full-integer SFace 3x and MiniFASNet 4x slower than fp32, and dynamic-range MobileNetV2 "
    "2.3x (docs/tflite_route.md) — so the cost model does not choose it; board timings can", excludes=True)


#: The TFLite metadata name that allows XNNPACK to compute a float model in fp16.
FP16_METADATA = b"reduced_precision_support"


def fp16_allowed(path: str | Path) -> bool:
    """Whether a ``.tflite`` file carries the metadata that lets XNNPACK compute it in fp16."""
    p = Path(path)
    return p.suffix.lower() == ".tflite" and FP16_METADATA in p.read_bytes()


def _where(profile: DeviceProfile, fp16_metadata: bool = False) -> set[str]:
    """The places a variant may run on this board: ``cpu`` always; ``fp16-cpu`` (a core with fp16
    arithmetic and a model whose metadata allows fp16), ``gpu``, ``gpu-trt-fp16``."""
    out = {"cpu"}
    if fp16_metadata and CORE_FEATURES.get(profile.cpu.model, {}).get("fp16") and profile.cpu.arch == "aarch64":
        out.add("fp16-cpu")
    providers = profile.runtime.providers
    if providers and providers[0] in ("tensorrt", "cuda"):
        out.add("gpu")
        if providers[0] == "tensorrt" and profile.runtime.trt_fp16:
            out.add("gpu-trt-fp16")
    return out


def runtime_precision(profile: DeviceProfile, target: Target, *,
                      fp16_metadata: bool = False) -> tuple[Precision, RuntimeFact | None]:
    """The precision the board's runtime computes ``target``'s float MACs in, and the fact that says so.

    The board is described by ``profile.cpu.model`` / ``profile.cpu.arch`` (:data:`CORE_FEATURES`)
    and its providers; ``fp16_metadata``: the file allows fp16 (:func:`fp16_allowed`). Without a
    matching fact a variant computes at its own precision.
    """
    where = _where(profile, fp16_metadata)
    for fact in RUNTIME_FACTS:
        fmt, prec, scheme = fact.applies
        if ((fmt is None or fmt is target.format) and (prec is None or prec is target.precision)
                and (scheme is None or scheme is target.scheme) and fact.where in where):
            return fact.computes, fact
    own = Precision.FP32 if target.precision is Precision.INT8 else target.precision
    return own, None


@dataclass(frozen=True)
class Estimate:
    """A variant's cost on the board by the cost model.

    Attributes:
        file: the variant's file name; ``key`` its export target.
        macs: MACs of one inference; ``by_precision`` as the board computes them.
        compute_ms: ``2 · MACs / peak`` per precision, for the share of the cores used.
        memory_ms: the file's bytes over the board's memory bandwidth (``None`` without one).
        estimate_ms: the larger of the two; ``bound`` says which.
        facts: the runtime facts applied.
    """

    file: str
    key: str
    macs: int
    by_precision: dict
    compute_ms: float
    memory_ms: float | None
    estimate_ms: float
    bound: str
    facts: tuple[str, ...] = ()
    mac_source: str = ""
    excluded: str | None = None  # why the cost model does not choose this variant (a runtime fact)
    partitions: int | None = None  # XNNPACK partitions of a TFLite file

    def to_dict(self) -> dict:
        return {"file": self.file, "key": self.key, "macs": self.macs, "by_precision": self.by_precision,
                "compute_ms": round(self.compute_ms, 4),
                "memory_ms": None if self.memory_ms is None else round(self.memory_ms, 4),
                "estimate_ms": round(self.estimate_ms, 4), "bound": self.bound, "facts": list(self.facts),
                "mac_source": self.mac_source, "excluded": self.excluded, "xnnpack_partitions": self.partitions}


def xnnpack_partitions(path: str | Path) -> int | None:
    """How many pieces LiteRT's XNNPACK delegate takes a ``.tflite`` file in (``None``: not countable here).

    The interpreter lists one ``DELEGATE`` node per partition once its tensors are allocated; an
    op XNNPACK does not support (for that type) ends a partition and runs on LiteRT's own kernel.
    """
    if Path(path).suffix.lower() != ".tflite":
        return None
    try:
        from edge.engines.litert import _import_interpreter

        interpreter_cls, _ = _import_interpreter()
        it = interpreter_cls(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        ops = it._get_ops_details()  # noqa: SLF001 - the interpreter's only op listing
    except (ImportError, ValueError, RuntimeError):
        return None
    return sum(1 for op in ops if op["op_name"] == "DELEGATE")


def _file_macs(path: Path) -> MacCount | None:
    """The export-time count (:mod:`export.onnx.macs`) of a file, as the bench's :class:`MacCount`."""
    from export.onnx.macs import file_macs

    try:
        m = file_macs(path)
    except (ValueError, RuntimeError, ImportError, OSError):
        return None
    return None if m is None else MacCount(m.total, dict(m.by_precision), {}, (), "card")


def _board_macs(macs: MacCount, target: Target, profile: DeviceProfile,
                fp16_metadata: bool) -> tuple[dict, tuple[str, ...]]:
    """MACs per precision as the board computes them (int8-labelled MACs stay int8)."""
    float_prec, fact = runtime_precision(profile, target, fp16_metadata=fp16_metadata)
    out: dict[str, int] = {}
    for prec, n in (macs.by_precision or {"fp32": macs.total}).items():
        board = "int8" if prec == "int8" else float_prec.value
        out[board] = out.get(board, 0) + int(n)
    return out, ((fact.name,) if fact is not None else ())


def estimate(path: str | Path, target: Target | None, profile: DeviceProfile, *, card=None,
             macs: MacCount | None = None, fp32_partitions: int | None = None) -> Estimate:
    """The cost-model estimate of one variant file on ``profile``'s board.

    Args:
        path: the variant's file (its MACs are counted, its size is the bytes read per inference).
        target: its export target (from the file name when ``None``).
        profile: the board.
        card: the variant's card (its export-time ``macs`` when it has them).
        macs: a count made already.
        fp32_partitions: XNNPACK partitions of the model's fp32 TFLite file; a TFLite variant split
            into more is excluded (:data:`XNNPACK_SPLIT`).

    Raises:
        ValueError: the MACs of the file cannot be counted and its card gives none.
    """
    path = Path(path)
    target = target or target_for_file(path)
    macs = macs or (card_macs(card) if card is not None else None) or _file_macs(path)
    if macs is None or macs.total <= 0:
        raise ValueError(f"{path.name}: cannot count its MACs (and its card has no macs) for the cost model; "
                         "give --board-timings from `edge bench` on the board instead")
    by_prec, facts = _board_macs(macs, target, profile, fp16_allowed(path))
    compute = profile.compute
    gpu = "gpu" in _where(profile) and target.format is Format.ONNX
    cores = profile.cpu.cores
    used = 1.0 if gpu else min(profile.runtime.threads, cores) / cores
    compute_s = sum(2.0 * n / (peak_for(compute, prec) * 1e9 * used) for prec, n in by_prec.items())
    memory_s = path.stat().st_size / (compute.memory_gbps * 1e9) if compute.memory_gbps else None
    est_s = max(compute_s, memory_s or 0.0)
    excluded = None
    parts = xnnpack_partitions(path) if target.format is Format.TFLITE else None
    if parts is not None and fp32_partitions is not None and parts > fp32_partitions:
        facts += (XNNPACK_SPLIT.name,)
        excluded = f"{parts} XNNPACK partitions (fp32: {fp32_partitions}): {XNNPACK_SPLIT.note}"
    return Estimate(path.name, target.key, int(macs.total), by_prec, compute_s * 1e3,
                    None if memory_s is None else memory_s * 1e3, est_s * 1e3,
                    "memory" if memory_s is not None and memory_s > compute_s else "compute", facts, macs.source,
                    excluded, parts)


class BoardTimingsError(ValueError):
    """A ``--board-timings`` file that cannot be used (names the file and why)."""


@dataclass(frozen=True)
class BoardTimings:
    """Median latencies measured on the board by ``edge bench``, by file name and by file stem."""

    path: Path
    board: str
    threads: int | None
    ms: Mapping[str, float] = field(default_factory=dict)

    def latency(self, file: str | Path) -> float | None:
        """The board's p50 for a variant file (matched by name, else by stem), or ``None``."""
        name = Path(file).name
        if name in self.ms:
            return self.ms[name]
        return self.ms.get(Path(name).stem)


def load_board_timings(path: str | Path, profile: DeviceProfile) -> BoardTimings:
    """Read an ``edge bench`` JSON report made on ``profile``'s board (its ``profile`` or its board
    fingerprint names that profile, and its CPU architecture is the profile's).

    Rows at the thread count the profile runs with (clamped to its cores) are preferred; a file
    measured only at other thread counts uses its largest one.

    Raises:
        BoardTimingsError: unreadable, not a bench report, made on another board, or no usable row.
    """
    from edge.bench.device import guess_profile_name
    from edge.bench.report import load_report
    from edge.errors import BenchReportError

    p = Path(path)
    try:
        report = load_report(p)
    except (BenchReportError, OSError) as e:
        raise BoardTimingsError(f"--board-timings {p}: {e}") from e
    fp = (report.get("device") or {}).get("fingerprint") or {}
    made_for = (report.get("profile") or {}).get("name")
    guessed = guess_profile_name(fp) if fp else None
    if profile.name not in (made_for, guessed):
        raise BoardTimingsError(
            f"--board-timings {p}: made on {fp.get('board') or 'an unknown board'} (profile {made_for or 'none'}), "
            f"not on the {profile.board} of profile {profile.name}: run `edge bench --profile {profile.name} "
            f"--model VARIANT_FILES --format json` on that board")
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(str(fp.get("arch") or "").lower(), fp.get("arch"))
    if arch and arch != profile.cpu.arch:
        raise BoardTimingsError(f"--board-timings {p}: measured on an {arch} machine ({fp.get('board') or 'unknown board'}), "
                                f"but profile {profile.name} is an {profile.cpu.arch} board: timings from another "
                                "machine say nothing about this board")
    want = min(profile.runtime.threads, profile.cpu.cores)
    best: dict[str, tuple[int, float]] = {}
    for r in report.get("results") or []:
        if r.get("status") != "ok" or not r.get("file") or not (r.get("latency_ms") or {}).get("p50"):
            continue
        threads = r.get("threads")
        rank = 1_000_000 if threads == want else (threads or 0)
        name = Path(r["file"]).name
        p50 = float(r["latency_ms"]["p50"])
        for k in (name, Path(name).stem):
            if k not in best or rank > best[k][0]:
                best[k] = (rank, p50)
    if not best:
        raise BoardTimingsError(f"--board-timings {p}: no successful model measurement in it")
    return BoardTimings(p, made_for or guessed, want, {k: v for k, (_, v) in best.items()})


def board_speedup(fp32: Path, variant: Path, profile: DeviceProfile, timings: BoardTimings | None = None, *,
                  cards: tuple = (None, None)) -> dict:
    """How much faster ``variant`` runs than ``fp32`` on the board (the int8 speed target of
    :mod:`export.select.targets` is judged on this, not on the build machine). ``cards`` (fp32's,
    the variant's) give the MACs of a file of free input size.

    Returns:
        ``{"fp32_ms", "ms", "speedup", "basis"}``: board timings when both files were measured
        there, else the cost model's estimates; ``speedup`` is ``None`` when the cost model cannot
        bound the variant (a runtime fact excludes it).
    """
    if timings is not None:
        a, b = timings.latency(fp32), timings.latency(variant)
        if a and b:
            return {"fp32_ms": a, "ms": b, "speedup": a / b, "basis": BASIS_BOARD_TIMINGS, "board": profile.name}
    ea = estimate(fp32, None, profile, card=cards[0])
    eb = estimate(variant, None, profile, card=cards[1], fp32_partitions=ea.partitions)
    ratio = None if eb.excluded is not None else ea.estimate_ms / eb.estimate_ms
    return {"fp32_ms": round(ea.estimate_ms, 4), "ms": round(eb.estimate_ms, 4), "speedup": ratio,
            "basis": BASIS_COST_MODEL, "board": profile.name}


@dataclass(frozen=True)
class Choice:
    """The variant chosen for a board and why."""

    index: int  # into the candidates given to choose()
    basis: str
    board: str
    reason: str
    estimates: dict  # file -> Estimate.to_dict() (cost model) or {"board_ms": …} (board timings)

    def to_dict(self, variant_key: str) -> dict:
        return {"variant": variant_key, "basis": self.basis, "board": self.board, "why": self.reason,
                "estimates": self.estimates}


def _pick(costs: Sequence[tuple[int, float, int]]) -> tuple[int, int]:
    """(chosen index, fastest index) from (index, cost, size): the smallest file within TIE of the fastest."""
    fastest = min(costs, key=lambda c: c[1])
    ties = [c for c in costs if c[1] <= fastest[1] * (1 + TIE)]
    return min(ties, key=lambda c: (c[2], c[1]))[0], fastest[0]


def choose(candidates: Sequence[tuple[Path, Target, int, bool, object]], profile: DeviceProfile,
           timings: BoardTimings | None = None) -> Choice:
    """Choose among ``(path, target, size, passed, card)`` the variant that runs fastest on the board.

    Only variants that passed their gate are candidates. With board timings that cover at least
    one of them, the fastest measured wins (basis ``board-timings``); otherwise the cost model
    decides (basis ``cost-model``), and the reason says why the timings were not used.

    Raises:
        ValueError: no candidate passed.
    """
    ok = [i for i, c in enumerate(candidates) if c[3]]
    if not ok:
        raise ValueError("no variant passed its gate")
    note = ""
    if timings is not None:
        measured = {i: timings.latency(candidates[i][0]) for i in ok}
        timed = [(i, ms, candidates[i][2]) for i, ms in measured.items() if ms is not None]
        if timed:
            idx, fastest = _pick(timed)
            untimed = [candidates[i][0].name for i, ms in measured.items() if ms is None]
            why = (f"fastest on the board itself: {candidates[idx][0].name} at {measured[idx]:.2f} ms "
                   f"(p50, {timings.threads} thread(s), {timings.path.name})")
            if idx != fastest:
                why = (f"smallest variant within {TIE:.0%} of the fastest on the board: {candidates[idx][0].name} at "
                       f"{measured[idx]:.2f} ms vs {measured[fastest]:.2f} ms ({timings.path.name})")
            if untimed:
                why += f"; not measured on the board, so not considered: {', '.join(untimed)}"
            return Choice(idx, BASIS_BOARD_TIMINGS, profile.name, why,
                          {candidates[i][0].name: {"board_ms": ms} for i, ms in measured.items()})
        note = (f"; {timings.path.name} has no timing for any passing variant "
                f"({', '.join(candidates[i][0].name for i in ok)}), so the cost model decided")
    ref = next((c[0] for c in candidates if c[1].format is Format.TFLITE and c[1].precision is Precision.FP32), None)
    ref_parts = xnnpack_partitions(ref) if ref is not None else None
    ests, uncounted = {}, []
    for i in ok:
        try:
            ests[i] = estimate(candidates[i][0], candidates[i][1], profile, card=candidates[i][4],
                               fp32_partitions=ref_parts)
        except ValueError as e:  # MACs not countable: this variant cannot be estimated
            uncounted.append(str(e))
    if not ests:
        raise ValueError("the cost model can estimate none of the passing variants (" + "; ".join(uncounted) + ")")
    ok = list(ests)
    usable = [i for i in ok if ests[i].excluded is None] or ok
    idx, fastest = _pick([(i, ests[i].estimate_ms, candidates[i][2]) for i in usable])
    e = ests[idx]
    facts = {f.name: f.note for f in (*RUNTIME_FACTS, XNNPACK_SPLIT)}
    used = "; ".join(f"{n}: {facts[n]}" for n in dict.fromkeys(x for est in ests.values() for x in est.facts))
    why = (f"lowest estimate on {profile.board} by its cost model: {e.file} at {e.estimate_ms:.3f} ms "
           f"({e.bound}-bound; {', '.join(f'{n / 1e6:.0f} M {p}' for p, n in e.by_precision.items())} MACs over "
           f"the profile's peaks, {min(profile.runtime.threads, profile.cpu.cores)}/{profile.cpu.cores} cores)")
    if idx != fastest:
        why = (f"smallest variant within {TIE:.0%} of the lowest estimate on {profile.board}: {e.file} at "
               f"{e.estimate_ms:.3f} ms vs {ests[fastest].estimate_ms:.3f} ms for {ests[fastest].file}")
    left_out = [ests[i].file for i in ok if i not in usable]
    if left_out:
        why += f"; not chosen by the cost model (a runtime fact it cannot bound): {', '.join(left_out)}"
    elif e.excluded is not None:
        why += ("; every passing variant has a runtime fact the roofline cannot bound: the estimate ranks them "
                "anyway, give --board-timings to decide on the board")
    if uncounted:
        why += "; not estimated: " + "; ".join(uncounted)
    if used:
        why += f". Runtime facts applied: {used}"
    return Choice(idx, BASIS_COST_MODEL, profile.name, why + note,
                  {ests[i].file: ests[i].to_dict() for i in ok})

