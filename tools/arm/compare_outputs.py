"""Compare two ``dump_outputs.py`` results (x86 reference vs emulated aarch64) within a tolerance.

Never byte equality: float and quantised kernels differ between x86 and arm64 (XNNPACK/MLAS
paths). An output matches when ``max|a-b| <= atol + rtol * max|a|``. Exit 0 when all match.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("candidate", type=Path)
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--rtol", type=float, default=1e-2)
    ap.add_argument("--pipe-atol", type=float, default=0.03,
                    help="absolute tolerance for end-to-end pipeline values (scores, similarities, boxes): "
                         "OpenCV's INTER_LINEAR resize differs by 1 between x86 and arm64")
    ap.add_argument("--only-litert", action="store_true",
                    help="the candidate install has no onnxruntime: skip reference outputs of .onnx models")
    ap.add_argument("--bundles", default=None,
                    help="comma-separated bundle names the candidate ran (the others are not compared)")
    ap.add_argument("--raw-informational", action="store_true",
                    help="print raw model outputs but fail only on pipeline values (another runtime version)")
    args = ap.parse_args(argv)
    with np.load(args.reference) as ra, np.load(args.candidate) as rb:
        keep = set(args.bundles.split(",")) if args.bundles else None
        a = {k: ra[k] for k in ra if not (args.only_litert and ".onnx::" in k)
             and (keep is None or k.split("/", 1)[0] in keep)}
        b = {k: rb[k] for k in rb}
    missing = sorted(set(a) ^ set(b))
    bad = 0
    for name in missing:
        print(f"MISSING {name}: only in {'reference' if name in a else 'candidate'}")
        bad += 1
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        if x.shape != y.shape:
            print(f"FAIL {name}: shape {x.shape} vs {y.shape}")
            bad += 1
            continue
        diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        limit = (args.pipe_atol if "/pipeline/" in name else args.atol) + args.rtol * scale
        ok = diff <= limit
        if not ok and args.raw_informational and "/pipeline/" not in name:
            print(f"info {name}: max|diff| {diff:.3g} (limit {limit:.3g}; raw output, other runtime version)")
            continue
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max|diff| {diff:.3g} (limit {limit:.3g}, max|ref| {scale:.3g})")
    print(f"{len(a) - bad if not missing else len(set(a) & set(b)) - bad} of "
          f"{len(set(a) | set(b))} outputs match within atol {args.atol} + rtol {args.rtol}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
