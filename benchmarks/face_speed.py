"""End-to-end face verification latency per frame and per stage, against OpenCV and dlib.

All pipelines run in one process, at 1 thread, on the same 640×480 frames (the shared face
photos letterboxed into 640×480), interleaved frame by frame so that load from other processes
affects them alike. Each frame is a full verification step: detect → align → embed (liveness
off, as the reference pipelines have none; a row with the MiniFASNet pair is printed
separately). Ratios are computed from medians measured in this run.

Usage:
    .venv/bin/python benchmarks/face_speed.py [--reps 5] [--frames 24] [--json OUT]
        [--no-dlib] [--liveness-dir DIR]

Reference pipelines: see benchmarks/face_refs.py (OpenCV 5 FaceDetectorYN + FaceRecognizerSF;
dlib HOG + 5-point + ResNet, as Howdy uses it).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edge import paths  # noqa: E402
from edge.face.pipeline import FacePipeline, create_pipeline  # noqa: E402
from edge.imageio import IMAGE_SUFFIXES, load_image  # noqa: E402
from face_refs import DlibPipeline, OpenCVPipeline, dlib_available  # noqa: E402

FRAME_W, FRAME_H = 640, 480
THREADS = 1
STAGES = ("detect", "align", "quality", "liveness", "embed")


def build_frames(n: int) -> list[np.ndarray]:
    """640×480 frames: the deepface photos and the live antispoof samples, letterboxed."""
    data = paths.data_dir()
    files = sorted(p for p in (data / "faces" / "deepface").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files += sorted((data / "antispoof").glob("image_T*.jpg"))
    frames = []
    for f in files[:n]:
        img = load_image(f)
        h, w = img.shape[:2]
        s = min(FRAME_W / w, FRAME_H / h)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
        y0, x0 = (FRAME_H - small.shape[0]) // 2, (FRAME_W - small.shape[1]) // 2
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        frames.append(canvas)
    return frames


NONCOMMERCIAL = " [MobileFaceNet: non-commercial weights]"


class TrackingRunner:
    """A video stream in steady state: before each timed frame the tracker has seen the same
    face at the same place (``prime``, untimed), so the timed frame detects in the region only.
    A still image never gets this: its figure is the plain row."""

    def __init__(self, name: str, pipe: FacePipeline, detect_size) -> None:
        from edge.face.tracking import FaceTracker

        self.name, self.detect_size = name, detect_size
        self.tracker = FaceTracker(pipe)

    def prime(self, frame) -> None:
        self.tracker.reset()
        self.tracker.analyze(frame, check_liveness=False)

    def run(self, frame):
        a = self.tracker.analyze(frame, check_liveness=False)
        face = a.largest
        return (None if face is None else face.embedding.vector), dict(a.timings_ms)


class EdgeRunner:
    def __init__(self, name: str, pipe: FacePipeline, liveness: bool = False,
                 detect_size: tuple[int, int] | None = None) -> None:
        self.name, self.pipe, self.liveness, self.detect_size = name, pipe, liveness, detect_size

    def run(self, frame):
        a = self.pipe.analyze(frame, max_faces=1, check_liveness=self.liveness)
        face = a.largest
        return (None if face is None else face.embedding.vector), dict(a.timings_ms)


def edge_variants(fast_sface: Path | None, fast_mfn: Path | None, liveness_dir: Path | None,
                  int8_sface: Path | None = None) -> list[EdgeRunner]:
    """Our rows; each has a detection size, and OpenCV is run at that same size."""
    full, fast, tiny = (FRAME_W, FRAME_H), (320, 240), (160, 120)
    runs = [("edge yunet@640x480+sface_fp32 (registry file)",
             dict(embedder="sface_2021dec_fp32", detect_size=full, prefer_optimized=False)),
            ("edge yunet@320x240+sface_fp32 (registry file)",
             dict(embedder="sface_2021dec_fp32", detect_size=fast, prefer_optimized=False))]
    if fast_sface is not None:  # the default: what bundles ship (export applies the rewrite)
        runs += [("edge yunet@640x480+sface_fastprelu", dict(embedder=str(fast_sface), detect_size=full)),
                 ("edge yunet@320x240+sface_fastprelu (default: what bundles ship)",
                  dict(embedder=str(fast_sface), detect_size=fast)),
                 ("edge yunet@160x120+sface_fastprelu", dict(embedder=str(fast_sface), detect_size=tiny))]
    if int8_sface is not None:  # licence-clean, int8 TFLite on LiteRT/XNNPACK; not the default yet
        runs += [("edge yunet@320x240+sface_int8_tflite (built here, not default)",
                  dict(embedder=str(int8_sface), detect_size=fast))]
    if fast_mfn is not None:
        runs += [("edge yunet@320x240+mobilefacenet_fastprelu" + NONCOMMERCIAL,
                  dict(embedder=str(fast_mfn), detect_size=fast))]
    out = [EdgeRunner(n, create_pipeline(threads=THREADS, liveness=False, **kw), detect_size=kw["detect_size"])
           for n, kw in runs]
    for r in list(out):  # stream rows: consecutive frames of one still face (the best case for tracking)
        if "(default: what bundles ship)" in r.name or "int8_tflite" in r.name:
            out.append(TrackingRunner(r.name + " STREAM: tracked", r.pipe, r.detect_size))
    if liveness_dir is not None:  # the default configuration, with the MiniFASNet pair
        label, kw = next((r for r in runs if "(default: what bundles ship)" in r[0]), runs[1])
        out.append(EdgeRunner(label + " +liveness",
                              create_pipeline(threads=THREADS, liveness_dir=liveness_dir, liveness=True, **kw),
                              True, detect_size=kw["detect_size"]))
    return out


def prepare_models(tmp: Path, liveness_dir: Path | None, want_liveness: bool):
    fast_sface = fast_mfn = None
    try:
        from export.graph_opt import optimized_embedder

        _, fast_sface = optimized_embedder("sface_2021dec_fp32", paths.cache_dir() / "optimized")
        _, fast_mfn = optimized_embedder("mobilefacenet_128d", paths.cache_dir() / "optimized")
    except ImportError as e:
        print(f"# PRelu-rewritten embedders skipped: export tool-chain not installed ({e})")
    if liveness_dir is None and want_liveness:
        try:
            from export.liveness import export_liveness

            export_liveness(tmp / "liveness")
            liveness_dir = tmp / "liveness"
        except ImportError as e:
            print(f"# liveness row skipped: torch not installed ({e})")
    return fast_sface, fast_mfn, liveness_dir


def build_int8_sface(tmp: Path, fast_sface: Path | None) -> Path | None:
    """SFace (PRelu-rewritten) → int8 TFLite through ``edge-export convert``, calibrated on the
    aligned deepface faces (LFW, where accuracy is reported, is never used for a choice)."""
    if fast_sface is None:
        return None
    try:
        from export.cli import main as export_main
    except ImportError as e:
        print(f"# int8 SFace row skipped: export tool-chain not installed ({e})")
        return None
    from edge.face.align import align_face

    calib = tmp / "calib"
    calib.mkdir()
    data = paths.data_dir() / "faces" / "deepface"
    with create_pipeline(embedder=str(fast_sface), detect_size=(320, 240), liveness=False, threads=THREADS) as p:
        for i, f in enumerate(sorted(data.glob("*.jpg"))):
            img = load_image(f)
            face = p.analyze(img, embed=False, max_faces=1).largest
            if face is not None:
                cv2.imwrite(str(calib / f"{i:03d}.png"), align_face(img, face.landmarks))
    out = tmp / "sface_int8.tflite"
    rc = export_main(["convert", str(fast_sface), "--to", "tflite", "--precision", "int8", "--io", "int8",
                      "--calibration", str(calib), "--check-image", str(next(calib.iterdir())), "--out", str(out)])
    return Path(f"{out}.json") if rc == 0 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="passes over the frames (default 5)")
    ap.add_argument("--frames", type=int, default=24, help="frames built from the shared photos (default 24)")
    ap.add_argument("--no-dlib", action="store_true", help="skip the dlib pipelines")
    ap.add_argument("--no-int8", action="store_true", help="skip building the int8 TFLite SFace row")
    ap.add_argument("--no-liveness", action="store_true", help="skip the row with liveness")
    ap.add_argument("--liveness-dir", type=Path, help="MiniFASNet ONNX + cards (default: exported now)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    cv2.setNumThreads(THREADS)
    model_dir = paths.model_dirs()[0]
    frames = build_frames(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        fast_sface, fast_mfn, live_dir = prepare_models(Path(tmp), args.liveness_dir, not args.no_liveness)
        int8_sface = None if args.no_int8 else build_int8_sface(Path(tmp), fast_sface)
        ours = edge_variants(fast_sface, fast_mfn, live_dir, int8_sface)
        sizes = sorted({r.detect_size for r in ours}, reverse=True)
        opencv = {sz: OpenCVPipeline(model_dir / "face_detection/yunet_s_640x640.onnx",
                                     model_dir / "face_embedding/sface_2021dec_fp32.onnx", detect_size=sz)
                  for sz in sizes}
        runners = list(opencv.values())
        why = None if not args.no_dlib else "--no-dlib"
        why = why or dlib_available()
        if why is None:
            runners += [DlibPipeline(), DlibPipeline(howdy=True)]
        else:
            print(f"# dlib pipelines skipped: {why}")
        runners += ours
        totals = {r.name: [] for r in runners}
        stages = {r.name: {} for r in runners}
        found = {r.name: 0 for r in runners}
        for r in runners:  # warm-up
            r.run(frames[0])
        for rep in range(args.reps):
            for frame in frames:
                for r in runners:
                    if hasattr(r, "prime"):
                        r.prime(frame)
                    t0 = time.perf_counter()
                    feat, st = r.run(frame)
                    totals[r.name].append((time.perf_counter() - t0) * 1000.0)
                    for k, v in st.items():
                        stages[r.name].setdefault(k, []).append(v)
                    if rep == 0:
                        found[r.name] += feat is not None
    med = {n: float(np.median(v)) for n, v in totals.items()}
    cv_name = {r.name: opencv[r.detect_size].name for r in ours}
    ref_dlib = med.get("dlib_hog+resnet")
    rows = []
    print(f"# 1 thread, {len(frames)} frames 640x480 x {args.reps} reps, interleaved; median ms per frame")
    print("# 'vs OpenCV' = OpenCV's FaceDetectorYN + FaceRecognizerSF at the SAME detection size as the row")
    print(f"{'pipeline':80s} {'ms/frame':>9s} {'vs OpenCV':>9s} {'vs dlib':>8s} faces  "
          + " ".join(f"{s:>8s}" for s in STAGES))
    for r in runners:
        n = r.name
        st = {k: float(np.median(v)) for k, v in stages[n].items() if k in STAGES}
        ref_cv = med[cv_name.get(n, n)]
        row = {"pipeline": n, "ms_per_frame": round(med[n], 3), "opencv_row": cv_name.get(n, n),
               "speedup_vs_opencv": round(ref_cv / med[n], 2),
               "speedup_vs_dlib": None if ref_dlib is None else round(ref_dlib / med[n], 2),
               "faces_found": found[n], "frames": len(frames), "stages_ms": {k: round(v, 3) for k, v in st.items()}}
        rows.append(row)
        vs_d = "" if ref_dlib is None else f"{ref_dlib / med[n]:8.2f}"
        print(f"{n:80s} {med[n]:9.2f} {ref_cv / med[n]:9.2f} {vs_d:>8s} {found[n]:3d}/{len(frames):<3d}"
              + " ".join(f"{st.get(s, float('nan')):8.2f}" for s in STAGES))
    if args.json:
        args.json.write_text(json.dumps({"threads": THREADS, "frame": [FRAME_W, FRAME_H], "reps": args.reps,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
