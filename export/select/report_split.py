"""The report split's figures for a model's variants, the int8 targets, and the selection limits.

:func:`report_variants` measures every variant of the runtime's format on the report split
(nothing is chosen on it), checks the int8 targets (:mod:`export.select.targets`) on both splits and
the speed target against the fp32 variant, and marks variants that miss as refused, with the
reason. For a face embedder it also checks the threshold re-derived on the selection pairs
against the report pairs (other people): the FAR a user would get.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from export.select.targets import TARGETS, check_target, is_int8
from export.variants import ExportStepError, get_target

__all__ = ["selection_limits", "report_variants", "paired_speedup", "PAIRED_ROUNDS"]

#: Alternating runs of fp32 and the variant for the speed target (each one median of these).
PAIRED_ROUNDS = 30


def paired_speedup(fp32: Path, variant: Path, backend: str, threads: int, feeds: dict,
                   rounds: int = PAIRED_ROUNDS) -> tuple[float, float, float]:
    """``(fp32 ms, variant ms, speed-up)``: medians of runs alternating between the two models.

    Measured one after the other, two variants see different machine load (other processes on a
    shared machine); alternating run by run gives both the same conditions.
    """
    import statistics

    from edge.bench.timing import timed_calls
    from edge.engines import load_engine

    with load_engine(fp32, backend=backend, threads=threads) as a, load_engine(variant, backend=backend,
                                                                                threads=threads) as b:
        fa = {i.name: x for i, x in zip(a.inputs, feeds.values())}
        fb = {i.name: x for i, x in zip(b.inputs, feeds.values())}
        runs = ((a, fa), (b, fb))
        t = timed_calls(lambda i: runs[i][0].run(runs[i][1]), 2, warmup=6, iters=2 * rounds).samples_ms
        ta, tb = t[0::2], t[1::2]  # alternating call by call
    ma, mb = statistics.median(ta), statistics.median(tb)
    return round(ma, 3), round(mb, 3), round(ma / mb, 3)


def selection_limits(role: str, limits):
    """The profile's gate limits, tightened to the int8 targets of ``role`` (the build chooses with these)."""
    t = TARGETS.get(role)
    if t is None:
        return limits
    field = {"classifier": "max_top1_drop", "detector": "max_map_drop", "face_embedder": "max_auc_drop"}[role]
    return dataclasses.replace(limits, **{field: min(getattr(limits, field), t.max_drop)})


def _threshold_check(v, sel_gate, report_gate, far_key: str) -> dict | None:
    thr = (v.gate.card_thresholds or {}).get("cosine_at_far", {}).get(far_key) if v.gate is not None else None
    if thr is None or not hasattr(report_gate, "rates_at"):
        return None
    rates = report_gate.rates_at(v.path, thr, card=v.card)
    rates["target_far"] = float(far_key)
    rates["derived_on"] = "selection split (people disjoint from the report split's)"
    return rates


def report_variants(role: str, variants: list, sel_gate, report_gate, runtime_format: str,
                    say: Callable[[str], None] = lambda m: None, speed: Callable | None = None) -> None:
    """Fill ``v.report`` and ``v.refused`` of each variant of ``runtime_format`` (in place).

    ``speed(fp32 variant, int8 variant) -> {"fp32_ms", "ms", "speedup", "basis", "board"}`` gives an int8
    variant's speed against fp32 *on the board* (:func:`export.select.cost_model.board_speedup`: timings made
    there, else its cost model); the speed target is judged on it. Without it the build's separate
    latencies (measured here) are used.
    """
    mine = [v for v in variants if get_target(v.key).format.value == runtime_format and v.gate is not None]
    fp32 = next((v for v in mine if get_target(v.key).precision.value == "fp32"), None)
    for v in mine:
        try:
            v.report = report_gate.evaluate(v.path, card=v.card)
        except ExportStepError as e:
            v.refused += (f"could not be measured on the report split: {e}",)
            continue
        if role == "face_embedder":
            far_key = f"{report_gate.limits.target_far:g}"
            check = _threshold_check(v, sel_gate, report_gate, far_key)
            if check is not None:
                v.report.metrics["threshold_check"] = check
        lat, lat32 = v.latency_ms, fp32.latency_ms if fp32 is not None else None
        where = "here"
        if speed is not None and fp32 is not None and is_int8(v.key):
            board = speed(fp32, v)
            v.report.metrics["board_speed"] = board
            lat32, lat = (board["fp32_ms"], board["ms"]) if board["speedup"] is not None else (None, None)
            where = f"on {board['board']} ({board['basis']})"
        missed = check_target(role, v.key, v.gate.metrics, latency_ms=lat, fp32_latency_ms=lat32, split="selection",
                              where=where)
        missed += check_target(role, v.key, v.report.metrics, split="report")
        if missed:
            v.refused += tuple(missed)
            say(f"{v.path.name} does not ship as int8: {'; '.join(missed)}")
