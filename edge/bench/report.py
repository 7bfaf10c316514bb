"""Benchmark reports: versioned JSON, a Markdown table, CSV and PNG charts.

The JSON is the record; the others are views of it. Its layout is described by the JSON Schema
``edge/bench/schema/bench_report.v1.json`` and carries ``"schema_version": 1``; a reader
refuses other versions (:func:`load_report`) instead of misreading them. JSON is written to a
temporary file and renamed, so an interrupted run never leaves half a report.

Charts need matplotlib (``pip install 'edgesight[plot]'``), imported only when a chart is drawn.

Example:
    >>> report = build_report(config, fingerprint, results, profile=None)   # doctest: +SKIP
    >>> write_outputs(report, "out/", ("json", "md", "png"))              # doctest: +SKIP
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from pathlib import Path

import msgspec

from edge import __version__
from edge.errors import BenchReportError

__all__ = ["SCHEMA_VERSION", "SCHEMA_PATH", "FORMATS", "build_report", "load_report", "write_json", "to_markdown",
           "to_csv", "write_charts", "write_outputs", "result_key", "require_matplotlib"]

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schema") / "bench_report.v1.json"
REPORT_KIND = "edgesight-bench"
FORMATS = ("json", "md", "csv", "png")
OUTPUT_NAMES = {"json": "bench.json", "md": "bench.md", "csv": "bench.csv"}
CHART_NAMES = ("latency_distribution.png", "variants_p50.png")
_MB = 1024 * 1024
#: Charts switch to a log latency axis when the slowest p50 is this many times the fastest.
LOG_SCALE_RATIO = 20.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def build_report(config: dict, fingerprint: dict, results: list[dict], *, profile: dict | None = None,
                 thermal_before: dict | None = None, thermal_after: dict | None = None, interrupted: bool = False,
                 planned: int | None = None, command: list[str] | None = None, created: str | None = None) -> dict:
    """Assemble a schema-v1 report dict from a run's parts."""
    return {"schema_version": SCHEMA_VERSION, "kind": REPORT_KIND, "edgesight_version": __version__,
            "created": created or _now(), "finished": None if interrupted else _now(),
            "command": list(command) if command else None, "config": config,
            "device": {"fingerprint": fingerprint, "thermal_before": thermal_before, "thermal_after": thermal_after},
            "profile": profile, "interrupted": interrupted,
            "planned": planned if planned is not None else len(results), "results": results}


Num = float | None  # msgspec's float accepts JSON integers too


class _Latency(msgspec.Struct):
    p50: float
    mean: float
    p90: Num = None
    p99: Num = None
    std: Num = None
    max: Num = None
    n: int | None = None


class _Stage(msgspec.Struct):
    p50: Num = None
    mean: Num = None
    p90: Num = None
    max: Num = None


class _Inputs(msgspec.Struct):
    sha256: str | None = None


class _Macs(msgspec.Struct):
    total: Num = None


class _Roofline(msgspec.Struct):
    precision: str | None = None
    lower_bound_ms: Num = None
    efficiency: Num = None
    far_from_bound: bool | None = None


class _Result(msgspec.Struct):
    """The fields of a result that comparisons and views read (others are kept as they are)."""

    variant: str | None = None
    backend: str | None = None
    threads: int | None = None
    status: str | None = None
    error: str | None = None
    samples_ms: list[float] | None = None
    latency_ms: _Latency | None = None
    process_p50_ms: list[float] | None = None
    inputs: _Inputs | None = None
    size_bytes: int | None = None
    load_ms: Num = None
    first_inference_ms: Num = None
    throughput_ips: Num = None
    peak_rss_mb: Num = None
    macs: _Macs | None = None
    roofline: _Roofline | None = None
    stages: dict[str, _Stage] | None = None


class _Fingerprint(msgspec.Struct):
    board: str | None = None
    cpu_model: str | None = None
    cores: int | None = None
    governor: str | None = None
    os: str | None = None
    python: str | None = None
    versions: dict[str, str | None] | None = None


class _Throttled(msgspec.Struct):
    raw: str | int | None = None
    flags: list[str] = []


class _Nvpmodel(msgspec.Struct):
    mode: str | int | None = None


