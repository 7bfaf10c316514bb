"""Class-aware NMS: the numpy version the project had against OpenCV's ``cv2.dnn.NMSBoxesBatched``.

``edge.vision.nms.batched_nms`` is OpenCV's since this comparison (identical kept boxes and order
on every image; figures in benchmarks/README.md); the numpy version it replaced is kept here as
the reference.

Candidates are real: YOLOX-Nano (the registry card, onnxruntime) on the COCO images of
``../shared/data/coco128``, decoded by the project's decoder at a low and at the card's score
threshold, then suppressed by both implementations (class-aware, IoU 0.45, the detector's
candidate cap). Prints whether the kept indices are identical (same boxes, same order) on every
image and the per-call time of each, with the ratio numpy / OpenCV.

Usage:
    .venv/bin/python benchmarks/nms_opencv.py [--images 64] [--repeats 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import paths  # noqa: E402
from edge.bench.timing import timed_calls  # noqa: E402
from edge.detect.detector import MAX_NMS_CANDIDATES, create_detector  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.vision.nms import batched_nms as opencv_batched_nms  # noqa: E402
from edge.vision.nms import nms  # noqa: E402


def batched_nms(boxes, scores, class_ids, iou: float, top_k: int) -> np.ndarray:
    """The numpy class-aware NMS the project had: classes shifted apart (torchvision's trick), one greedy NMS."""
    b = np.asarray(boxes, np.float64)
    c = np.asarray(class_ids).reshape(-1)
    span = float(b.max() - min(b.min(), 0.0)) + 1.0
    return nms(b + ((c.astype(np.float64) - c.min()) * span)[:, None], scores, iou, top_k)


def candidates(images: list[Path], score: float):
    det = create_detector("yolox_nano_416", threads=2)
    out = []
    for p in images:
        prep = det.preprocess(load_image(p))
        outputs = det.infer(prep)
        x = prep.tensor
        out.append((p.name, det.decoder(outputs, (x.shape[3], x.shape[2]), score)))
    return out, det.nms_iou


def timed(fn, repeats: int) -> float:
    """Median µs per call (the project's one timing loop)."""
    return statistics.median(timed_calls(lambda _: fn(), 1, warmup=1, iters=repeats).samples_ms) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    images = sorted((paths.data_dir() / "coco128/images").rglob("*.jpg"))[:args.images]
    report = {}
    for score in (0.01, 0.25):
        cands, iou = candidates(images, score)
        same, n_boxes, t_np, t_cv = 0, [], [], []
        mismatches = []
        for name, (boxes, scores, cls) in cands:
            if scores.size == 0:
                same += 1
                continue
            a = batched_nms(boxes, scores, cls, iou, MAX_NMS_CANDIDATES)
            b = opencv_batched_nms(boxes, scores, cls, iou, top_k=MAX_NMS_CANDIDATES)
            if np.array_equal(a, b):
                same += 1
            else:
                mismatches.append({"image": name, "numpy": len(a), "opencv": len(b),
                                   "same_set": sorted(a.tolist()) == sorted(b.tolist())})
            n_boxes.append(int(scores.size))
            t_np.append(timed(lambda: batched_nms(boxes, scores, cls, iou, MAX_NMS_CANDIDATES), args.repeats))
            t_cv.append(timed(lambda: opencv_batched_nms(boxes, scores, cls, iou, top_k=MAX_NMS_CANDIDATES), args.repeats))
        row = {"images": len(cands), "identical": same, "mismatches": mismatches[:5],
               "median_candidates": statistics.median(n_boxes) if n_boxes else 0,
               "numpy_us": round(statistics.median(t_np), 1) if t_np else None,
               "opencv_us": round(statistics.median(t_cv), 1) if t_cv else None}
        if t_np:
            row["numpy_over_opencv"] = round(statistics.median(t_np) / statistics.median(t_cv), 2)
        report[f"score>{score}"] = row
        print(f"score > {score}: {same}/{len(cands)} images identical; median {row['median_candidates']} candidates; "
              f"numpy {row['numpy_us']} µs, OpenCV {row['opencv_us']} µs per call "
              f"(numpy/OpenCV {row.get('numpy_over_opencv')})")
        for m in mismatches[:5]:
            print("  differs:", m)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
