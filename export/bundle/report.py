"""The bundle's Markdown report, rendered from the JSON report (one source of truth).

The JSON report (``report.json``) is built by :mod:`export.build.pipeline`; :func:`render_markdown`
turns it into ``report.md``: a summary table of the chosen variant per role, then per model
every variant's size, speed here, agreement with the float model, gate figures and verdict,
layers kept in float, calibration data and hash, licence, and the converter versions.
"""

from __future__ import annotations

__all__ = ["render_markdown"]

#: Gate metrics shown in the per-variant table, by role (the JSON report has them all).
KEY_METRICS = {
    "classifier": ("top1_agreement", "top5_overlap", "labelled_top1"),
    "detector": ("map50_95", "map50"),
    "face_detector": ("recall", "mean_iou"),
    "face_embedder": ("roc_auc", "mean_cosine_vs_float", "threshold_at_target_far"),
    "liveness": ("agreement", "accuracy", "max_abs_p_live_diff"),
}


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def _model_section(m: dict) -> list[str]:
    role = m["role"]
    lines = [f"### {role}: {m['source']}", ""]
    lic = m["licence"]
    flag = " — **NON-COMMERCIAL** (built with --accept-licence)" if lic.get("non_commercial") else ""
    lines += [f"- licence: {lic.get('spdx')}{flag}{(' — ' + lic['note']) if lic.get('note') else ''}",
              f"- calibration: {m['calibration']['note']}; hash `{m['calibration']['hash'][:16]}…` "
              f"({m['calibration']['images']} inputs)",
              f"- chosen for {m['chosen'].get('board', '?')} by **{m['chosen'].get('basis', '?')}**: "
              f"**{m['chosen']['file']}** — {m['chosen']['reason']}", ""]
    trials = m["calibration"].get("tflite_trials") or []
    if trials:
        lines += ["- full-integer activation ranges tried (all-int8 model, gate score): " + ", ".join(
            f"{t['statistic']} {t['score']:.4f}{' pass' if t['passed'] else ''}" for t in trials)
            + f" → **{m['calibration']['tflite_statistic']}**", ""]
    splits = m.get("splits") or {}
    if splits:
        lines += ["- splits (disjoint; sha256 of sorted names + bytes): " + "; ".join(
            f"{k} {splits[k]['files']} files `{(splits[k]['sha256'] or '')[:12]}`"
            for k in ("calibration", "selection", "report") if k in splits), ""]
    names = KEY_METRICS.get(role, ())
    head = ["variant", "size", "ms on the board (" + str(m["chosen"].get("basis", "?")) + ")", "ms here",
            "cosine vs float", *names, "gate"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    board = m["chosen"].get("estimates") or {}
    for v in m["variants"]:
        est = board.get(v["file"]) or {}
        on_board = est.get("estimate_ms", est.get("board_ms"))
        g = v.get("gate") or {}
        metrics = g.get("metrics", {})
        verdict = "pass" if v["passed"] else "FAIL: " + "; ".join(g.get("failures", []))
        kept = f" ({len(v['kept_float'])} float)" if v["kept_float"] else ""
        lines.append("| " + " | ".join([f"{v['file']}{kept}", _mb(v["size"]), _ms(on_board), _ms(v["latency_ms"]),
                                         _fmt(v["agreement"].get("cosine")),
                                         *[_fmt(metrics.get(n)) for n in names], verdict]) + " |")
    reported = [v for v in m["variants"] if v.get("report")]
    if reported:
        lines += ["", "Report split (nothing was chosen on these figures; float first, then the variant):", "",
                  "| variant | " + " | ".join(f"{n} float | {n}" for n in names) + " | resolution | int8 target |",
                  "|" + "---|" * (3 + 2 * len(names))]
        for v in reported:
            rm = v["report"]["metrics"]
            res = rm.get("resolution") or rm.get("far_resolution") or (1 / rm["images"] if rm.get("images") else None)
            cells = [f"{_fmt(rm.get(n + '_float') if n + '_float' in rm else None)} | {_fmt(rm.get(n))}" for n in names]
            target = "refused: " + "; ".join(v["refused"]) if v.get("refused") else "met / n.a."
            lines.append(f"| {v['file']} | " + " | ".join(cells) + f" | {_fmt(res)} | {target} |")
            tc = rm.get("threshold_check")
            if tc:
                lines.append(f"| ↳ threshold {tc['threshold']:.4f} (from selection) on report pairs | FAR "
                             f"{tc['far']:.4f} (target {tc['target_far']:g}, resolution {tc['far_resolution']:.1e}), "
                             f"TAR {tc['tar']:.3f} |" + " |" * (2 * len(names) - 1) + " | |")
    if m.get("fallback"):
        lines += ["", "Layers kept in float (full-integer TFLite fallback):", ""]
        for step in m["fallback"]:
            layers = ", ".join(f"{x.get('op', '?')}#{x.get('index', '?')}" for x in step.get("layers", [])[:6])
            more = " …" if len(step.get("layers", [])) > 6 else ""
            size = f", {_mb(step['size'])}" if step.get("size") else ""
            lines.append(f"- {step['kept_float']} layer(s) float ({layers}{more}) → {step['file']}{size}: "
                         f"{'accepted' if step['passed'] else 'rejected: ' + '; '.join(step['failures'][:2])}")
        if m.get("fallback_cost"):
            c = m["fallback_cost"]
            lines.append(f"- cost against the all-int8 model: size {c['size_ratio']:.2f}×, "
                         f"time {c['latency_ratio']:.2f}× (here)")
    prep = m.get("prep") or {}
    if prep.get("rewrites"):
        lines += ["", "Graph rewrites: " + ", ".join(f"{r['name']} ×{r['nodes']} (max |Δ| {_fmt(r['max_abs_diff'])})"
                                                      for r in prep["rewrites"])]
    return lines + [""]


def render_markdown(report: dict) -> str:
    """The Markdown report of a build (see the module docstring)."""
    b = report["build"]
    lines = [f"# edgesight bundle — {report['profile']['name']} ({report['profile']['board']})", "",
             f"Built {b['finished']} in {b['seconds']:.0f} s on {b['host_cpus']} CPU(s). Runtime: "
             f"**{report['profile']['backend']}**, {b['threads']} thread(s) for timing.", "",
             f"> {report['speed_note']}", ""]
    if report.get("non_commercial"):
        lines += ["> **Licence warning:** this bundle contains model weights licensed for non-commercial use "
                  "only: " + ", ".join(report["non_commercial"]) + ".", ""]
    lines += ["| role | model | variant | size | chosen by | ms here | gate |", "|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        c = m["chosen"]
        lines.append(f"| {m['role']} | {m['source']} | {c['key']} | {_mb(c['size'])} | {c.get('basis', '?')} | "
                     f"{_ms(c['latency_ms'])} | {'pass' if c['passed'] else 'FAIL'} |")
    lines += ["", "## Models", ""]
    for m in report["models"]:
        lines += _model_section(m)
    lines += ["## Converters", ""] + [f"- {k}: {v}" for k, v in report["converters"].items()] + [""]
    return "\n".join(lines)
