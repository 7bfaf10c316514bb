"""``edge demo``: the embedded default job on the shared sample data.

1. classification (coral MobileNetV2 uint8 on LiteRT) and face detection (YuNet on onnxruntime,
   BlazeFace on LiteRT) on the sample images;
2. object detection (YOLOX-Nano) over sample images with tracking, printing JSONL events;
3. face unlock: enrol one person of the deepface set from some of their photos into a temporary
   encrypted store, then verify their other photo (accept), a stranger (reject) and a photo of a
   face held up to the camera (rejected by liveness). Liveness needs the MiniFASNet ONNX pair
   (``edge-export liveness``); ``--liveness-dir`` points at it, and without it this part says how
   to make it and is skipped.

Every model is resolved through the registry (sha256 checked); nothing is downloaded when the
mirror (``EDGE_MODEL_DIR``) has the files.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge import paths, registry
from edge.cli.argtypes import threads

DEFAULT_CLASSIFIER = "mobilenet_v2_1.0_224_quant"
DEFAULT_FACE_DETECTORS = ("yunet", "blazeface")
CLASSIFY_SAMPLES = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp", "hot_dog.jpg", "sunflower.bmp")
FACE_SAMPLES = ("face.jpg", "group_t1.jpg")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the default models on the sample images")
    p.add_argument("--images", type=Path, default=None, help="sample image folder (default: $EDGE_DATA_DIR/samples)")
    p.add_argument("--threads", type=threads, default=2)
    p.add_argument("--liveness-dir", type=Path, default=None,
                   help="MiniFASNet ONNX + cards (edge-export liveness --out DIR) for the face-unlock part")
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
    _detection_part(folder, args.threads)
    _unlock_part(args.liveness_dir)
    print("\nDone. Try: edge models list | edge run MODEL IMAGE... | edge detect --source DIR | "
          "edge unlock --help | edge bench --model NAME")
    return 0


DETECT_SAMPLES = ("bus.jpg", "zidane.jpg", "kite_and_cold.jpg")


def _detection_part(folder: Path, threads: int) -> None:
    from edge.detect.detector import create_detector
    from edge.imageio import load_image

    with create_detector("yolox_nano_416", threads=threads) as det:
        print(f"\n[object detection] yolox_nano_416 on {det.backend}")
        for name in DETECT_SAMPLES:
            if not (folder / name).is_file():
                continue
            dets = det.detect(load_image(folder / name))
            counts: dict[str, int] = {}
            for c in dets.class_id:
                counts[det.labels[int(c)]] = counts.get(det.labels[int(c)], 0) + 1
            found = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "nothing"
            t = det.timings.as_dict()
            print(f"  {name:18} {sum(t.values()):6.1f} ms  {found}")


def _unlock_part(liveness_dir: Path | None) -> None:
    import csv
    import tempfile

    from edge.cli import main as edge_main

    data = paths.data_dir()
    if data is None or not (data / "faces" / "deepface_identities.csv").is_file():
        print("\n[face unlock] skipped: the deepface face set is not in EDGE_DATA_DIR")
        return
    if liveness_dir is None or not any(liveness_dir.glob("*.onnx")):
        print("\n[face unlock] skipped: no liveness models. Make them once with\n"
              "  edge-export liveness --out models/liveness   (needs the export extra)\n"
              "then run: edge demo --liveness-dir models/liveness")
        return
    people: dict[str, list[str]] = {}
    with open(data / "faces" / "deepface_identities.csv", newline="") as f:
        for row in csv.DictReader(f):
            people.setdefault(row["identity"], []).append(row["file"])
    faces = data / "faces" / "deepface"
    number = lambda n: int("".join(filter(str.isdigit, n)) or 0)  # noqa: E731
    person = sorted(people["person01"], key=number)
    stranger = sorted(people["person02"], key=number)[0]
    spoof = data / "antispoof" / "image_F1.jpg"
    print("\n[face unlock] SFace + YuNet + MiniFASNet liveness, templates AES-256-GCM encrypted")
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as tmp:
        enrol = Path(tmp) / "enrol"
        enrol.mkdir()
        for name in person[:5]:
            (enrol / name).symlink_to(faces / name)
        state = ["--store", f"{tmp}/store", "--key", f"{tmp}/unlock.key", "--audit", f"{tmp}/audit.jsonl",
                 "--state", f"{tmp}/state", "--liveness-dir", str(liveness_dir)]
        rc = edge_main(["unlock", "enroll", "demo-user", "--source", str(enrol), *state])
        print(f"  enrol person01 from 5 photos: exit {rc}")
        for label, image, want in ((f"person01 {person[5]}", faces / person[5], "accept"),
                                   (f"stranger {stranger}", faces / stranger, "reject"),
                                   ("spoof image_F1.jpg", spoof, "reject (liveness)")):
            rc = edge_main(["unlock", "verify", "demo-user", "--source", str(image), "--timeout", "4", *state])
            print(f"  verify {label:24} exit {rc} ({'accept' if rc == 0 else 'reject'}; expected {want})")
