"""``edge demo``: the embedded default job — resolve the default models and run them on the sample images.

Every model is resolved through the registry (sha256 checked) and run on the images that ship
with the shared data directory (``EDGE_DATA_DIR``): a classifier on LiteRT, and face detection
on onnxruntime and LiteRT.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge import paths, registry

DEFAULT_CLASSIFIER = "mobilenet_v2_1.0_224_quant"
DEFAULT_FACE_DETECTORS = ("yunet", "blazeface")
CLASSIFY_SAMPLES = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp", "hot_dog.jpg", "sunflower.bmp")
FACE_SAMPLES = ("face.jpg", "group_t1.jpg")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the default models on the sample images")
    p.add_argument("--images", type=Path, default=None, help="sample image folder (default: $EDGE_DATA_DIR/samples)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from edge.classify import Classifier
    from edge.engines import load_engine
    from edge.imageio import load_image
    from edge.vision.face_detectors import create_face_detector

    folder = args.images or ((paths.data_dir() or Path("samples")) / "samples")
    if not folder.is_dir():
        raise FileNotFoundError(f"sample image folder not found: {folder} (set EDGE_DATA_DIR or pass --images)")
    print(f"edgesight demo — models from {', '.join(map(str, paths.model_dirs())) or '(cache)'}, images from {folder}\n")

    ref = registry.resolve(DEFAULT_CLASSIFIER)
    with load_engine(ref.path, threads=args.threads) as eng:
        clf = Classifier(eng, ref.card, registry.load_labels(ref.card))
        print(f"[classification] {ref.card.name} on {eng.backend}")
        for name in CLASSIFY_SAMPLES:
            if not (folder / name).is_file():
                continue
            img = load_image(folder / name)
            t0 = time.perf_counter()
            top = clf.classify(img, 3)
            ms = (time.perf_counter() - t0) * 1e3
            guesses = ", ".join(f"{p.label.split(',')[0]} {p.score:.2f}" for p in top)
            print(f"  {name:18} {ms:6.1f} ms  {guesses}")

    for det_name in DEFAULT_FACE_DETECTORS:
        with create_face_detector(det_name, threads=args.threads) as det:
            print(f"\n[face detection] {det_name} on {det.engine.backend}")
            for name in FACE_SAMPLES:
                if not (folder / name).is_file():
                    continue
                img = load_image(folder / name)
                t0 = time.perf_counter()
                faces = det.detect(img)
                ms = (time.perf_counter() - t0) * 1e3
                best = f", best score {faces.score.max():.2f}" if len(faces) else ""
                print(f"  {name:18} {ms:6.1f} ms  {len(faces)} face(s){best}")
    print("\nDone. Try: edge models list | edge run MODEL IMAGE... | edge models verify")
    return 0
