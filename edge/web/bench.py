"""The latest ``edge bench`` report for the page: its summary rows and its charts.

The newest ``bench.json`` under the bench directory is the latest report. Its charts are the PNGs
``edge bench --format png`` wrote beside it; when they are missing and matplotlib is installed they
are drawn once with :func:`edge.bench.report.write_charts` into a ``charts`` folder beside it.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import EdgeError

__all__ = ["latest_report", "chart_path", "BenchNotFound", "REPORT_NAME"]

REPORT_NAME = "bench.json"


class BenchNotFound(EdgeError, LookupError):
    """No bench report (or chart) where one was looked for."""


def _newest(bench_dir: Path | None) -> Path:
    if bench_dir is None:
        raise BenchNotFound("no bench directory configured (edge serve --bench-dir DIR, where `edge bench --out DIR` "
                            "wrote its reports)")
    found = sorted(Path(bench_dir).rglob(REPORT_NAME), key=lambda p: p.stat().st_mtime)
    if not found:
        raise BenchNotFound(f"no {REPORT_NAME} under {bench_dir}: run `edge bench ... --out {bench_dir}`")
    return found[-1]


def _charts(path: Path, report: dict) -> list[Path]:
    from edge.bench.report import CHART_NAMES, write_charts

    here = [path.parent / n for n in CHART_NAMES if (path.parent / n).is_file()]
    if here:
        return here
    drawn = path.parent / "charts"
    have = [drawn / n for n in CHART_NAMES if (drawn / n).is_file()]
    if have:
        return have
    try:
        return list(write_charts(report, drawn))
    except (ImportError, OSError):
        return []


def latest_report(bench_dir: Path | None) -> dict:
    """``{"path", "created", "rows": [...], "charts": [URL, ...]}`` of the newest report."""
    from edge.bench.report import _row, load_report

    path = _newest(bench_dir)
    report = load_report(path)
    charts = _charts(path, report)
    return {"path": str(path), "created": report.get("created"), "device": report.get("device"),
            "rows": [_row(r) for r in report.get("results", [])],
            "charts": [f"/api/bench/charts/{p.name}" for p in charts]}


def chart_path(bench_dir: Path | None, name: str) -> Path:
    from edge.bench.report import CHART_NAMES, load_report

    if name not in CHART_NAMES:
        raise BenchNotFound(f"no chart {name!r}; charts are {', '.join(CHART_NAMES)}")
    path = _newest(bench_dir)
    for p in _charts(path, load_report(path)):
        if p.name == name:
            return p
    raise BenchNotFound(f"chart {name} was not written for {path} (matplotlib missing?)")
