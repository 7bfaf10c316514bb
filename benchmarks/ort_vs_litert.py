"""onnxruntime against LiteRT on the same model, measured in one run.

The same float network is exported twice at run time into a temporary directory: to ONNX with
torch's exporter (run by onnxruntime) and to TFLite fp32 with litert-torch (run by LiteRT, whose
CPU path is XNNPACK). Both get the same real sample images, preprocessed by the same card.

Models (``--models``): ``mobilenet_v2`` (torchvision ImageNet weights; default),
``mobilenet_v3_small`` and ``mobilenet_v3_large`` (random weights: timing only). Each
conversion takes about half a minute. ``--variants DIR`` adds every source model of an export
output that has both an ``.onnx`` and a ``.tflite`` variant of the same precision.

The shared face models are not in this comparison: BlazeFace exists only as TFLite and
YuNet/ULFD only as ONNX, and this workstation has no ONNX↔TFLite converter for them.

Prints p50 latencies and ``onnxruntime p50 / LiteRT p50`` (above 1: LiteRT is faster).

Usage:
    .venv/bin/python benchmarks/ort_vs_litert.py [--models mobilenet_v2,mobilenet_v3_small]
        [--iters 50] [--threads 1,2] [--variants DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import latency_common as lc  # noqa: E402  (puts the project root on sys.path)

from edge.bench.runner import variants_from_models  # noqa: E402

ARCHS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def _pairs_from_variants(directory: str) -> tuple[list, list[tuple[str, str, str]]]:
    variants = lc.bundle_variants(directory)
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for v in variants:
        if v.card is None or v.skip_reason:
            continue
        groups.setdefault((lc.source_of(v.card), lc.precision_of(v.card)), {}).setdefault(v.path.suffix, v.name)
    pairs = [(f"{src} {prec}", g[".onnx"], g[".tflite"]) for (src, prec), g in sorted(groups.items())
             if ".onnx" in g and ".tflite" in g]
    return variants, pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    lc.add_common_args(p)
    p.add_argument("--models", default="mobilenet_v2", help=f"comma-separated, of {', '.join(ARCHS)}")
    p.add_argument("--variants", metavar="DIR", help="export output directory with ONNX + TFLite variants")
    args = p.parse_args(argv)
    archs = [a.strip() for a in args.models.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; valid: {', '.join(ARCHS)}")

    variants, pairs = [], []
    with lc.temp_dir("ort-vs-litert-") as tmp:
        for arch in archs:
            d = Path(tmp) / arch
            d.mkdir()
            _, onnx_card, model = lc.export_mobilenet(arch, d)
            tfl_card = lc.convert_tflite_fp32(model, onnx_card, d)
            variants += variants_from_models([str(onnx_card), str(tfl_card)])
            pairs.append((f"{arch} fp32", variants[-2].name, variants[-1].name))
        if args.variants:
            more, more_pairs = _pairs_from_variants(args.variants)
            variants += more
            pairs += more_pairs
        results = lc.measure(variants, args)

    rows, out = [], []
    for label, onnx_name, tfl_name in pairs:
        for t in lc.thread_counts(args.threads):
            o, l_ = lc.find(results, onnx_name, "onnxruntime", t), lc.find(results, tfl_name, "litert", t)
            op, lp = (o or {}).get("latency_ms", {}).get("p50"), (l_ or {}).get("latency_ms", {}).get("p50")
            orss, lrss = (o or {}).get("peak_rss_mb"), (l_ or {}).get("peak_rss_mb")
            rows.append((label, "default" if t is None else t, op, lp, lc.ratio(op, lp), orss, lrss))
            out.append({"model": label, "threads": t, "onnxruntime_p50_ms": op, "litert_p50_ms": lp,
                        "ratio_ort_over_litert": lc.ratio(op, lp), "onnxruntime_peak_rss_mb": orss,
                        "litert_peak_rss_mb": lrss})
    print(f"# onnxruntime vs LiteRT latency — {lc.machine_line()}")
    print(f"# {args.iters} timed runs after {args.warmup} warm-up per variant, each in a fresh process; p50 in ms\n")
    lc.print_table(rows, ("model", "threads", "onnxruntime p50", "LiteRT p50", "ort/LiteRT", "ort RSS MB",
                          "LiteRT RSS MB"))
    lc.write_json(args.json, {"machine": lc.machine_line(), "pairs": out, "results": results})
    return 0 if all(r[4] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
