"""Run every model of signed bundles on this machine's runtimes and save the raw outputs.

Device side only (numpy, OpenCV, onnxruntime, LiteRT). Each model gets a deterministic input made
from a real image resized with ``INTER_NEAREST`` (bit-identical on x86 and arm64, unlike
``INTER_LINEAR``), so the x86 and emulated-aarch64 runs feed the same bytes and
``compare_outputs.py`` can compare what comes out. Usage:

    python dump_outputs.py --key PUB --image IMG --out OUT.npz BUNDLE_DIR [BUNDLE_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def runtime_report() -> dict:
    """Which LiteRT package and onnxruntime this install picked (or why not)."""
    out: dict = {"machine": platform.machine(), "python": platform.python_version()}
    try:
        from edge.engines.litert import _import_interpreter
        _, out["litert"] = _import_interpreter()
    except ImportError as e:
        out["litert"] = f"missing: {e}"
    try:
        import onnxruntime
        out["onnxruntime"] = onnxruntime.__version__
    except ImportError as e:
        out["onnxruntime"] = f"missing: {e}"
    return out


def make_input(info, image: np.ndarray) -> np.ndarray:
    """A feed for ``info`` built from ``image`` (NCHW or NHWC picked from the shape)."""
    import cv2

    shape = [d if isinstance(d, int) and d > 0 else 1 for d in info.shape]
    if len(shape) == 4:
        nhwc = shape[3] in (1, 3)
        h, w, c = (shape[1], shape[2], shape[3]) if nhwc else (shape[2], shape[3], shape[1])
        x = cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32)
        x = x[:, :, :c] if c <= 3 else np.repeat(x[:, :, :1], c, axis=2)
        x = x / 255.0
        x = x[None] if nhwc else x.transpose(2, 0, 1)[None]
    else:
        rng = np.random.default_rng(0)
        x = rng.random(shape, dtype=np.float32)
    return np.ascontiguousarray(x.astype(np.float32))


def pipeline_outputs(bundle, data: Path, threads: int) -> dict[str, np.ndarray]:
    """The detector on COCO images and the face-unlock decision (enrol, genuine, impostor, spoof)."""
    import cv2
    from edge.detect.detector import create_detector

    out: dict[str, np.ndarray] = {}
    if "detector" in bundle.roles:
        m = bundle.model("detector")
        with create_detector(m.card_path, threads=threads) as det:
            for img in sorted((data / "coco128/images").glob("*.jpg"))[:3]:
                d = det.detect(cv2.imread(str(img)))
                order = np.argsort(-np.asarray(d.score))[:5]
                out[f"detect/{img.name}/scores"] = np.asarray(d.score, np.float32)[order]
                out[f"detect/{img.name}/boxes"] = np.asarray(d.xyxy, np.float32)[order]
    if {"face_detector", "face_embedder"} <= set(bundle.roles):
        from edge.face.pipeline import create_pipeline

        faces = data / "faces/deepface"
        live_dir = bundle.model("liveness").model_path.parent if "liveness" in bundle.roles else None
        with create_pipeline(detector=str(bundle.model("face_detector").model_path),
                             embedder=str(bundle.model("face_embedder").card_path),
                             liveness_dir=live_dir, threads=threads, liveness=live_dir is not None) as pipe:
            def first(path: Path):
                a = pipe.analyze(cv2.imread(str(path)), max_faces=1)
                if not a.faces:
                    raise SystemExit(f"dump_outputs: no face found in {path}")
                return a.faces[0]
            enrol = first(faces / "img1.jpg").embedding.vector       # person00
            thr = pipe.threshold()
            for case, img in (("genuine", "img2.jpg"), ("impostor", "img26.jpg")):
                v = first(faces / img).embedding.vector
                sim = float(np.dot(enrol, v) / (np.linalg.norm(enrol) * np.linalg.norm(v)))
                out[f"face/{case}/similarity"] = np.float32([sim])
                out[f"face/{case}/accepted"] = np.float32([sim >= thr])
            for img in ("image_F1.jpg", "image_T1.jpg"):      # F: printed/screen spoof, T: real
                f = first(data / "antispoof" / img)
                if f.liveness is not None:
                    out[f"face/spoof/{img}/score"] = np.float32([f.liveness.score])
                    out[f"face/spoof/{img}/live"] = np.float32([f.liveness.live])
    return {f"{bundle.profile}/pipeline/{k}": v for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--key", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--data", type=Path, help="shared data dir (coco128/, faces/, antispoof/): run the pipelines")
    args = ap.parse_args(argv)

    import cv2
    from edge.bundle import load_bundle, verify_bundle
    from edge.engines import load_engine

    image = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if image is None:
        print(f"dump_outputs: error: cannot read image {args.image}", file=sys.stderr)
        return 2
    arrays: dict[str, np.ndarray] = {}
    report = {"runtimes": runtime_report(), "models": []}
    for bdir in args.bundles:
        info = verify_bundle(bdir, args.key)
        bundle = load_bundle(bdir)
        print(f"verified {bdir} ({info.profile}, {info.files} files, key {info.key_id})", flush=True)
        for role, models in bundle.roles.items():
            for m in models:
                t0 = time.perf_counter()
                with load_engine(m.model_path, threads=args.threads) as eng:
                    t_load = time.perf_counter() - t0
                    feeds = {i.name: make_input(i, image) for i in eng.inputs}
                    t1 = time.perf_counter()
                    outs = eng.run(feeds)
                    t_run = time.perf_counter() - t1
                    backend = eng.backend
                key = f"{info.profile}/{role}/{m.model_path.name}"
                for name, v in outs.items():
                    arrays[f"{key}::{name}"] = np.asarray(v, dtype=np.float32)
                report["models"].append({"key": key, "backend": backend, "load_s": round(t_load, 3),
                                         "run_s": round(t_run, 3), "outputs": sorted(outs)})
                print(f"  {key}: {backend}, load {t_load:.2f} s, run {t_run:.2f} s", flush=True)
        if args.data is not None:
            t0 = time.perf_counter()
            arrays.update(pipeline_outputs(bundle, args.data, args.threads))
            print(f"  {info.profile}: detector + face-unlock decision in {time.perf_counter() - t0:.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["runtimes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
