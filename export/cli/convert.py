"""``edge-export convert``: one model to one variant (ONNX or TFLite, fp32 / fp16 / int8), with its card.

For a user's own ONNX file plus the model card they wrote (``--card``), or a registry model::

    edge-export convert my_model.onnx --card my_model.json --to tflite --precision int8 \\
        --calibration images/ --out out/my_model_int8.tflite
    edge-export convert yolox_nano_416 --to tflite --precision fp16 --out out/yolox_fp16.tflite
    edge-export convert yolo11n.yaml --to onnx --precision fp16 --check-image bus.jpg --out out/y11.onnx

An Ultralytics ``.yaml``/``.pt`` source (optional ``ultralytics`` extra) is first exported to a float
ONNX + card in a temporary directory by :mod:`export.sources.ultralytics`, then converted like any ONNX.

The artefact is loaded by ``edge``'s engine and compared with the source on a real image
(``--check-image``, else the first calibration image) within the per-format tolerance; outside
it, nothing is written. The card is written beside the artefact as ``<file>.json``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: (--to, --precision, --io, --dynamic) -> target key
_KEYS = {("tflite", "fp32", "float", False): "tflite_fp32", ("tflite", "fp16", "float", False): "tflite_fp16",
         ("tflite", "int8", "float", True): "tflite_int8_dynamic", ("tflite", "int8", "int8", False): "tflite_int8",
         ("tflite", "int8", "uint8", False): "tflite_int8_uint8io", ("onnx", "fp32", "float", False): "onnx_fp32",
         ("onnx", "fp16", "float", False): "onnx_fp16", ("onnx", "int8", "float", False): "onnx_int8"}


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert one model (ONNX + card, or a registry name) to one variant",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="ONNX file, card JSON, registry name, or Ultralytics .yaml/.pt")
    p.add_argument("--card", type=Path, help="the model card (default: beside the file, or the registry's)")
    p.add_argument("--to", choices=("tflite", "onnx"), required=True)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--io", choices=("float", "int8", "uint8"), default=None,
                   help="TFLite full-integer I/O type (default int8; float only with --dynamic)")
    p.add_argument("--dynamic", action="store_true", help="TFLite dynamic-range int8 (no calibration)")
    p.add_argument("--calibration", type=Path, metavar="DIR", help="image folder for static int8 calibration")
    p.add_argument("--max-calibration", type=int, default=64, metavar="N")
    p.add_argument("--check-image", type=Path, help="real image for the agreement check")
    p.add_argument("--out", type=Path, required=True, help="output model file")
    p.set_defaults(func=cmd_convert)


def _key(args) -> str:
    io = args.io or ("float" if args.precision != "int8" or args.dynamic or args.to == "onnx" else "int8")
    k = _KEYS.get((args.to, args.precision, io, args.dynamic))
    if k is None:
        raise ValueError(f"no variant for --to {args.to} --precision {args.precision} --io {io}"
                         f"{' --dynamic' if args.dynamic else ''} (valid: " + "; ".join(
                             f"--to {t} --precision {p}{'' if i == 'float' else ' --io ' + i}{' --dynamic' if d else ''}"
                             for t, p, i, d in _KEYS) + ")")
    return k


def _source(args):
    from edge.cards import load_card
    from edge.registry import resolve

    ref = resolve(args.src)
    card = load_card(args.card) if args.card else ref.card
    if card is None:
        raise ValueError(f"{args.src}: no model card found; pass --card (a JSON model card describing the input)")
    return ref.path, card


def cmd_convert(args) -> int:
    if Path(args.src).suffix.lower() in (".yaml", ".yml", ".pt"):  # Ultralytics source: float ONNX + card first
        import argparse
        import tempfile

        from export.sources.ultralytics import export_ultralytics_onnx

        with tempfile.TemporaryDirectory(prefix="edge-export-ultralytics-") as tmp:
            onnx_path, card_path = export_ultralytics_onnx(args.src, tmp)
            return _convert(argparse.Namespace(**{**vars(args), "src": str(onnx_path),
                                                  "card": args.card or card_path}))
    return _convert(args)


def _convert(args) -> int:
    from edge.imageio import load_image
    from edge.preprocess import prepare
    from export.quant.calibration import ImageFolderReader, list_images
    from export.variants import check_agreement, get_target

    key = _key(args)
    target = get_target(key)
    src, card = _source(args)
    if src.suffix.lower() != ".onnx":
        raise ValueError(f"{src}: convert takes an ONNX model (for PyTorch checkpoints use edge-export build or "
                         f"the per-model exporters)")
    spec = card.inputs[0]
    reader = None
    if target.calibrated:
        if args.calibration is None:
            raise ValueError(f"{key} needs --calibration DIR (real images, preprocessed with the card)")
        files = list_images(args.calibration, card.name)[: args.max_calibration]
        reader = ImageFolderReader(files, spec, model_name=card.name)
    check = args.check_image or (list_images(args.calibration, card.name)[0] if args.calibration else None)
    if check is None:
        raise ValueError("pass --check-image (a real image the artefact is compared with its source on)")
    x, _ = prepare(load_image(check), spec, size=None if None not in spec.size else (640, 640))
    out = Path(args.out)
    work = out.parent / f".{out.stem}.work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        from export.onnx.prep import PrepOptions, prepare_onnx

        fp32_onnx = prepare_onnx(src, work / "src_fp32.onnx", PrepOptions(), model_name=card.name).path
        reference = _run(fp32_onnx, "onnxruntime", x)
        if args.to == "tflite":
            from export.tflite.convert import make_variant, onnx_to_tflite, tflite_card

            fp32 = onnx_to_tflite(src, work / "m_fp32.tflite", model_name=card.name)
            try:
                result, ag = make_variant(key, fp32, out if key != "tflite_fp32" else fp32,
                                          check_feeds={spec.name: x}, reference=reference, calibration=reader,
                                          model_name=card.name, strict=target.precision.value != "int8")
            except Exception:
                out.unlink(missing_ok=True)
                raise
            if key == "tflite_fp32":
                shutil.copyfile(fp32, out)
            new_card = tflite_card(card, out, key)
        else:
            from export.onnx.from_torch import write_card
            from export.quant.quantize import QuantOptions, convert_onnx_fp16, quantize_onnx_int8
            from edge.cards import load_card

            if key == "onnx_fp32":
                shutil.copyfile(fp32_onnx, out)
            elif key == "onnx_fp16":
                convert_onnx_fp16(fp32_onnx, out, model_name=card.name)
            else:
                quantize_onnx_int8(fp32_onnx, out, reader, QuantOptions(), model_name=card.name)
            ag = check_agreement(reference, _run(out, "onnxruntime", x), target.tolerance)
            if not ag.passed and target.precision.value != "int8":
                out.unlink()
                raise RuntimeError(f"{out.name} disagrees with {src.name} on {check}: cosine {ag.cosine:.5f}, rel. "
                                   f"error {ag.rel_err:.3g} (tolerance {target.tolerance}); not written")
            new_card = load_card(write_card(card, out, work / "card.json", name=out.stem, provenance={"variant": key}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    card_path = out.with_name(out.name + ".json")
    card_path.write_text(new_card.to_json(), encoding="utf-8")
    if not ag.passed:  # int8 only: written, but the user must gate it on their data
        print(f"warning: {out.name} is outside the {key} sanity tolerance on {Path(check).name} (cosine "
              f"{ag.cosine:.4f}, rel. error {ag.rel_err:.3g}); check its accuracy before use", file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {key}): cosine {ag.cosine:.6f}, max rel. error "
          f"{ag.rel_err:.2e} vs the source on {Path(check).name}\nwrote {card_path}")
    return 0


def _run(path, backend, x):
    from edge.engines import load_engine

    with load_engine(path, backend=backend, threads=1) as eng:
        return eng.run({eng.inputs[0].name: x})
