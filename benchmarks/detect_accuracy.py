"""COCO mAP50-95 / mAP50 of every detector variant available, on coco128 (or any YOLO folder).

Variants: the built-in detectors (``yolox_nano_416`` float on onnxruntime, ``ssd_mobilenet_v1_coco_quant``
uint8 on LiteRT) plus every object-detection card found under ``--variants DIR`` (the export
stage's int8 / TFLite YOLOX files: a card JSON beside each model file). Every variant is scored
with the project's evaluator (:mod:`edge.evaluate.coco`, checked against pycocotools in
tests/test_coco_eval.py) at the same settings: score > 0.001, NMS IoU 0.65, 100 detections.

Usage:
    .venv/bin/python benchmarks/detect_accuracy.py [--data DIR] [--variants DIR] [--threads 2]
        [--backends onnxruntime,opencv] [--limit N] [--json OUT]

coco128 is 128 images: read the figures as relative (float vs int8, one runtime vs another),
not as COCO val2017 scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import paths  # noqa: E402
from edge.cards import load_card  # noqa: E402
from edge.detect.detector import create_detector  # noqa: E402
from edge.errors import EdgeError  # noqa: E402
from edge.evaluate.detection import EVAL_NMS_IOU, EVAL_SCORE, evaluate_detector  # noqa: E402
from edge.evaluate.yolo_dataset import YoloDataset  # noqa: E402

#: Built-in detectors measured on every run.
BUILTIN = ("yolox_nano_416", "ssd_mobilenet_v1_coco_quant")
MODEL_SUFFIXES = (".onnx", ".tflite")


def find_variants(directory: Path) -> list[str]:
    """Object-detection card JSONs under ``directory``, plus model files whose card sits beside them."""
    found: list[str] = []
    covered: set[Path] = set()
    for card_path in sorted(directory.rglob("*.json")):
        try:
            card = load_card(card_path)
        except EdgeError:
            continue  # not a model card (a manifest, a report)
        if card.task == "object_detection":
            found.append(str(card_path))
            covered.add((card_path.parent / card.file).resolve())
            covered.add((card_path.parent / Path(card.file).name).resolve())
    for model in sorted(p for p in directory.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES):
        if model.resolve() not in covered:
            found.append(str(model))  # create_detector finds a built-in card by sha256, or says why not
    return found


def backend_list(spec: str, variant: str) -> list[str | None]:
    """Backends to try a variant on: ``auto`` (by suffix) plus the named ones that fit the file."""
    wanted = [b.strip() for b in spec.split(",") if b.strip()]
    is_onnx = variant.endswith(".onnx") or "yolox_nano_416" == variant or (
        variant.endswith(".json") and load_card(variant).format == "onnx")
    out: list[str | None] = [None]
    for b in wanted:
        if b == "opencv" and is_onnx:
            out.append("opencv")
    return out


def measure(variant: str, backend: str | None, dataset: YoloDataset, threads: int) -> dict:
    t0 = time.perf_counter()
    with create_detector(variant, backend=backend, threads=threads, score_threshold=EVAL_SCORE,
                         nms_iou=EVAL_NMS_IOU, max_detections=100) as det:
        report = evaluate_detector(det, dataset)
        name, used_backend, fmt = det.name, det.backend, det.card.format
        dtype = det.card.inputs[0].dtype
    r = report.result
    return {"variant": name, "source": variant, "format": fmt, "input_dtype": dtype, "backend": used_backend,
            "mAP50_95": round(r.map50_95, 4), "mAP50": round(r.map50, 4), "mAP75": round(r.map75, 4),
            "images": r.num_images, "mean_ms": {k: round(v, 2) for k, v in report.mean_ms.items()},
            "elapsed_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = (paths.data_dir() or Path("../shared/data")) / "coco128"
    ap.add_argument("--data", type=Path, default=default_data, help=f"YOLO folder (default {default_data})")
    ap.add_argument("--variants", type=Path, default=None, help="directory with exported detector variants")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default="", help="extra backends for ONNX variants, e.g. 'opencv'")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)

    dataset = YoloDataset(args.data, limit=args.limit)
    variants = list(BUILTIN)
    if args.variants is not None:
        if not args.variants.is_dir():
            print(f"--variants {args.variants}: not a directory", file=sys.stderr)
            return 2
        variants += find_variants(args.variants)
    rows, failures = [], []
    for v in variants:
        for backend in backend_list(args.backends, v):
            try:
                row = measure(v, backend, dataset, args.threads)
            except (EdgeError, KeyError, ValueError, ImportError, FileNotFoundError) as e:
                failures.append({"source": v, "backend": backend, "error": str(e).splitlines()[0]})
                print(f"skipped {v} ({backend or 'auto'}): {str(e).splitlines()[0]}", file=sys.stderr)
                continue
            rows.append(row)
            print(f"done {row['variant']} on {row['backend']}: {row['mAP50_95']:.4f}", file=sys.stderr)

    print(f"\nCOCO mAP on {dataset.root} ({len(dataset)} images), score > {EVAL_SCORE}, NMS IoU {EVAL_NMS_IOU}, "
          f"100 dets, {args.threads} threads\n")
    head = f"{'variant':34s} {'format':7s} {'input':8s} {'backend':12s} {'mAP50-95':>9s} {'mAP50':>7s} {'infer ms':>9s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['variant']:34s} {r['format']:7s} {r['input_dtype']:8s} {r['backend']:12s} "
              f"{r['mAP50_95']:9.4f} {r['mAP50']:7.4f} {r['mean_ms']['inference']:9.1f}")
    out = {"data": str(dataset.root), "images": len(dataset), "score_threshold": EVAL_SCORE,
           "nms_iou": EVAL_NMS_IOU, "threads": args.threads, "rows": rows, "skipped": failures}
    print("\n" + json.dumps(out, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
