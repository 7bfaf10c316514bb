"""Time the full ``edge-export build`` of one profile (all five roles from the shared models).

    .venv/bin/python benchmarks/build_time.py [--profile firmware_configs/rpi4.toml] [--out DIR]

Creates a throw-away signing key, runs the build with progress lines, verifies the bundle with
``edge bundle verify`` semantics and prints the wall time, the bundle size and the chosen variant
per role. The issue's budget is 15 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BUDGET_S = 15 * 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(Path(__file__).resolve().parent.parent / "firmware_configs" / "rpi4.toml"))
    ap.add_argument("--out", type=Path, help="bundle parent directory (default: a temporary one)")
    ap.add_argument("--only", default="", help="comma-separated roles (default: all)")
    args = ap.parse_args()
    from edge.bundle import verify_bundle
    from export.build.pipeline import BuildOptions, build
    from export.bundle.keys import generate_keypair

    with tempfile.TemporaryDirectory() as tmp:
        priv, pub = generate_keypair(Path(tmp) / "keys")
        out = args.out or Path(tmp) / "out"
        t0 = time.perf_counter()
        res = build(BuildOptions(profile=args.profile, out=out, key=priv, archive=True,
                                 only=tuple(r for r in args.only.split(",") if r),
                                 progress=lambda m: print(m, file=sys.stderr, flush=True)))
        seconds = time.perf_counter() - t0
        info = verify_bundle(res.bundle.path, pub)
        archive = res.bundle.path.with_name(res.bundle.path.name + ".tar.gz")
        print(f"\nbuild time {seconds:.0f} s ({seconds / BUDGET_S:.0%} of the 15 min budget); bundle "
              f"{info.files} files, {info.total_bytes / 1e6:.2f} MB ({archive.stat().st_size / 1e6:.2f} MB .tar.gz); "
              f"verified with key {info.key_id}")
        for m in res.report["models"]:
            c = m["chosen"]
            print(f"  {m['role']:<14} {c['file']:<46} {c['size'] / 1e6:6.2f} MB  {c['latency_ms']:.2f} ms here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
