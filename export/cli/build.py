"""``edge-export build``: the signed bundle of one device profile (see :mod:`export.build.pipeline`)."""

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
    p.add_argument("--profile", type=Path, help="device profile, e.g. firmware_configs/rpi4.toml")
    p.add_argument("--out", type=Path, metavar="DIR", help="the bundle goes to DIR/<profile name>")
    p.add_argument("--key", type=Path, metavar="PRIVATE", help="Ed25519 private key (edge-export keygen)")
    p.add_argument("--build-file", type=Path, metavar="TOML",
                   help="a build file holding these choices (export/build/user_inputs.py); flags override it")
    p.add_argument("--source", action="append", default=[], metavar="ROLE=PATH",
                   help="the user's model for ROLE: an .onnx with its card, a card .json, an Ultralytics "
                        ".pt/.yaml (detector), or a state dict [NET:]weights.pth (mobilenet_v2, mobilenet_v3_small, "
                        "mobilenet_v3_large, minifasnet; export/sources/state_dict.py)")
    p.add_argument("--data", action="append", default=[], metavar="ROLE=PATH",
                   help="the user's data for ROLE (classifier: labelled CSV/folder; detector: YOLO folder or COCO "
                        "JSON; face_embedder: pairs CSV file_a,file_b,same or person folders, split by person), "
                        "split into calibration / selection / report")
    p.add_argument("--calibration", action="append", default=[], metavar="ROLE=DIR",
                   help="an image folder replacing ROLE's calibration split")
    p.add_argument("--imgsz", type=int, default=None, help="input size of an Ultralytics source (default 640)")
    p.add_argument("--only", type=_csv, default=None, metavar="ROLE[,ROLE]",
                   help=f"build only these roles ({', '.join(ROLES)})")
    p.add_argument("--accept-licence", action="store_true",
                   help="allow models whose licence forbids commercial use (flagged in the report)")
    p.add_argument("--formats", type=_csv, default=None, metavar="F[,F]",
                   help="target keys or formats to build (default: the runtime's; e.g. tflite,onnx or "
                        "tflite_int8_uint8io)")
    p.add_argument("--embedder", default=None, choices=("sface", "mobilefacenet"),
                   help="face embedder (mobilefacenet is non-commercial: needs --accept-licence)")
    p.add_argument("--archive", action="store_true", help="also write DIR/<profile>.tar.gz")
    p.add_argument("--max-calibration", type=int, default=None, metavar="N",
                   help="calibration inputs per model (default 64)")
    p.add_argument("--no-fallback", action="store_true", help="do not keep badly quantised layers in float")
    p.add_argument("--work-dir", type=Path, help="keep intermediate files here")
    p.add_argument("--board-timings", type=Path, metavar="BENCH_JSON",
                   help="choose variants by timings made on the board: an `edge bench --format json` report run "
                        "there on the variant files (default: the board's cost model from its profile)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_build)


def cmd_build(args) -> int:
    from export.build.pipeline import BuildOptions, build

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    from export.build.user_inputs import UserInputs, load_build_file, parse_role_paths

    bf = load_build_file(args.build_file) if args.build_file else {}
    pick = lambda flag, key, default: flag if flag is not None else bf.get(key, default)  # noqa: E731
    missing = [f"--{k}" for k in ("profile", "out", "key") if pick(getattr(args, k), k, None) is None]
    if missing:
        raise ValueError(f"edge-export build needs {', '.join(missing)} (as flags or in --build-file)")
    user = UserInputs(sources={**bf.get("source", {}), **parse_role_paths(args.source, "--source")},
                      data={**bf.get("data", {}), **parse_role_paths(args.data, "--data")},
                      calibration={**bf.get("calibration", {}), **parse_role_paths(args.calibration, "--calibration")},
                      imgsz=pick(args.imgsz, "imgsz", 640))
    opts = BuildOptions(profile=pick(args.profile, "profile", None), out=pick(args.out, "out", None),
                        key=pick(args.key, "key", None), only=tuple(pick(args.only, "only", ())),
                        accept_licence=args.accept_licence or bool(bf.get("accept_licence", False)),
                        formats=tuple(pick(args.formats, "formats", ())), embedder=pick(args.embedder, "embedder", "sface"),
                        archive=args.archive, max_calibration=pick(args.max_calibration, "max_calibration", 64),
                        fallback=not args.no_fallback, work_dir=args.work_dir, progress=progress,
                        user=user if user else None,
                        board_timings=pick(args.board_timings, "board_timings", None))
    res = build(opts)
    print(f"wrote {res.bundle.path} ({res.bundle.files} files, {res.bundle.total_bytes / 1e6:.1f} MB) "
          f"in {res.seconds:.0f} s")
    for m in res.report["models"]:
        c = m["chosen"]
        print(f"  {m['role']:<14} {c['file']:<44} {c['size'] / 1e6:6.2f} MB  chosen by {c.get('basis')} for "
              f"{c.get('board')}  ({c['latency_ms']} ms here)")
    return 0
