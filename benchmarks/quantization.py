"""Float vs int8 on onnxruntime, per model: accuracy gate figures and speed ratios, with the fallback.

    .venv/bin/python benchmarks/quantization.py [--models mobilenet_v2,yolox_nano_416,...] [--json out.json]

For each model, in one process: the prepared fp32 graph, fp16, onnxruntime's stock
``quantize_static`` (QDQ, per-tensor, MinMax, int8/int8 — its defaults) and this project's int8
(:func:`export.onnx.variants.make_onnx_variants`: U8S8, per-channel, bias correction, calibration
method chosen by the gate, worst layers kept float until the gate passes). Accuracy is measured
on the role's evaluation split (never the calibration images, ``export/gates/roles.py``); latency is the
fastest of 20 runs after 3 warm-ups at 1 and 2 threads on one real input. The machine is shared:
ratios within one run are the figures to read, not absolute milliseconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("mobilenet_v2", "yolox_nano_416", "yunet_s_640x640", "mobilefacenet_128d", "sface_2021dec_fp32",
          "minifasnet_v2_scale2.7", "minifasnet_v1se_scale4.0")
THREADS = (1, 2)
RUNS = 20
#: The metric printed per role (name in GateResult.metrics, label).
HEADLINE = {"classifier": [("top1_agreement", "top-1 agree"), ("top5_overlap", "top-5 overlap")],
            "detector": [("map50_95", "mAP50-95"), ("map50", "mAP50")],
            "face_detector": [("recall", "recall"), ("mean_iou", "mean IoU")],
            "face_embedder": [("roc_auc", "ROC AUC"), ("mean_cosine_vs_float", "cos vs fp32")],
            "liveness": [("agreement", "agree"), ("max_abs_p_live_diff", "max Δp_live")]}


def _source(name: str, work: Path):
    """(source ONNX, card) — exporting the torch sources first."""
    from edge.cards import load_card
    from edge.registry import resolve

    if name == "mobilenet_v2":
        from export.sources.classifier import export_mobilenet_v2_onnx

        p, c = export_mobilenet_v2_onnx(work / "src")
        return p, load_card(c)
    if name.startswith("minifasnet"):
        from export.sources.liveness import export_one

        p, c = export_one(name, work / "src")
        return p, load_card(c)
    ref = resolve(name)
    return ref.path, ref.card


def _row(label, gate, size, lat, float_size, float_lat, role):
    figs = [gate.metrics.get(k) for k, _ in HEADLINE[role]]
    return {"variant": label, "passed": gate.passed, **{lbl: f for (_, lbl), f in zip(HEADLINE[role], figs)},
            "size_ratio": size / float_size, **{f"speedup_{t}t": float_lat[t] / lat[t] for t in lat},
            **{f"ms_{t}t": lat[t] for t in lat}, "failures": list(gate.failures)}


def bench(name: str, work: Path, say) -> dict:
    from export.gates.base import GateLimits
    from export.gates.roles import calibration_reader
    from export.onnx.prep import PrepOptions, prepare_onnx
    from export.onnx.variants import make_onnx_variants
    from export.quant.quantize import CalibrationMethod, QuantOptions, QuantType, quantize_onnx_int8
    from export.select.timing import measure_latency

    t0 = time.perf_counter()
    src, card = _source(name, work)
    rep = make_onnx_variants(src, card, work / name, limits=GateLimits(), threads=THREADS, progress=say)
    fp32 = rep.variant("onnx_fp32")
    gate_float = fp32.gate
    role = rep.role.value
    reader = calibration_reader(rep.role, card)
    feeds = reader.feeds(0)
    lat = lambda p: {t: measure_latency(p, feeds, threads=t, runs=RUNS).min_ms for t in THREADS}  # noqa: E731
    float_lat = lat(fp32.path)
    from export.gates.factory import make_gate

    gate = make_gate(rep.role, fp32.path, card)
    # onnxruntime's stock quantize_static on the source graph (opset upgraded; no PRelu rewrite).
    plain = prepare_onnx(src, work / name / "plain_fp32.onnx", PrepOptions(), model_name=name).path
    stock = quantize_onnx_int8(plain, work / name / f"{name}_stock_int8.onnx", reader,
                               QuantOptions(per_channel=False, activation_type=QuantType.INT8,
                                            weight_type=QuantType.INT8, calibration=CalibrationMethod.MINMAX,
                                            bias_correction=False), model_name=name)
    rows = [_row("fp32 (prepared)", gate_float, fp32.size, float_lat, fp32.size, float_lat, role)]
    if rep.rewrites:
        rows.append(_row("fp32 source (no rewrite)", gate.evaluate(plain), plain.stat().st_size, lat(plain),
                         fp32.size, float_lat, role))
    fp16 = rep.variant("onnx_fp16")
    rows.append(_row("fp16", fp16.gate, fp16.size, lat(fp16.path), fp32.size, float_lat, role))
    rows.append(_row("int8 stock quantize_static", gate.evaluate(stock), stock.stat().st_size, lat(stock),
                     fp32.size, float_lat, role))
    int8 = rep.variant("onnx_int8")
    fb = rep.fallback
    first = fb.attempts[0]
    rows.append(_row(f"int8 ours, all int8 ({first.calibration.value})", first.gate, first.size,
                     {THREADS[0]: first.latency_ms}, fp32.size, {THREADS[0]: fb.float_latency_ms}, role))
    rows.append(_row(f"int8 ours, chosen ({fb.chosen.label}, {len(fb.float_nodes)} float nodes)", int8.gate,
                     int8.size, lat(int8.path), fp32.size, float_lat, role))
    return {"model": name, "role": role, "rows": rows, "calibration_hash": rep.calibration_hash,
            "calibration_images": rep.calibration_images, "data": rep.data_note,
            "rewrites": [r.to_dict() for r in rep.rewrites], "float_nodes": list(fb.float_nodes),
            "fallback": fb.reason, "attempts": [a.to_dict() for a in fb.attempts],
            "seconds": round(time.perf_counter() - t0, 1)}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "pass" if v else "FAIL"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return "–" if v is None else str(v)


def print_result(res: dict) -> None:
    role = res["role"]
    cols = ["variant", "passed"] + [lbl for _, lbl in HEADLINE[role]] + ["size_ratio"] + \
        [f"speedup_{t}t" for t in THREADS]
    print(f"\n### {res['model']} ({role}); calibration {res['calibration_images']} images, "
          f"sha256 {res['calibration_hash'][:16]}…; {res['seconds']} s")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in res["rows"]:
        print("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    for rw in res["rewrites"]:
        print(f"rewrite {rw['name']} ×{rw['nodes']}: max |Δ| {rw['max_abs_diff']}, {rw['latency_before_ms']:.2f} → "
              f"{rw['latency_after_ms']:.2f} ms ({rw['speedup']:.2f}×)")
    print(f"fallback: {res['fallback']}")
    if res["float_nodes"]:
        print(f"kept float: {', '.join(res['float_nodes'])}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every fallback attempt")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    say = (lambda line: print(f"  {line}", flush=True)) if args.verbose else (lambda line: None)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgesight-bench-q-") as tmp:
        for name in args.models.split(","):
            res = bench(name.strip(), Path(tmp), say)
            print_result(res)
            results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
