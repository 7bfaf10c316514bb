"""``edge eval detect --model M --data DIR``: COCO mAP of a detector on a YOLO-format folder."""

from __future__ import annotations

import json
import sys

from edge.evaluate.detection import EVAL_NMS_IOU, EVAL_SCORE
from edge.cli.argtypes import fraction, integer, threads


def add_parser(esub) -> None:
    p = esub.add_parser("detect", help="mAP50-95, mAP50 and per-class AP of a detector on images/ + labels/",
                        description="Evaluate an object detector on a folder with images/ and YOLO-format "
                                    "labels/ ('class cx cy w h' normalised). Prints JSON.")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="registry name, model file with a card, or card JSON")
    p.add_argument("--data", required=True, metavar="DIR", help="folder holding images/ and labels/")
    p.add_argument("--backend", help="onnxruntime, litert or opencv (default: by file suffix)")
    p.add_argument("--threads", type=threads, default=None, help="inference threads")
    p.add_argument("--score", type=fraction(), default=EVAL_SCORE,
                   help=f"score threshold (default {EVAL_SCORE}: mAP needs the whole curve)")
    p.add_argument("--nms-iou", type=fraction(), default=EVAL_NMS_IOU,
                   help=f"NMS IoU (default {EVAL_NMS_IOU}, YOLOX's evaluation setting)")
    p.add_argument("--max-det", type=integer(1, 100_000), default=100, help="detections per image (default 100, COCO's)")
    p.add_argument("--limit", type=integer(1), default=None, metavar="N", help="evaluate only the first N images")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    p.set_defaults(func=cmd_eval_detect)


def cmd_eval_detect(args) -> int:
    from edge.detect.detector import create_detector
    from edge.evaluate.detection import evaluate_detector
    from edge.evaluate.yolo_dataset import YoloDataset

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    dataset = YoloDataset(args.data, limit=args.limit)  # fails fast, before loading a model
    progress = _print_progress if args.progress else None
    with create_detector(args.model, backend=args.backend, threads=args.threads, score_threshold=args.score,
                         nms_iou=args.nms_iou, max_detections=args.max_det) as det:
        report = evaluate_detector(det, dataset, progress=progress)
        out = {"model": det.name, "backend": det.backend, "data": str(dataset.root),
               "score_threshold": det.score_threshold, "nms_iou": det.nms_iou, "max_detections": det.max_detections}
    d = report.to_dict()
    out = {"mAP50_95": d.pop("mAP50_95"), "mAP50": d.pop("mAP50"), "mAP75": d.pop("mAP75"),
           "images": d.pop("images"), "elapsed": d.pop("elapsed_s"), **out, **d}
    print(json.dumps(out, indent=2))
    return 0


def _print_progress(done: int, total: int) -> None:
    print(f"\r{done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
