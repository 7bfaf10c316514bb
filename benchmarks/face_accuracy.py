"""Face verification accuracy: TAR / FAR / FRR at the configured thresholds, per embedder and precision.

Protocols (every figure states its resolution — the smallest non-zero FAR is 1/impostor pairs):

1. deepface pairs (``faces/deepface_pairs.csv``: 140 genuine, 380 impostor; FAR resolution 1/380):
   the full pipeline (YuNet 640 → alignment → embedder) on the photos.
2. aligned LFW (``faces/lfw100_aligned``: 100 genuine, 19,800 impostor; FAR resolution 1/19,800):
   crops re-aligned with YuNet landmarks on the 2×-upscaled crop (the procedure the card
   thresholds were derived with; ``--derive`` prints them for tools/make_builtin_cards.py).
3. LFW in 640×480 frames (same pairs): each crop enlarged 2× and centred in a grey 640×480
   frame, then every *whole pipeline* — ours at its fast detection sizes, OpenCV's
   FaceDetectorYN + FaceRecognizerSF, dlib's HOG + ResNet — runs on the same frames. This is
   the like-for-like accuracy behind the speed comparison of benchmarks/face_speed.py.

"Configured threshold" = the embedder card's cosine threshold at the FAR of the default profile
(1e-3) and at 1e-2. dlib scores are negative Euclidean distances; its conventional threshold
is distance 0.6 (face_recognition; Howdy's default certainty 3.5 means 0.35).

Usage:
    .venv/bin/python benchmarks/face_accuracy.py [--derive] [--no-frames] [--no-dlib] [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edge import paths  # noqa: E402
from edge.face.datasets import embed_lfw, evaluate_pair_list, lfw_pairs, pair_scores  # noqa: E402
from edge.face.embedder import create_embedder  # noqa: E402
from edge.face.match import threshold_for  # noqa: E402
from edge.face.pipeline import create_pipeline  # noqa: E402
from edge.face.verification import evaluate_scores, rates_at_threshold  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.vision.face_detectors import create_face_detector  # noqa: E402
from face_refs import DlibPipeline, OpenCVPipeline, dlib_available  # noqa: E402

THREADS = 2
FARS = (1e-2, 1e-3)
BUILTIN = ("sface_2021dec_fp32", "sface_2021dec_int8bq", "mobilefacenet_128d")
DLIB_DISTANCE = 0.6
FRAME_W, FRAME_H, LFW_FRAME_SCALE, FRAME_GREY = 640, 480, 2, 110


def embedders() -> list[str]:
    out = list(BUILTIN)
    try:
        from export.onnx.graph_opt import optimized_embedder

        for n in ("mobilefacenet_128d", "sface_2021dec_fp32"):
            out.append(str(optimized_embedder(n, paths.cache_dir() / "optimized")[1]))
    except ImportError as e:
        print(f"# PRelu-rewritten variants skipped ({e})")
    return out


def at_card(card, s, y) -> dict:
    out = {}
    for far in FARS:
        t = threshold_for(card, far)
        r = rates_at_threshold(s, y, t)
        out[repr(far)] = {"threshold": t, "tar": round(r.tar, 4), "far": round(r.far, 6), "frr": round(r.frr, 4),
                          "false_accepts": r.false_accepts, "false_rejects": r.false_rejects}
    return out


def summary(s, y) -> dict:
    d = evaluate_scores(s, y, FARS).to_dict()
    return {"roc_auc": d["roc_auc"], "eer": d["eer"], "genuine": d["genuine_pairs"], "impostor": d["impostor_pairs"],
            "tar_at_far": {k: v["tar"] for k, v in d["at_far"].items()},
            "threshold_at_far": {k: v["threshold"] for k, v in d["at_far"].items()}}


def lfw_frames(files) -> list[np.ndarray]:
    frames = []
    for f in files:
        crop = load_image(f)
        big = cv2.resize(crop, None, fx=LFW_FRAME_SCALE, fy=LFW_FRAME_SCALE, interpolation=cv2.INTER_CUBIC)
        frame = np.full((FRAME_H, FRAME_W, 3), FRAME_GREY, np.uint8)
        y0, x0 = (FRAME_H - big.shape[0]) // 2, (FRAME_W - big.shape[1]) // 2
        frame[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
        frames.append(frame)
    return frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--derive", action="store_true", help="print the card thresholds derived on aligned LFW")
    ap.add_argument("--no-frames", action="store_true", help="skip protocol 3 (whole pipelines on LFW frames)")
    ap.add_argument("--no-dlib", action="store_true", help="skip dlib")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    data = paths.data_dir() / "faces"
    results = {"deepface": {}, "lfw_aligned": {}, "lfw_frames": {}}
    det = create_face_detector("yunet_dynamic", threads=THREADS)

    print("# 1) deepface pairs: 140 genuine / 380 impostor (FAR resolution 1/380 = 0.0026, TAR 1/140)")
    print("# 2) aligned LFW: 100 genuine / 19,800 impostor (FAR resolution 1/19,800 = 5.1e-5, TAR 1/100)")
    for name in embedders():
        with create_pipeline(embedder=name, threads=THREADS, liveness=False) as pipe:
            card = pipe.embedder.card
            r = evaluate_pair_list(pipe, data / "deepface_pairs.csv", data / "deepface", FARS)
        results["deepface"][card.name] = {**summary(r["scores"], r["labels"]),
                                          "at_card_threshold": at_card(card, r["scores"], r["labels"])}
        with create_embedder(name, threads=THREADS) as emb:
            embs, pairs, found = embed_lfw(emb, det, data / "lfw100_aligned")
        s, y = pair_scores(embs, pairs)
        results["lfw_aligned"][card.name] = {**summary(s, y), "landmarks_detected": found,
                                             "at_card_threshold": at_card(card, s, y)}
        for proto in ("deepface", "lfw_aligned"):
            d = results[proto][card.name]
            c3, c2 = d["at_card_threshold"]["0.001"], d["at_card_threshold"]["0.01"]
            print(f"{proto:12s} {card.name:32s} AUC {d['roc_auc']:.4f}  @card(FAR1e-3, t={c3['threshold']:.4f}): "
                  f"TAR {c3['tar']:.3f} FAR {c3['far']:.5f} FRR {c3['frr']:.3f} (FA {c3['false_accepts']})  "
                  f"@card(FAR1e-2, t={c2['threshold']:.4f}): TAR {c2['tar']:.3f} FAR {c2['far']:.5f}  "
                  f"TAR@FAR1e-3 {d['tar_at_far']['0.001']:.3f}")
        if args.derive and card.name in BUILTIN:
            d = results["lfw_aligned"][card.name]
            print(f"  derive {card.name}: cosine_at_far {{'0.01': {d['threshold_at_far']['0.01']:.4f}, "
                  f"'0.001': {d['threshold_at_far']['0.001']:.4f}}} tar_at_far {d['tar_at_far']} roc_auc {d['roc_auc']:.4f}")

    dlib_why = "--no-dlib" if args.no_dlib else dlib_available()
    if dlib_why is None:
        dl = DlibPipeline()
        files, pairs = lfw_pairs(data / "lfw100_aligned")
        feats = [dl.run_on_crop(cv2.resize(load_image(f), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))[0]
                 for f in files]
        s = np.array([-np.linalg.norm(feats[i] - feats[j]) for i, j, _ in pairs])
        y = np.array([same for *_, same in pairs])
        r = rates_at_threshold(s, y, -DLIB_DISTANCE)
        results["lfw_aligned"]["dlib_resnet"] = {**summary(s, y), "at_distance_0.6": {"tar": r.tar, "far": r.far}}
        d = results["lfw_aligned"]["dlib_resnet"]
        print(f"{'lfw_aligned':12s} {'dlib_resnet (HOG/5-point on crop)':32s} AUC {d['roc_auc']:.4f}  @dist 0.6: TAR "
              f"{r.tar:.3f} FAR {r.far:.5f}  TAR@FAR1e-3 {d['tar_at_far']['0.001']:.3f}")
    else:
        print(f"# dlib skipped: {dlib_why}")

    if not args.no_frames:
        print("# 3) the same LFW pairs as 640x480 frames, whole pipelines (FAR resolution 1/19,800, TAR 1/100)")
        files, pairs = lfw_pairs(data / "lfw100_aligned")
        frames = lfw_frames(files)
        model_dir = paths.model_dirs()[0]
        # OpenCV at every detection size one of our rows uses (same frames, same size)
        runners = [OpenCVPipeline(model_dir / "face_detection/yunet_s_640x640.onnx",
                                  model_dir / "face_embedding/sface_2021dec_fp32.onnx", detect_size=sz)
                   for sz in (None, (320, 240), (160, 120))]
        if dlib_why is None:
            runners += [DlibPipeline(), DlibPipeline(howdy=True)]
        fast = [e for e in embedders() if e.endswith("mobilefacenet_128d_fastprelu.json")]
        mfn = fast[0] if fast else "mobilefacenet_128d"
        fast_sf = [e for e in embedders() if e.endswith("sface_2021dec_fp32_fastprelu.json")]
        for label, kw in (("edge yunet640+sface_fp32", dict(embedder="sface_2021dec_fp32")),
                          ("edge yunet@320x240+sface (default)",
                           dict(embedder=fast_sf[0] if fast_sf else "sface_2021dec_fp32", detect_size=(320, 240))),
                          ("edge yunet@320x240+mobilefacenet [non-commercial]", dict(embedder=mfn, detect_size=(320, 240))),
                          ("edge yunet@160x120+mobilefacenet [non-commercial]",
                           dict(embedder=mfn, detect_size=(160, 120)))):
            p = create_pipeline(threads=THREADS, liveness=False, **kw)

            class _R:
                name = label

                def run(self, frame, p=p):
                    f = p.analyze(frame, max_faces=1).largest
                    return (None if f is None else f.embedding.vector), {}
            runners.append(_R())
        for r in runners:
            feats = [r.run(fr)[0] for fr in frames]
            missing = sum(f is None for f in feats)
            is_dlib = r.name.startswith("dlib")
            s = np.array([-2.0 if feats[i] is None or feats[j] is None else
                          (-np.linalg.norm(feats[i] - feats[j]) if is_dlib else float(feats[i] @ feats[j]))
                          for i, j, _ in pairs])
            y = np.array([same for *_, same in pairs])
            d = {**summary(s, y), "no_face": missing}
            results["lfw_frames"][r.name] = d
            print(f"{'lfw_frames':12s} {r.name:40s} AUC {d['roc_auc']:.4f} TAR@FAR1e-2 {d['tar_at_far']['0.01']:.3f} "
                  f"TAR@FAR1e-3 {d['tar_at_far']['0.001']:.3f}  no face in {missing}/200")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