class _Thermal(msgspec.Struct):
    cpu_temp_c: Num = None
    throttled: _Throttled | None = None
    nvpmodel: _Nvpmodel | None = None


class _Device(msgspec.Struct):
    fingerprint: _Fingerprint | None = None
    thermal_before: _Thermal | None = None
    thermal_after: _Thermal | None = None


class _Compute(msgspec.Struct):
    peak_gflops_fp32: Num = None
    peak_gops_int8: Num = None
    calibrated: bool | None = None


class _Profile(msgspec.Struct):
    name: str | None = None
    compute: _Compute | None = None


class _Config(msgspec.Struct):
    iters: int | None = None
    duration_s: Num = None
    warmup: int | None = None


class _ThermalCheck(msgspec.Struct):
    crossed: bool | None = None
    throttle_c: Num = None
    max_temp_c: Num = None
    firmware_flags: list[str] = []


class _Shape(msgspec.Struct):
    results: list[_Result]
    device: _Device
    created: str
    profile: _Profile | None = None
    config: _Config | None = None
    interrupted: bool | None = None
    planned: int | None = None
    thermal_check: _ThermalCheck | None = None


def load_report(path: str | Path) -> dict:
    """Read a report, checking it is one and of a version this code understands.

    Raises:
        BenchReportError: unreadable, not JSON, not a bench report, or another schema version.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise BenchReportError(f"cannot read benchmark report {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BenchReportError(f"{p}: not UTF-8 text (byte {e.start}); expected a JSON bench report") from None
    except json.JSONDecodeError as e:
        raise BenchReportError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != REPORT_KIND:
        raise BenchReportError(f"{p}: not an edge bench report (expected \"kind\": \"{REPORT_KIND}\")")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BenchReportError(f"{p}: schema_version {data.get('schema_version')!r} is not supported "
                               f"(this edgesight reads version {SCHEMA_VERSION})")
    if not isinstance(data.get("results"), list):
        raise BenchReportError(f"{p}: field \"results\" must be a list")
    try:
        msgspec.convert(data, _Shape)
    except msgspec.ValidationError as e:
        raise BenchReportError(f"{p}: {e} (see {SCHEMA_PATH.name})") from None
    return data


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``report`` atomically (temporary file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def result_key(r: dict) -> str:
    """``variant | backend | threads`` — how results are matched across reports."""
    threads = "default" if r.get("threads") is None else str(r["threads"])
    return f"{r.get('variant')} | {r.get('backend') or '-'} | t={threads}"


def _f(x, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _row(r: dict) -> dict:
    lat = r.get("latency_ms") or {}
    roof = r.get("roofline") or {}
    macs = (r.get("macs") or {}).get("total")
    return {"variant": r.get("variant"), "backend": r.get("backend") or "", "threads":
            "default" if r.get("threads") is None else r.get("threads"), "status": r.get("status"),
            "size_mb": _f(r["size_bytes"] / _MB) if r.get("size_bytes") else "",
            "load_ms": _f(r.get("load_ms"), 1), "first_ms": _f(r.get("first_inference_ms")),
            "p50_ms": _f(lat.get("p50")), "p90_ms": _f(lat.get("p90")), "p99_ms": _f(lat.get("p99")),
            "mean_ms": _f(lat.get("mean")), "std_ms": _f(lat.get("std")), "max_ms": _f(lat.get("max")),
            "n": lat.get("n", ""), "ips": _f(r.get("throughput_ips"), 1), "peak_rss_mb": _f(r.get("peak_rss_mb"), 1),
            "gmacs": _f(macs / 1e9, 3) if macs else "", "precision": roof.get("precision", ""),
            "bound_ms": _f(roof.get("lower_bound_ms"), 3),
            "efficiency_pct": _f(roof["efficiency"] * 100, 1) if roof.get("efficiency") is not None else "",
            "far_from_bound": roof.get("far_from_bound", ""), "error": r.get("error") or ""}


def to_csv(report: dict) -> str:
    """One CSV row per result, the Markdown table's columns plus ``error``."""
    rows = [_row(r) for r in report["results"]]
    buf = io.StringIO()
    fields = list(_row({}).keys())
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _device_line(report: dict) -> str:
    fp = report["device"]["fingerprint"] or {}
    parts = [fp.get("board") or "unknown board", fp.get("cpu_model"), f"{fp.get('cores')} cores" if fp.get("cores")
             else None, f"governor {fp['governor']}" if fp.get("governor") else None, fp.get("os"),
             f"Python {fp.get('python')}"]
    versions = fp.get("versions") or {}
    parts += [f"{k} {versions[k]}" for k in ("onnxruntime", "ai-edge-litert", "tflite-runtime") if k in versions]
    return ", ".join(p for p in parts if p)


