"""``edge-export build``: the signed bundle of one device profile (see :mod:`export.build`)."""

from __future__ import annotations

import sys
from pathlib import Path


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_parser(sub) -> None:
    from edge.bundle import ROLES

    p = sub.add_parser("build", help="build, gate and sign the model bundle of a device profile",
                       description="For each role, produce the variants of the profile's runtime format, check "
                                   "them against the float model, gate them on real data, and put the fastest "
                                   "variant that passes into a signed bundle OUT/<profile>.")
    p.add_argument("--profile", type=Path, required=True, help="device profile, e.g. firmware_configs/rpi4.toml")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the bundle goes to DIR/<profile name>")
    p.add_argument("--key", type=Path, required=True, metavar="PRIVATE", help="Ed25519 private key (edge-export keygen)")
    p.add_argument("--only", type=_csv, default=(), metavar="ROLE[,ROLE]",
                   help=f"build only these roles ({', '.join(ROLES)})")
    p.add_argument("--accept-licence", action="store_true",
                   help="allow models whose licence forbids commercial use (flagged in the report)")
    p.add_argument("--formats", type=_csv, default=(), metavar="F[,F]",
                   help="target keys or formats to build (default: the runtime's; e.g. tflite,onnx or "
                        "tflite_int8_uint8io)")
    p.add_argument("--embedder", default="sface", choices=("sface", "mobilefacenet"),
                   help="face embedder (mobilefacenet is non-commercial: needs --accept-licence)")
    p.add_argument("--archive", action="store_true", help="also write DIR/<profile>.tar.gz")
    p.add_argument("--max-calibration", type=int, default=64, metavar="N", help="calibration inputs per model")
    p.add_argument("--no-fallback", action="store_true", help="do not keep badly quantised layers in float")
    p.add_argument("--work-dir", type=Path, help="keep intermediate files here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_build)


def cmd_build(args) -> int:
    from export.build import BuildOptions, build

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    opts = BuildOptions(profile=args.profile, out=args.out, key=args.key, only=args.only,
                        accept_licence=args.accept_licence, formats=args.formats, embedder=args.embedder,
                        archive=args.archive, max_calibration=args.max_calibration, fallback=not args.no_fallback,
                        work_dir=args.work_dir, progress=progress)
    res = build(opts)
    print(f"wrote {res.bundle.path} ({res.bundle.files} files, {res.bundle.total_bytes / 1e6:.1f} MB) "
          f"in {res.seconds:.0f} s")
    for m in res.report["models"]:
        c = m["chosen"]
        print(f"  {m['role']:<14} {c['file']:<44} {c['size'] / 1e6:6.2f} MB  {c['latency_ms']} ms here")
    return 0
