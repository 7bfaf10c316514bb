"""Post-training int8 methods × figures on the three splits, one model at a time.

    nice .venv/bin/python benchmarks/int8_methods.py --model mobilenet_v2 [--runtime onnx|tflite] [--json out.json]

Calibrates on the role's calibration split (``export/gates/roles.py``), measures every method's variant
on the selection split (what a build would choose on) and on the report split (nothing chosen on
it), and times it against the fp32 model of the same runtime, in this process (ratios, not ms).
Intermediate files are cached under ``$EDGE_CACHE_DIR/int8_methods`` (default a temp dir).
Methods (each row says what it gives, losers included):

- ONNX (onnxruntime QDQ, U8S8 per-channel unless said): MinMax with and without bias correction,
  Percentile 99.999, Entropy, per-tensor MinMax, AdaRound-style rounding (``export/quant/adaround.py``)
  with MinMax or Percentile ranges, and the gate-driven fallback (worst layers float).
- TFLite (ai-edge-quantizer): activation statistics moving-average / min-max / MSE, int8 × int8,
  and LiteRT 16×8 (int16 activations).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = {"mobilenet_v2": "classifier", "yolox_nano_416": "detector", "sface_2021dec_fp32": "face_embedder",
          "mobilefacenet_128d": "face_embedder"}
HEAD = {"classifier": ("labelled_top1", "labelled_top1_float", 100, "top-1 %"),
        "detector": ("map50_95", "map50_95_float", 100, "mAP50-95 %"),
        "face_embedder": ("roc_auc", "roc_auc_float", 1, "ROC AUC")}


def _source(name: str, work: Path):
    from edge.cards import load_card
    from edge.registry import resolve
    from export.onnx.prep import PrepOptions, prepare_onnx

    if name == "mobilenet_v2":
        from export.sources.classifier import export_mobilenet_v2_onnx

        p, c = export_mobilenet_v2_onnx(work / "src")
        return p, load_card(c), None
    ref = resolve(name)
    dst = work / f"{name}_fp32.onnx"
    if not dst.is_file():
        prepare_onnx(ref.path, dst, PrepOptions(rewrite_prelu=True))
    return dst, ref.card, ref


def _latency(path: Path, feeds: dict, threads: int = 1, runs: int = 30) -> float:
    from edge.engines import load_engine

    with load_engine(path, threads=threads) as eng:
        f = {i.name: x for i, x in zip(eng.inputs, feeds.values())}
        for _ in range(3):
            eng.run(f)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            eng.run(f)
            ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=list(MODELS), default="mobilenet_v2")
    ap.add_argument("--runtime", choices=("onnx", "tflite"), default="onnx")
    ap.add_argument("--methods", default="", help="semicolon-separated subset of method labels")
    ap.add_argument("--max-calibration", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from export.gates.base import GateLimits
    from export.gates.factory import make_gate
    from export.gates.roles import calibration_reader, role_data
    from export.select.targets import MIN_SPEEDUP, TARGETS

    role = MODELS[args.model]
    work = Path(os.environ.get("EDGE_CACHE_DIR") or tempfile.gettempdir()) / "int8_methods" / args.model
    work.mkdir(parents=True, exist_ok=True)
    src, card, ref = _source(args.model, work)
    data = role_data(role, model_name=card.name)
    reader = calibration_reader(role, card, max_images=args.max_calibration)
    feeds = reader.feeds(0)
    limits = GateLimits()
    sel = make_gate(role, src, card, limits, data=data.selecting())
    rep = make_gate(role, src, card, limits, data=data)
    metric, fmetric, scale, unit = HEAD[role]
    print(f"# {args.model} ({role}) on {args.runtime}; splits: " + json.dumps(
        {k: v["files"] for k, v in data.record().items() if k != "note"}), flush=True)
    rows = []

    def row(label: str, path: Path, variant_card=None, fp32_ms: float | None = None, note: str = "") -> dict:
        t0 = time.perf_counter()
        gs, gr = sel.evaluate(path, card=variant_card), rep.evaluate(path, card=variant_card)
        ms = _latency(path, feeds)
        r = {"method": label, "selection": gs.metrics.get(metric), "selection_float": gs.metrics.get(fmetric),
             "report": gr.metrics.get(metric), "report_float": gr.metrics.get(fmetric), "ms": round(ms, 3),
             "speedup": round(fp32_ms / ms, 2) if fp32_ms else 1.0, "note": note,
             "seconds": round(time.perf_counter() - t0, 1)}
        for k in ("selection", "report"):
            r[f"{k}_drop"] = None if r[k] is None else round((r[f"{k}_float"] - r[k]) * scale, 3)
        t = TARGETS.get(role)
        r["meets"] = bool(t and r["report_drop"] is not None and r["report_drop"] <= t.max_drop * scale + 1e-9
                          and r["selection_drop"] <= t.max_drop * scale + 1e-9 and r["speedup"] >= MIN_SPEEDUP)
        rows.append(r)
        print(f"{label:38s} sel {r['selection'] * scale:8.3f} (Δ {r['selection_drop']:+.3f})  rep "
              f"{r['report'] * scale:8.3f} (Δ {r['report_drop']:+.3f})  {ms:7.2f} ms  ×{r['speedup']:.2f}  "
              f"{'MEETS' if r['meets'] else ''} {note}", flush=True)
        return r

    want = set(filter(None, (m.strip() for m in args.methods.split(";"))))
    if args.runtime == "onnx":
        from export.quant.adaround import AdaRoundOptions
        from export.quant.quantize import CalibrationMethod, QuantOptions, quantize_onnx_int8

        base = row("onnx fp32", src)
        methods = {
            "minmax per-channel + bias corr.": QuantOptions(),
            "minmax per-channel, no bias corr.": QuantOptions(bias_correction=False),
            "minmax per-tensor, no bias corr.": QuantOptions(per_channel=False, bias_correction=False),
            "percentile 99.999 + bias corr.": QuantOptions(calibration=CalibrationMethod.PERCENTILE, percentile=99.999),
            "percentile 99.99 + bias corr.": QuantOptions(calibration=CalibrationMethod.PERCENTILE, percentile=99.99),
            "entropy + bias corr.": QuantOptions(calibration=CalibrationMethod.ENTROPY),
            "minmax per-channel + adaround + bias corr.": QuantOptions(adaround=AdaRoundOptions()),
            "minmax per-channel + adaround, no bias corr.": QuantOptions(adaround=AdaRoundOptions(),
                                                                         bias_correction=False),
            "percentile 99.999 + adaround + bias corr.": QuantOptions(calibration=CalibrationMethod.PERCENTILE,
                                                                      percentile=99.999, adaround=AdaRoundOptions()),
        }
        for label, opts in methods.items():
            if want and label not in want:
                continue
            dst = work / f"onnx_{label.replace(' ', '_').replace('/', '')}_{len(reader)}.onnx"
            made = 0.0
            if not dst.is_file():
                cache = work / f"cal-{opts.calibration.value}-{opts.effective_percentile}-{len(reader)}.json"
                t0 = time.perf_counter()
                quantize_onnx_int8(src, dst, reader, opts, calibration_cache=cache)
                made = time.perf_counter() - t0
            note = {k: v for k, v in opts.describe().items() if k in ("calibration", "per_channel", "bias_correction")}
            if opts.adaround is not None:
                note["adaround_iterations"] = opts.adaround.iterations
            if made:
                note["quantise_s"] = round(made, 1)
            row(label, dst, fp32_ms=base["ms"], note=json.dumps(note))
        if not want or "fallback" in want:
            from export.quant.fallback import FallbackOptions, quantize_with_fallback
            from export.select.report_split import selection_limits

            fsel = make_gate(role, src, card, selection_limits(role, limits), data=data.selecting())
            dst = work / f"onnx_fallback_{len(reader)}.onnx"
            res = quantize_with_fallback(src, dst, reader, fsel, QuantOptions(), FallbackOptions(), model_name=card.name,
                                         progress=lambda m: print("   ", m, flush=True))
            row(f"fallback: {len(res.float_nodes)} node(s) float", dst, fp32_ms=base["ms"],
                note=f"{res.chosen.calibration.value}; {res.reason[:120]}")
            # The same float nodes (chosen on the selection split) with AdaRound on the int8 rest.
            ada = dataclasses.replace(res.options, adaround=AdaRoundOptions())
            dst = work / f"onnx_fallback_adaround_{len(reader)}.onnx"
            t0 = time.perf_counter()
            quantize_onnx_int8(src, dst, reader, ada, model_name=card.name)
            row(f"fallback's {len(res.float_nodes)} float node(s) + adaround", dst, fp32_ms=base["ms"],
                note=json.dumps({"calibration": ada.calibration.value, "quantise_s": round(time.perf_counter() - t0, 1)}))
    else:
        from export.tflite.convert import CalibrationStat, TfliteQuantOptions, calibrate_tflite, quantize_tflite, tflite_card
        from export.tflite.convert import onnx_to_tflite

        fp32 = work / f"{args.model}_fp32.tflite"
        if not fp32.is_file():
            onnx_to_tflite(ref.path if ref is not None else src, fp32, model_name=card.name)  # the original graph
        fcard = tflite_card(card, fp32, "tflite_fp32")
        base = row("tflite fp32", fp32, fcard)
        for stat in CalibrationStat:
            for bits in (8, 16):
                label = f"AEQ static w8a{bits}, {stat.value}"
                if want and label not in want:
                    continue
                dst = work / f"tflite_{stat.value}_a{bits}.tflite"
                opts = TfliteQuantOptions(stat=stat, activation_bits=bits)
                try:
                    if not dst.is_file():
                        qsvs = calibrate_tflite(fp32, reader, opts, model_name=card.name)
                        quantize_tflite(fp32, dst, "tflite_int8", qsvs=qsvs, options=opts, model_name=card.name)
                    row(label, dst, tflite_card(card, dst, "tflite_int8"), base["ms"])
                except Exception as e:  # a method that cannot be built is a row too
                    rows.append({"method": label, "error": f"{type(e).__name__}: {e}"[:300]})
                    print(f"{label:38s} FAILED: {rows[-1]['error']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "runtime": args.runtime, "splits": data.record(),
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
