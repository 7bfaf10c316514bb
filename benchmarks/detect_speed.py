"""Per-stage latency of the project's Detector against a plain onnxruntime script, same run.

Three things run on the same images, interleaved image by image so both see the same machine load:

1. **ours**: :class:`edge.detect.detector.Detector` (card-driven preprocessing, vectorised YOLOX
   decoder, class-aware numpy NMS) — stage times from ``Detector.timings``;
2. **bare**: the same engine fed already-prepared tensors: the inference-only rate the pipeline
   is measured against;
3. **plain**: YOLOX's own ONNX demo (``demo/ONNXRuntime/onnx_inference.py``): an
   ``onnxruntime.InferenceSession``, its letterbox ``preproc``, and its vectorised numpy
   post-processing (``demo_postprocess`` grids + ``multiclass_nms``, class-aware) — the baseline a
   YOLOX user already has, not a per-anchor Python loop.

Prints per-stage milliseconds, frames per second, the ratios, decode + NMS as a share of
inference, and whether both pipelines found the same objects.

Usage:
    .venv/bin/python benchmarks/detect_speed.py [--model yolox_nano_416] [--images 32] [--rounds 3]
        [--threads 2] [--score 0.25] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import paths  # noqa: E402
from edge.detect.detector import create_detector  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.preprocess import prepare  # noqa: E402
from edge.vision.nms import box_iou  # noqa: E402

_MS = 1e3
WARMUP = 3


# --- the plain script: how a user without this project writes it -------------------------------


class PlainYolox:
    """onnxruntime session + YOLOX's ONNX demo preprocessing and vectorised post-processing."""

    def __init__(self, model_path: Path, threads: int, strides=(8, 16, 32), size=(416, 416)) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
        self.input_name = self.sess.get_inputs()[0].name
        self.strides, self.size = strides, size

    def preprocess(self, img):
        # YOLOX's demo `preproc`: top-left letterbox, pad 114, BGR float, no normalisation.
        padded = np.ones((self.size[1], self.size[0], 3), dtype=np.uint8) * 114
        r = min(self.size[1] / img.shape[0], self.size[0] / img.shape[1])
        resized = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)),
                             interpolation=cv2.INTER_LINEAR).astype(np.uint8)
        padded[: resized.shape[0], : resized.shape[1]] = resized
        padded = padded.transpose((2, 0, 1))
        return np.ascontiguousarray(padded, dtype=np.float32)[None], r

    def infer(self, x):
        return self.sess.run(None, {self.input_name: x})[0]

    def postprocess(self, output, r, score_thr, nms_thr):
        # YOLOX's own ONNX demo (demo/ONNXRuntime/onnx_inference.py): demo_postprocess (vectorised
        # grids), xywh -> xyxy / ratio, then yolox/utils/demo_utils.multiclass_nms, class-aware
        # (our Detector's NMS is class-aware too).
        pred = demo_postprocess(np.array(output), self.size[::-1], self.strides)[0]
        boxes = pred[:, :4]
        scores = pred[:, 4:5] * pred[:, 5:]
        xyxy = np.empty_like(boxes)
        xyxy[:, 0] = boxes[:, 0] - boxes[:, 2] / 2.0
        xyxy[:, 1] = boxes[:, 1] - boxes[:, 3] / 2.0
        xyxy[:, 2] = boxes[:, 0] + boxes[:, 2] / 2.0
        xyxy[:, 3] = boxes[:, 1] + boxes[:, 3] / 2.0
        xyxy /= r
        dets = multiclass_nms_class_aware(xyxy, scores, nms_thr, score_thr)
        if dets is None:
            return []
        dets = dets[np.argsort(-dets[:, 4], kind="stable")][:100]
        return [list(d[:5]) + [int(d[5])] for d in dets]