def _thermal_line(report: dict) -> str | None:
    before, after = report["device"].get("thermal_before") or {}, report["device"].get("thermal_after") or {}
    if before.get("cpu_temp_c") is None and not before.get("throttled") and not before.get("nvpmodel"):
        return None
    bits = [f"CPU {_f(before.get('cpu_temp_c'), 1)} → {_f(after.get('cpu_temp_c'), 1)} °C"]
    for snap, when in ((before, "before"), (after, "after")):
        if snap.get("throttled"):
            bits.append(f"throttled {when}: {snap['throttled']['raw']} ({', '.join(snap['throttled']['flags']) or 'none'})")
    if after.get("nvpmodel"):
        bits.append(f"nvpmodel {after['nvpmodel']['mode']}")
    return "; ".join(bits)


def to_markdown(report: dict) -> str:
    """A Markdown summary: device line, the results table, pipeline stage breakdowns, flags."""
    lines = [f"# edge bench — {report['created']}", "", f"Device: {_device_line(report)}"]
    thermal = _thermal_line(report)
    if thermal:
        lines.append(f"Thermal: {thermal}")
    check = report.get("thermal_check") or {}
    if check.get("crossed"):
        hot = check.get("max_temp_c")
        flags = f"; firmware reports {', '.join(check.get('firmware_flags') or [])}" if check.get("firmware_flags") else ""
        lines.append(f"**Thermal throttle limit crossed** ({_f(check.get('throttle_c'), 1)} °C; hottest reading "
                     f"{_f(hot, 1) or '-'} °C{flags}): the latencies below may be pessimistic.")
    prof = report.get("profile")
    if prof:
        c = prof.get("compute") or {}
        lines.append(f"Profile: {prof.get('name')} (peak fp32 {_f(c.get('peak_gflops_fp32'), 1)} GFLOP/s, "
                     f"int8 {_f(c.get('peak_gops_int8'), 1)} GOP/s, {'calibrated' if c.get('calibrated') else 'datasheet'})")
    cfg = report.get("config") or {}
    how = f"{cfg.get('iters')} iterations" if cfg.get("iters") else f"{cfg.get('duration_s')} s"
    lines.append(f"Runs: {cfg.get('warmup')} warm-up, then {how} per variant, each in a fresh process")
    if report.get("interrupted"):
        lines.append(f"**Interrupted**: {sum(1 for r in report['results'] if r.get('status') != 'skipped')} of "
                     f"{report.get('planned')} planned measurements were taken.")
    head = ["variant", "backend", "threads", "status", "size MB", "load ms", "first ms", "p50 ms", "p90 ms", "p99 ms",
            "mean ± std ms", "max ms", "inf/s", "peak RSS MB", "GMACs", "bound ms", "efficiency"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flagged = []
    for r in report["results"]:
        row = _row(r)
        eff = f"{row['efficiency_pct']} %" if row["efficiency_pct"] else ""
        if row["far_from_bound"] is True:
            eff += " ⚠"
            flagged.append(result_key(r))
        mean = f"{row['mean_ms']} ± {row['std_ms']}" if row["mean_ms"] else ""
        cells = [row["variant"], row["backend"], row["threads"], row["status"], row["size_mb"], row["load_ms"],
                 row["first_ms"], row["p50_ms"], row["p90_ms"], row["p99_ms"], mean, row["max_ms"], row["ips"],
                 row["peak_rss_mb"], row["gmacs"], row["bound_ms"], eff]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for r in report["results"]:
        if r.get("error"):
            lines.append(f"\n- {result_key(r)}: {r['status']}: {r['error']}")
    partial = [f"{result_key(r)} ({len(r['macs']['uncounted'])} nodes)" for r in report["results"]
               if (r.get("macs") or {}).get("uncounted")]
    if partial:
        lines.append("\nGMACs are a lower bound for models without a card: the bare-ONNX fallback counts only the "
                     "Conv/Gemm/MatMul nodes whose shapes the file states (build the model with edge-export for the "
                     "full export-time count): " + "; ".join(partial))
    if flagged:
        lines.append("\n⚠ below 5 % of the roofline bound (far from what the cores could do): " + "; ".join(flagged))
    over = [result_key(r) for r in report["results"] if ((r.get("roofline") or {}).get("efficiency") or 0) > 1]
    if over:
        lines.append("\nAbove 100 % of the bound (the profile's peak underestimates these cores; try --calibrate "
                     "on an idle machine): " + "; ".join(over))
    for r in report["results"]:
        if r.get("stages"):
            lines += ["", f"Stages of {result_key(r)} (ms per frame):", "", "| stage | p50 | mean | p90 | max |",
                      "|---|---|---|---|---|"]
            for name, s in r["stages"].items():
                lines.append(f"| {name} | {_f(s['p50'])} | {_f(s['mean'])} | {_f(s['p90'])} | {_f(s['max'])} |")
    return "\n".join(lines) + "\n"


def require_matplotlib():
    """Import matplotlib with the Agg backend, or raise ImportError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("PNG charts need matplotlib: pip install 'edgesight[plot]' "
                          "(or drop png from --format)") from e
    return plt


def _label(r: dict) -> str:
    threads = "default" if r.get("threads") is None else r["threads"]
    return f"{r['variant']}\n{r.get('backend') or '-'}, t={threads}"


def write_charts(report: dict, out_dir: str | Path) -> list[Path]:
    """Draw the latency distribution per variant and the variants' p50 side by side.

    Returns:
        The PNG files written (none when no result has samples).
    """
    plt = require_matplotlib()
    measured = [r for r in report["results"] if r.get("samples_ms")]
    if not measured:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [_label(r) for r in measured]
    p50s = [r["latency_ms"]["p50"] for r in measured]
    log = max(p50s) / max(min(p50s), 1e-9) > LOG_SCALE_RATIO

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(measured) + 2), 5.2))
    ax.boxplot([r["samples_ms"] for r in measured], whis=(1, 99))
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("latency per inference (ms)")
    ax.set_title("Latency distribution (box: IQR, whiskers: p1–p99)")
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths = [out / CHART_NAMES[0]]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    groups = list(dict.fromkeys(f"{r['variant']}\n{r.get('backend') or '-'}" for r in measured))
    threads = list(dict.fromkeys(r.get("threads") for r in measured))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 5.2))
    bar = 0.8 / len(threads)
    for j, t in enumerate(threads):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            for r in measured:
                if f"{r['variant']}\n{r.get('backend') or '-'}" == g and r.get("threads") == t:
                    lat = r["latency_ms"]
                    xs.append(i + (j - (len(threads) - 1) / 2) * bar)
                    ys.append(lat["p50"])
                    lo.append(lat["p50"] - lat["min"])
                    hi.append(lat["p90"] - lat["p50"])
                    break
        ax.bar(xs, ys, bar, yerr=[lo, hi], capsize=3, label=f"threads {'default' if t is None else t}")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("p50 latency (ms); whiskers min–p90")
    ax.set_title("Variants side by side")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(out / CHART_NAMES[1])
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def write_outputs(report: dict, out_dir: str | Path, formats: tuple | list) -> list[Path]:
    """Write the report in every requested format into ``out_dir``; returns the files written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(unknown)}; valid: {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "json" in formats:
        written.append(write_json(report, out / OUTPUT_NAMES["json"]))
    if "md" in formats:
        (out / OUTPUT_NAMES["md"]).write_text(to_markdown(report), encoding="utf-8")
        written.append(out / OUTPUT_NAMES["md"])
    if "csv" in formats:
        (out / OUTPUT_NAMES["csv"]).write_text(to_csv(report), encoding="utf-8")
        written.append(out / OUTPUT_NAMES["csv"])
    if "png" in formats:
        written.extend(write_charts(report, out))
    return written
