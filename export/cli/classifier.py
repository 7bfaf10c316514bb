"""``edge-export classifier``: export the torchvision MobileNetV2 source to an ONNX fp32 file + card."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("classifier", help="export MobileNetV2 (torchvision weights) to ONNX fp32 with its model card")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_classifier)


def cmd_classifier(args) -> int:
    from export.sources.classifier import export_mobilenet_v2_onnx

    onnx_path, card_path = export_mobilenet_v2_onnx(args.out)
    print(f"wrote {onnx_path}\nwrote {card_path}")
    return 0