def demo_postprocess(outputs, img_size, strides=(8, 16, 32)):
    """YOLOX ``yolox/utils/demo_utils.demo_postprocess`` (Apache-2.0): grid offsets and strides at once."""
    grids, expanded_strides = [], []
    hsizes = [img_size[0] // stride for stride in strides]
    wsizes = [img_size[1] // stride for stride in strides]
    for hsize, wsize, stride in zip(hsizes, wsizes, strides):
        xv, yv = np.meshgrid(np.arange(wsize), np.arange(hsize))
        grid = np.stack((xv, yv), 2).reshape(1, -1, 2)
        grids.append(grid)
        expanded_strides.append(np.full((*grid.shape[:2], 1), stride))
    grids = np.concatenate(grids, 1)
    expanded_strides = np.concatenate(expanded_strides, 1)
    outputs[..., :2] = (outputs[..., :2] + grids) * expanded_strides
    outputs[..., 2:4] = np.exp(outputs[..., 2:4]) * expanded_strides
    return outputs


def nms(boxes, scores, nms_thr):
    """YOLOX ``demo_utils.nms``: single-class greedy NMS in numpy (its +1 pixel areas)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= nms_thr)[0] + 1]
    return keep


def multiclass_nms_class_aware(boxes, scores, nms_thr, score_thr):
    """YOLOX ``demo_utils.multiclass_nms_class_aware``: per-class score filter + NMS."""
    final_dets = []
    for cls_ind in range(scores.shape[1]):
        cls_scores = scores[:, cls_ind]
        mask = cls_scores > score_thr
        if mask.sum() == 0:
            continue
        valid_scores, valid_boxes = cls_scores[mask], boxes[mask]
        keep = nms(valid_boxes, valid_scores, nms_thr)
        if len(keep) > 0:
            cls_inds = np.ones((len(keep), 1)) * cls_ind
            final_dets.append(np.concatenate([valid_boxes[keep], valid_scores[keep, None], cls_inds], 1))
    return np.concatenate(final_dets, 0) if final_dets else None


# --- measurement --------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "p50": statistics.median(values),
            "p90": float(np.percentile(values, 90))}


def _agreement(ours, plain, w, h) -> tuple[bool, float]:
    """Same number of objects per class, and the mean IoU of each of ours to the best plain box."""
    same = sorted(ours.class_id.tolist()) == sorted(int(p[5]) for p in plain)
    if not len(ours) or not plain:
        return same, 1.0 if same else 0.0
    pb = np.clip(np.array([p[:4] for p in plain], np.float64), 0, [w, h, w, h])
    return same, float(box_iou(ours.xyxy, pb).max(axis=1).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = (paths.data_dir() or Path("../shared/data")) / "coco128" / "images"
    ap.add_argument("--model", default="yolox_nano_416", help="a YOLOX-decoder ONNX model (name, file or card)")
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="passes over the images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score", type=float, default=None, help="score threshold (default: the card's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.images]
    images = [load_image(p) for p in files]
    det = create_detector(args.model, threads=args.threads,
                          **({} if args.score is None else {"score_threshold": args.score}))
    if det.kind != "yolox" or det.backend != "onnxruntime":
        print(f"{args.model}: the plain baseline is written for YOLOX on onnxruntime "
              f"(got decoder {det.kind!r} on {det.backend})", file=sys.stderr)
        return 2
    plain = PlainYolox(det.engine.path, args.threads, tuple(det.card.decoding.strides or (8, 16, 32)),
                       det.spec.size)
    tensors = [prepare(im, det.spec)[0] for im in images]

    for im, x in list(zip(images, tensors))[:WARMUP]:
        det.detect(im)
        det.engine.run({det.input_name: x})
        plain.infer(plain.preprocess(im)[0])

    ours = {"preprocess": [], "inference": [], "decode": [], "total": []}
    bare: list[float] = []
    pl = {"preprocess": [], "inference": [], "decode": [], "total": []}
    same, ious = 0, []
    for _ in range(args.rounds):
        for im, x in zip(images, tensors):
            t0 = time.perf_counter()
            d = det.detect(im)
            t1 = time.perf_counter()
            for k in ("preprocess", "inference", "decode"):
                ours[k].append(det.timings[k])
            ours["total"].append((t1 - t0) * _MS)

            t0 = time.perf_counter()
            det.engine.run({det.input_name: x})
            bare.append((time.perf_counter() - t0) * _MS)

            t0 = time.perf_counter()
            px, r = plain.preprocess(im)
            t1 = time.perf_counter()
            out = plain.infer(px)
            t2 = time.perf_counter()
            kept = plain.postprocess(out, r, det.score_threshold, det.nms_iou)
            t3 = time.perf_counter()
            for k, v in zip(("preprocess", "inference", "decode", "total"), (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                pl[k].append(v * _MS)
            s, iou = _agreement(d, kept, im.shape[1], im.shape[0])
            same += s
            ious.append(iou)

    o = {k: _stats(v) for k, v in ours.items()}
    p = {k: _stats(v) for k, v in pl.items()}
    b = _stats(bare)
    n = len(images) * args.rounds
    res = {
        "model": det.name, "threads": args.threads, "images": len(images), "rounds": args.rounds,
        "score_threshold": det.score_threshold, "nms_iou": det.nms_iou,
        "ours_ms": o, "plain_ms": p, "bare_inference_ms": b,
        "fps": {"ours": 1e3 / o["total"]["mean"], "plain": 1e3 / p["total"]["mean"],
                "bare_inference": 1e3 / b["mean"]},
        "ours_fps_over_bare": b["mean"] / o["total"]["mean"],
        "speedup_total": p["total"]["mean"] / o["total"]["mean"],
        "speedup_preprocess": p["preprocess"]["mean"] / o["preprocess"]["mean"],
        "speedup_decode_nms": p["decode"]["mean"] / o["decode"]["mean"],
        "decode_nms_pct_of_inference": {"ours": 100 * o["decode"]["mean"] / o["inference"]["mean"],
                                        "plain": 100 * p["decode"]["mean"] / p["inference"]["mean"],
                                        "ours_p50": 100 * o["decode"]["p50"] / o["inference"]["p50"],
                                        "plain_p50": 100 * p["decode"]["p50"] / p["inference"]["p50"]},
        "same_objects_frac": same / n, "mean_box_iou_ours_vs_plain": statistics.fmean(ious),
    }
    det.close()

    print(f"\n{det.name}, {args.threads} threads, {len(images)} coco128 images × {args.rounds} rounds, "
          f"score > {det.score_threshold}, NMS IoU {det.nms_iou}\n")
    print(f"{'stage (ms, mean / p50)':24s} {'ours':>16s} {'plain':>16s} {'plain/ours':>11s}")
    for k in ("preprocess", "inference", "decode", "total"):
        label = "decode + NMS" if k == "decode" else k
        print(f"{label:24s} {o[k]['mean']:8.2f} /{o[k]['p50']:6.2f} {p[k]['mean']:8.2f} /{p[k]['p50']:6.2f} "
              f"{p[k]['mean'] / o[k]['mean']:10.2f}×")
    print(f"{'bare inference':24s} {b['mean']:8.2f} /{b['p50']:6.2f}")
    f = res["fps"]
    print(f"\nfps: ours {f['ours']:.1f}, plain {f['plain']:.1f}, bare inference {f['bare_inference']:.1f}; "
          f"ours reaches {100 * res['ours_fps_over_bare']:.1f} % of the bare inference rate")
    pct = res["decode_nms_pct_of_inference"]
    print(f"decode + NMS as % of inference (means / medians): ours {pct['ours']:.2f} / {pct['ours_p50']:.2f} %, "
          f"plain {pct['plain']:.1f} / {pct['plain_p50']:.1f} %")
    print(f"same objects (class counts) on {100 * res['same_objects_frac']:.0f} % of frames, "
          f"mean best-IoU ours→plain {res['mean_box_iou_ours_vs_plain']:.3f} "
          "(the demo's NMS uses +1-pixel areas and a strict score '>'; ours neither)")
    print("\n" + json.dumps(res, indent=2, default=float))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
