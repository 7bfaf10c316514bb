"""End-to-end face verification latency per frame and TAR at FAR 1e-3, against OpenCV (and dlib).

Speed: all pipelines run in one process, at 1 thread, on the same video stream — real face photos
(the deepface set) moving and changing scale across a 640×480 frame, a few empty frames between
two people (``edge.face.synthetic.moving_face_frames``) — interleaved frame by frame so that load
from other processes affects them alike. Every pipeline sees every frame in order (a tracker keeps
its state). Each frame is a full verification step: detect → align → embed (liveness off, as the
reference pipelines have none; one row adds the MiniFASNet pair). Ratios are computed from medians
measured in this run, against OpenCV's ``FaceDetectorYN`` + ``FaceRecognizerSF`` at the SAME
detection size as the row.

Accuracy: TAR at FAR 1e-3 of every row and of its OpenCV reference on the same frames: the 200
LFW crops (100 people × 2; 100 genuine / 19,800 impostor pairs, FAR resolution 1/19,800) each
upscaled ×2 into a 640×480 frame and run through the whole pipeline (a face not found rejects its
pairs). The threshold is the one that gives FAR ≤ 1e-3 on these pairs, per pipeline.

Rows: ``DEFAULT`` is exactly ``create_pipeline()`` (what a user gets without options) run as
``edge unlock verify`` runs it on a stream: through ``FaceTracker`` (every frame detected near the
last face, or whole when needed, then aligned, checked and embedded). The next row is the same
pipeline searching every frame whole, as for a still image. Rows that
need an opt-in say so; configurations that cannot ship by default are labelled in their own rows
(a non-commercial model; an int8 SFace converted without the build's gate — the one a release
ships comes through ``--bundle``).

Usage:
    .venv/bin/python benchmarks/face_speed.py [--reps 3] [--people 8] [--json OUT]
        [--no-dlib] [--no-int8] [--no-liveness] [--liveness-dir DIR]

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
from edge.face.datasets import lfw_pairs, pair_scores  # noqa: E402
from edge.face.pipeline import FacePipeline, create_pipeline  # noqa: E402
from edge.face.synthetic import moving_face_frames  # noqa: E402
from edge.face.verification import tar_at_far  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from face_refs import DlibPipeline, OpenCVPipeline, dlib_available  # noqa: E402

FRAME_W, FRAME_H = 640, 480
THREADS = 1
STAGES = ("detect", "align", "quality", "liveness", "embed")
TARGET_FAR = 1e-3
#: Labels of configurations a user cannot ship by default (each in its own row).
NONCOMMERCIAL = " [NON-COMMERCIAL weights (MobileFaceNet): not shippable by default]"
NOT_GATED = " [int8 SFace from `edge-export convert`: not through the build's gate]"


def stream_frames(people: int, per_face: int, gap: int = 3) -> list[tuple[np.ndarray, int | None]]:
    """The moving-face stream: one photo of each of ``people`` different deepface people."""
    data = paths.data_dir() / "faces"
    first: dict[str, str] = {}
    for line in (data / "deepface_identities.csv").read_text().splitlines()[1:]:
        f, who = line.strip().split(",")
        first.setdefault(who, f)
    photos = [load_image(data / "deepface" / f) for f in list(first.values())[:people]]
    return list(moving_face_frames(photos, frames_per_face=per_face, gap=gap, size=(FRAME_W, FRAME_H)))


def lfw_frames() -> tuple[list[np.ndarray], list[tuple[int, int, bool]]]:
    """Each LFW crop upscaled ×2 and centred in a grey 640×480 frame; all pairs of the 200."""
    files, pairs = lfw_pairs(paths.data_dir() / "faces" / "lfw100_aligned")
    frames = []
    for f in files:
        img = load_image(f)
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
        big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        canvas = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
        y0, x0 = (FRAME_H - big.shape[0]) // 2, (FRAME_W - big.shape[1]) // 2
        canvas[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
        frames.append(canvas)
    return frames, pairs


class EdgeRunner:
    """One of our configurations; ``tracked`` runs it through :class:`edge.face.tracking.FaceTracker`."""

    def __init__(self, name: str, pipe: FacePipeline, detect_size: tuple[int, int], *, liveness: bool = False,
                 tracked: bool = False) -> None:
        from edge.face.tracking import FaceTracker

        self.name, self.pipe, self.detect_size, self.liveness = name, pipe, detect_size, liveness
        self.tracker = FaceTracker(pipe) if tracked else None

    def reset(self) -> None:
        if self.tracker is not None:
            self.tracker.reset()

    def run(self, frame):
        analyze = self.pipe.analyze if self.tracker is None else self.tracker.analyze
        a = analyze(frame, max_faces=1, check_liveness=self.liveness)
        face = a.largest
        return (None if face is None else face.embedding.vector), dict(a.timings_ms)


def release_runner(bundle: Path, trust: Path | None) -> EdgeRunner:
    """What a device with this release runs by default (``edge unlock`` takes its models from it)."""
    from edge.release import open_release
    from edge.roles import face_pipeline_from_release, role_model

    rel = open_release(bundle, trust)
    pipe = face_pipeline_from_release(rel, threads=THREADS, liveness=False)
    names = " + ".join(Path(role_model(rel, r).model_path).name for r in ("face_detector", "face_embedder"))
    size = (FRAME_W, FRAME_H) if pipe.detect_size is None else pipe.detect_size
    return EdgeRunner(f"DEFAULT on a device with the {rel.profile_name} release: {names} (as verify runs it)", pipe,
                      size, tracked=True)


def edge_variants(liveness_dir: Path | None, int8_sface: Path | None = None) -> list[EdgeRunner]:
    """Our rows; each has a detection size, and OpenCV is run at that same size."""
    full, fast = (FRAME_W, FRAME_H), (320, 240)
    runs: list[tuple[str, dict, tuple[int, int], bool]] = [
        # exactly create_pipeline()'s defaults: YuNet's dynamic graph fitted as the 640x640 graph
        # fits a frame (a 640x480 frame is detected at its own size) and the registry's SFace ONNX
        # (whose PRelus onnxruntime runs on fast kernels: edge.engines.onnx_prelu)
        # what `edge unlock verify` runs on a stream (edge.unlock.verify follows the face)
        ("DEFAULT create_pipeline() as verify runs it on a stream (FaceTracker): yunet fit 640x640 + "
         "sface_2021dec_fp32", {}, full, True),
        ("create_pipeline() on every frame whole (a still image's path)", {}, full, False),
        ("edge yunet@640x480 + sface_fp32 (detect_size=(640,480): dynamic graph, no padding)",
         dict(detect_size=full), full, False),
        ("edge yunet@320x240 + sface_fp32 (detect_size=(320,240))", dict(detect_size=fast), fast, False),
        ("edge yunet@320x240 + sface_fp32, tracked (FaceTracker)", dict(detect_size=fast), fast, True),
    ]
    if int8_sface is not None:
        runs += [("edge yunet@320x240 + sface_int8_tflite, tracked" + NOT_GATED,
                  dict(embedder=str(int8_sface), detect_size=fast), fast, True)]
    runs += [("edge yunet@320x240 + mobilefacenet_128d, tracked" + NONCOMMERCIAL,
              dict(embedder="mobilefacenet_128d", detect_size=fast), fast, True)]
    pipes: dict[str, FacePipeline] = {}
    out = []
    for name, kw, size, tracked in runs:
        key = json.dumps(kw, sort_keys=True)  # a tracked row shares its pipeline with the plain one
        if key not in pipes:
            pipes[key] = create_pipeline(threads=THREADS, liveness=False, **kw)
        out.append(EdgeRunner(name, pipes[key], size, tracked=tracked))
    if liveness_dir is not None:  # the default configuration with the MiniFASNet pair it uses when installed
        out.append(EdgeRunner("DEFAULT create_pipeline() + liveness (MiniFASNet pair; OpenCV has none)",
                              create_pipeline(threads=THREADS, liveness_dir=liveness_dir, liveness=True),
                              full, liveness=True, tracked=True))
    return out


def prepare_models(tmp: Path, liveness_dir: Path | None, want_liveness: bool):
    """The PRelu-rewritten SFace file (the int8 row's source) and the liveness models."""
    fast_sface = None
    try:
        from export.onnx.graph_opt import optimized_embedder

        _, fast_sface = optimized_embedder("sface_2021dec_fp32", paths.cache_dir() / "optimized")
    except ImportError as e:
        print(f"# int8 SFace row skipped: export tool-chain not installed ({e})")
    if liveness_dir is None and want_liveness:
        try:
            from export.sources.liveness import export_liveness

            export_liveness(tmp / "liveness")
            liveness_dir = tmp / "liveness"
        except ImportError as e:
            print(f"# liveness row skipped: torch not installed ({e})")
    return fast_sface, liveness_dir


def build_int8_sface(tmp: Path, fast_sface: Path | None) -> Path | None:
    """SFace (PRelu-rewritten) → int8 TFLite through ``edge-export convert``, calibrated on the
    aligned deepface faces (LFW, where accuracy is reported, is never used for a choice). It is not
    the build's int8 (no grey calibration copies, no gate): its row is labelled; the int8 SFace a
    release ships is measured through ``--bundle``."""
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


def tar_of(runner, frames, pairs) -> float:
    """TAR at FAR 1e-3 of one pipeline on the LFW frames (run in order, as a stream)."""
    if hasattr(runner, "reset"):
        runner.reset()
    vecs = []
    for f in frames:
        v, _ = runner.run(f)
        vecs.append(None if v is None else np.asarray(v, np.float64) / np.linalg.norm(v))
    scores, labels = pair_scores(vecs, pairs)
    return tar_at_far(scores, labels, TARGET_FAR)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="passes over the stream (default 3)")
    ap.add_argument("--people", type=int, default=8, help="people in the stream (default 8)")
    ap.add_argument("--frames-per-face", type=int, default=15, help="frames per person (default 15)")
    ap.add_argument("--no-dlib", action="store_true", help="skip the dlib pipelines")
    ap.add_argument("--no-int8", action="store_true", help="skip building the int8 TFLite SFace row")
    ap.add_argument("--no-liveness", action="store_true", help="skip the row with liveness")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the TAR at FAR 1e-3 columns")
    ap.add_argument("--liveness-dir", type=Path, help="MiniFASNet ONNX + cards (default: exported now)")
    ap.add_argument("--bundle", type=Path, help="a release (edge-export build) whose face models get a row")
    ap.add_argument("--trust", type=Path, help="public key the --bundle is signed with")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    cv2.setNumThreads(THREADS)
    model_dir = paths.model_dirs()[0]
    stream = stream_frames(args.people, args.frames_per_face)
    with tempfile.TemporaryDirectory() as tmp:
        fast_sface, live_dir = prepare_models(Path(tmp), args.liveness_dir, not args.no_liveness)
        int8_sface = None if args.no_int8 else build_int8_sface(Path(tmp), fast_sface)
        ours = edge_variants(live_dir, int8_sface)
        if args.bundle is not None:
            ours.insert(1, release_runner(args.bundle, args.trust))
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
            r.run(stream[0][0])
        for rep in range(args.reps):
            for r in runners:
                if hasattr(r, "reset"):
                    r.reset()
            for frame, _ in stream:
                for r in runners:
                    t0 = time.perf_counter()
                    feat, st = r.run(frame)
                    totals[r.name].append((time.perf_counter() - t0) * 1000.0)
                    for k, v in st.items():
                        stages[r.name].setdefault(k, []).append(v)
                    if rep == 0:
                        found[r.name] += feat is not None
        tar = {}
        if not args.no_accuracy:
            lfw, pairs = lfw_frames()
            for r in runners:
                tar[r.name] = tar_of(r, lfw, pairs)
    med = {n: float(np.median(v)) for n, v in totals.items()}
    cv_name = {r.name: opencv[r.detect_size].name for r in ours}
    ref_dlib = med.get("dlib_hog+resnet")
    faces_true = sum(who is not None for _, who in stream)
    rows = []
    print(f"# {THREADS} thread, stream of {len(stream)} frames {FRAME_W}x{FRAME_H} ({args.people} people moving, "
          f"{faces_true} frames with a face) x {args.reps} reps, interleaved; median ms per frame")
    print("# 'vs OpenCV' = OpenCV's FaceDetectorYN + FaceRecognizerSF at the SAME detection size as the row, "
          "this process; TAR at FAR 1e-3 on 200 LFW frames (100 genuine / 19,800 impostor pairs)")
    print(f"{'pipeline':92s} {'det size':>8s} {'ms/frame':>8s} {'OpenCV':>7s} {'vs OpenCV':>9s} "
          f"{'TAR ours':>8s} {'TAR OpenCV':>10s} faces   " + " ".join(f"{s:>8s}" for s in STAGES))
    for r in runners:
        n = r.name
        st = {k: float(np.median(v)) for k, v in stages[n].items() if k in STAGES}
        cvn = cv_name.get(n, n)
        size = getattr(r, "detect_size", None)
        size_s = "-" if size is None else "%dx%d" % size
        row = {"pipeline": n, "detect_size": size, "ms_per_frame": round(med[n], 3), "opencv_row": cvn,
               "opencv_ms_per_frame": round(med[cvn], 3), "speedup_vs_opencv": round(med[cvn] / med[n], 2),
               "speedup_vs_dlib": None if ref_dlib is None else round(ref_dlib / med[n], 2),
               "tar_at_far_1e-3": tar.get(n), "opencv_tar_at_far_1e-3": tar.get(cvn),
               "faces_found": found[n], "frames": len(stream), "frames_with_face": faces_true,
               "stages_ms": {k: round(v, 3) for k, v in st.items()}}
        rows.append(row)
        t_o = "" if n not in tar else f"{tar[n]:.3f}"
        t_c = "" if cvn not in tar else f"{tar[cvn]:.3f}"
        print(f"{n:92s} {size_s:>8s} {med[n]:8.2f} {med[cvn]:7.2f} {med[cvn] / med[n]:9.2f} {t_o:>8s} {t_c:>10s} "
              f"{found[n]:3d}/{faces_true:<3d} " + " ".join(f"{st.get(s, float('nan')):8.2f}" for s in STAGES))
    if args.json:
        args.json.write_text(json.dumps({"threads": THREADS, "frame": [FRAME_W, FRAME_H], "reps": args.reps,
                                         "target_far": TARGET_FAR, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
