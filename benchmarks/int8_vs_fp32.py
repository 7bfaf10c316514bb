"""int8 against fp32 latency for every model and runtime available here, measured in one run.

Pairs:

1. SFace: ``sface_2021dec_int8bq`` against ``sface_2021dec_fp32`` (same network; the fp32 file is
   the int8bq one with its weights dequantised), onnxruntime.
2. MobileNetV2: the Coral uint8 ``mobilenet_v2_1.0_224_quant`` (LiteRT) against the float
   torchvision MobileNetV2 converted here to TFLite fp32 with litert-torch (same runtime), and
   against the same float network exported to ONNX on onnxruntime (each runtime's usual format).
   The two networks are both MobileNetV2 1.0 at 224 (about 300 M MACs each: TF-slim's and
   torchvision's definitions of the same architecture).
3. Every int8 variant in ``--variants DIR`` (an export output: models + cards) against the fp32
   variant of the same source model (``provenance.derived_from``), preferring the same runtime.

``mobilenet_v1_0.25_128_quant`` has no float counterpart here and is not paired.

Prints the p50 latencies and ``speed-up = fp32 p50 / int8 p50`` (above 1: int8 is faster),
plus the file-size ratio.

Usage:
    .venv/bin/python benchmarks/int8_vs_fp32.py [--iters 50] [--threads 1,2] [--variants DIR]
        [--no-convert] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys

import latency_common as lc  # noqa: E402  (puts the project root on sys.path)

from edge.bench.runner import variants_from_models  # noqa: E402


def _pairs_from_variants(directory: str) -> tuple[list, list[tuple[str, str, str]]]:
    variants = lc.bundle_variants(directory)
    by_source: dict[str, dict[str, list]] = {}
    for v in variants:
        if v.card is None or v.skip_reason:
            continue
        by_source.setdefault(lc.source_of(v.card), {}).setdefault(lc.precision_of(v.card), []).append(v)
    pairs = []
    for source, groups in sorted(by_source.items()):
        floats = groups.get("fp32", [])
        for q in groups.get("int8", []):
            same = [f for f in floats if f.path.suffix == q.path.suffix]
            f = (same or floats or [None])[0]
            if f is not None:
                pairs.append((f"{source} ({q.path.suffix.lstrip('.')} vs {f.path.suffix.lstrip('.')})", f.name, q.name))
    return variants, pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    lc.add_common_args(p)
    p.add_argument("--variants", metavar="DIR", help="export output directory with more variants to pair")
    p.add_argument("--no-convert", action="store_true", help="skip the litert-torch TFLite fp32 conversion (~30 s)")
    args = p.parse_args(argv)

    variants = variants_from_models(["sface_2021dec_fp32", "sface_2021dec_int8bq", "mobilenet_v2_1.0_224_quant"])
    pairs = [("SFace (onnxruntime)", "sface_2021dec_fp32", "sface_2021dec_int8bq")]
    with lc.temp_dir("int8-vs-fp32-") as tmp:
        from pathlib import Path

        onnx_path, onnx_card, model = lc.export_mobilenet("mobilenet_v2", Path(tmp))
        variants += variants_from_models([str(onnx_card)])
        fp32_onnx = variants[-1].name
        if not args.no_convert:
            try:
                tfl_card = lc.convert_tflite_fp32(model, onnx_card, Path(tmp))
                variants += variants_from_models([str(tfl_card)])
                pairs.append(("MobileNetV2 (LiteRT uint8 vs LiteRT fp32)", variants[-1].name,
                              "mobilenet_v2_1.0_224_quant"))
            except Exception as e:  # noqa: BLE001 - the converter is optional; say why and go on
                print(f"litert-torch conversion failed, LiteRT fp32 pair skipped: {type(e).__name__}: {e}",
                      file=sys.stderr)
        pairs.append(("MobileNetV2 (LiteRT uint8 vs onnxruntime fp32)", fp32_onnx, "mobilenet_v2_1.0_224_quant"))
        if args.variants:
            more, more_pairs = _pairs_from_variants(args.variants)
            variants += more
            pairs += more_pairs
        results = lc.measure(variants, args)

    threads = lc.thread_counts(args.threads)
    rows, out = [], []
    for label, f_name, q_name in pairs:
        for t in threads:
            f, q = lc.find(results, f_name, threads=t), lc.find(results, q_name, threads=t)
            fp, qp = (f or {}).get("latency_ms", {}).get("p50"), (q or {}).get("latency_ms", {}).get("p50")
            size = lc.ratio((f or {}).get("size_bytes"), (q or {}).get("size_bytes"))
            rows.append((label, "default" if t is None else t, fp, qp, lc.ratio(fp, qp), size))
            out.append({"pair": label, "fp32": f_name, "int8": q_name, "threads": t, "fp32_p50_ms": fp,
                        "int8_p50_ms": qp, "speedup": lc.ratio(fp, qp), "size_ratio": size})
    print(f"# int8 vs fp32 latency — {lc.machine_line()}")
    print(f"# {args.iters} timed runs after {args.warmup} warm-up per variant, each in a fresh process; p50 in ms\n")
    lc.print_table(rows, ("pair", "threads", "fp32 p50", "int8 p50", "speed-up (fp32/int8)", "size fp32/int8"))
    lc.write_json(args.json, {"machine": lc.machine_line(), "pairs": out, "results": results})
    return 0 if all(r[4] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
