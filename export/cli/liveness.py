"""``edge-export liveness``: export the MiniFASNet anti-spoofing pair to ONNX with cards."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("liveness", help="export the MiniFASNet liveness pair (V2 ×2.7, V1SE ×4.0) to ONNX with cards")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_liveness)


def cmd_liveness(args) -> int:
    from export.sources.liveness import export_liveness

    for onnx_path, card_path in export_liveness(args.out):
        print(f"wrote {onnx_path}\nwrote {card_path}")
    return 0
