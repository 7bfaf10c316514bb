"""Convert every shared float model to TFLite fp32 and compare it with its source on real images.

For each model: ONNX (or torch) source → TFLite fp32 through the project's route
(``export.tflite.convert``), then both run on real images with ``edge``'s engines (onnxruntime vs
LiteRT, 1 thread) and the worst cosine / max relative error over the images is printed, with
the conversion time. Figures only; the tests hold the assertions.

    .venv/bin/python benchmarks/tflite_parity.py [--images 4] [--models yolox_nano_416,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edge import paths  # noqa: E402
from edge.engines import load_engine  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.preprocess import prepare  # noqa: E402
from edge.registry import resolve  # noqa: E402
from export.variants import check_agreement, TOL_FP32  # noqa: E402

#: model -> (kind, images relative to the data dir)
MODELS = {
    "mobilenet_v2_torchvision": ("torch", ["samples/cat.bmp", "samples/parrot.jpg", "samples/bus.jpg", "samples/owl.jpg"]),
    "yolox_nano_416": ("onnx", ["samples/bus.jpg", "samples/zidane.jpg", "samples/pets.jpg", "samples/kite_and_cold.jpg"]),
    "yunet_s_640x640": ("onnx", ["samples/group_t1.jpg", "samples/face.jpg", "samples/zidane.jpg", "samples/grace_hopper.bmp"]),
    "sface_2021dec_fp32": ("onnx", ["samples/face.jpg", "samples/grace_hopper.bmp", "samples/zidane.jpg", "samples/group_t1.jpg"]),
    "mobilefacenet_128d": ("onnx", ["samples/face.jpg", "samples/grace_hopper.bmp", "samples/zidane.jpg", "samples/group_t1.jpg"]),
    "minifasnet_v2_scale2.7": ("torch", ["antispoof/image_T1.jpg", "antispoof/image_F1.jpg", "samples/face.jpg", "antispoof/image_T2.jpg"]),
    "minifasnet_v1se_scale4.0": ("torch", ["antispoof/image_T1.jpg", "antispoof/image_F1.jpg", "samples/face.jpg", "antispoof/image_T2.jpg"]),
}
TORCH_LOADERS = {"mobilenet_v2_torchvision": ("export.sources.nets", "load_mobilenet_v2"),
                 "minifasnet_v2_scale2.7": ("export.sources.nets.minifasnet", "load_minifasnet"),
                 "minifasnet_v1se_scale4.0": ("export.sources.nets.minifasnet", "load_minifasnet")}


def _run(path, backend, x):
    with load_engine(path, backend=backend, threads=1) as eng:
        return eng.run({eng.inputs[0].name: x})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    import importlib

    import torch

    from export.tflite.convert import onnx_to_tflite, torch_to_tflite

    data = paths.data_dir()
    print(f"{'model':<28} {'route':<22} {'convert s':>9} {'min cosine':>12} {'max rel err':>12} {'fp32 tol':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            kind, images = MODELS[name]
            ref = resolve(name)
            spec = ref.card.inputs[0]
            out = Path(tmp) / f"{name}.tflite"
            t0 = time.perf_counter()
            if kind == "torch":
                mod, fn = TORCH_LOADERS[name]
                model = getattr(importlib.import_module(mod), fn)(ref.path).eval()
                shape = [d if isinstance(d, int) else 1 for d in spec.shape]
                torch_to_tflite(model, [np.zeros(shape, np.float32)], out, input_names=[spec.name],
                                output_names=[o.name for o in ref.card.outputs])
                route = "litert-torch"
            else:
                onnx_to_tflite(ref.path, out)
                route = "onnx→torch→litert-torch"
            seconds = time.perf_counter() - t0
            worst_cos, worst_rel = 1.0, 0.0
            for rel in images[: args.images]:
                size = None if None not in spec.size else (spec.shape[3] or 112, spec.shape[2] or 112)
                x, _ = prepare(load_image(data / rel), spec, size=size)
                if kind == "torch":
                    with torch.no_grad():
                        y = model(torch.from_numpy(x))
                    src = {o.name: t.numpy() for o, t in zip(ref.card.outputs, y if isinstance(y, tuple) else (y,))}
                else:
                    from export.onnx.to_torch import load_onnx_model
                    import onnx

                    stripped = Path(tmp) / f"{name}_src.onnx"
                    if not stripped.exists():
                        onnx.save(load_onnx_model(ref.path), str(stripped))
                    src = _run(stripped, "onnxruntime", x)
                ag = check_agreement(src, _run(out, "litert", x), TOL_FP32)
                worst_cos, worst_rel = min(worst_cos, ag.cosine), max(worst_rel, ag.rel_err)
            ok = "ok" if worst_cos >= TOL_FP32.min_cosine and worst_rel <= TOL_FP32.max_rel_err else "OUTSIDE"
            print(f"{name:<28} {route:<22} {seconds:9.1f} {worst_cos:12.8f} {worst_rel:12.2e} {ok:>9}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
