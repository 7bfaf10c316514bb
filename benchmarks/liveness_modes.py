"""Liveness modes on grayscale and IR faces: genuine pass rates and spoof acceptance.

Attempts (each decided like ``edge unlock verify``: a still image on its one frame, a sequence
accepted when 3 of the last 5 frames are live):

1. LFW grayscale crops (``faces/lfw100_aligned``, 200 images, 2× upscaled in a grey
   640×480 frame): one still attempt
   each, ``--liveness auto`` (→ IR checks) and ``rgb`` (the MiniFASNet pair forced, the issue's
   failure) for comparison.
2. Simulated IR sequences (``tests/_ir_frames.py``) of the 61 deepface photos: live faces under
   a steady and a strobing emitter; spoofs: phone replay (no NIR from the screen), self-lit
   replay, printed photo and replayed IR video (which the IR checks do NOT stop; the challenge
   stops the photo).
3. The colour liveness samples (``antispoof/``): live T1, T2 accepted; spoofs F1, F2 rejected.

Usage:
    .venv/bin/python benchmarks/liveness_modes.py [--liveness-dir DIR] [--limit N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import paths  # noqa: E402
from edge.face.liveness import PassiveLiveness  # noqa: E402
from edge.face.liveness_modes import build_liveness  # noqa: E402
from edge.face.pipeline import FacePipeline  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.vision.face_detectors import create_face_detector  # noqa: E402
from tests._ir_frames import attempt, ir_sequence  # noqa: E402

SEQ_FRAMES = 8
FRAME_W, FRAME_H, FRAME_GREY, LFW_SCALE = 640, 480, 110, 2


def in_frame(crop: np.ndarray) -> np.ndarray:
    """A 100×100 LFW crop enlarged 2× and centred in a grey 640×480 frame (as a camera sees a face)."""
    big = cv2.resize(crop, None, fx=LFW_SCALE, fy=LFW_SCALE, interpolation=cv2.INTER_CUBIC)
    frame = np.full((FRAME_H, FRAME_W), FRAME_GREY, np.uint8)
    y0, x0 = (FRAME_H - big.shape[0]) // 2, (FRAME_W - big.shape[1]) // 2
    frame[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
    return frame


def count(pipe, sequences) -> tuple[int, int]:
    return sum(attempt(pipe, s)[0] for s in sequences), len(sequences)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--liveness-dir", type=Path, default=None,
                    help="MiniFASNet ONNX + cards (default: the installed models, see edge.paths)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images of each set")
    args = ap.parse_args(argv)
    data = paths.data_dir()
    live_dir = args.liveness_dir or paths.liveness_dir()
    if live_dir is None:
        ap.error("no liveness models: pass --liveness-dir DIR (from `edge-export liveness`) or run `make demo`")
    det = create_face_detector("yunet", threads=1)
    passive = PassiveLiveness.from_dir(live_dir, threads=1)

    def pipe(mode: str) -> FacePipeline:
        checker = build_liveness(mode, passive=passive)
        checker.close = lambda: None  # the pair is shared between the modes measured here
        return FacePipeline(det, None, checker)

    lfw = sorted((data / "faces/lfw100_aligned").rglob("*.*"))[:args.limit]
    lfw_frames = [[in_frame(load_image(p, gray=True))] for p in lfw]
    photos = sorted((data / "faces/deepface").glob("*.*"))[:args.limit]
    images = [load_image(p) for p in photos]

    auto, challenge = pipe("auto"), pipe("challenge")
    rows = [("LFW grey crops, auto (genuine)", count(auto, lfw_frames)),
            ("LFW grey crops, rgb pair forced (genuine)", count(pipe("rgb"), lfw_frames))]
    for strobe in (False, True):
        emitter = "strobing" if strobe else "steady"
        for kind in ("live", "phone_replay", "self_lit_replay", "printed_photo") + (() if strobe else ("ir_video_replay",)):
            seqs = [ir_sequence(im, kind, frames=SEQ_FRAMES, strobe=strobe, seed=i) for i, im in enumerate(images)]
            rows.append((f"IR sim {emitter}, {kind}, auto", count(auto, seqs)))
            if kind == "printed_photo":
                rows.append((f"IR sim {emitter}, {kind}, challenge", count(challenge, seqs)))
    for name in ("image_T1.jpg", "image_T2.jpg", "image_F1.jpg", "image_F2.jpg"):
        rows.append((f"colour sample {name}, auto", count(auto, [[load_image(data / 'antispoof' / name)]])))
    print(f"{'attempts':52s} accepted / total")
    for label, (ok, total) in rows:
        print(f"{label:52s} {ok:5d} / {total:<5d} ({100.0 * ok / max(total, 1):5.1f} %)")
    det.close()
    passive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
