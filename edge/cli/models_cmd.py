"""``edge models list | pull NAME | verify [--dir DIR]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge import registry


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list, fetch and verify registered models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    lp = msub.add_parser("list", help="list the registered models")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    lp.set_defaults(func=cmd_list)

    pp = msub.add_parser("pull", help="fetch a model (mirror, cache or upstream) and verify its sha256")
    pp.add_argument("names", nargs="+", metavar="NAME")
    pp.set_defaults(func=cmd_pull)

    vp = msub.add_parser("verify", help="check model files against their sha256 (exit 0 only if all present files match)")
    vp.add_argument("--dir", type=Path, help="mirror directory to check (default: every configured mirror)")
    vp.add_argument("--json", action="store_true")
    vp.set_defaults(func=cmd_verify)


def cmd_list(args) -> int:
    rows = [registry.card_summary(c) for c in registry.builtin_cards().values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NAME':32} {'TASK':17} {'FORMAT':19} {'LICENCE':14} SOURCE")
    for r in rows:
        lic = r["licence"] + (" [NON-COMMERCIAL]" if r["non_commercial"] else "")
        print(f"{r['name']:32} {r['task']:17} {r['format']:19} {lic:14} {r['source'] or '-'}")
    nc = [r["name"] for r in rows if r["non_commercial"]]
    if nc:
        print(f"\n[NON-COMMERCIAL]: {', '.join(nc)} may only be used for non-commercial research.")
    return 0


def cmd_pull(args) -> int:
    for name in args.names:
        card = registry.get_card(name)
        path = registry.resolve_model(card)
        flag = "  [NON-COMMERCIAL licence]" if card.non_commercial else ""
        print(f"{name}: {path} (sha256 ok){flag}")
        if card.labels is not None:
            registry.load_labels(card)
    return 0


def cmd_verify(args) -> int:
    from edge import paths

    dirs = [args.dir] if args.dir else paths.model_dirs()
    if not dirs:
        print("edge models verify: no mirror directory configured (use --dir or EDGE_MODEL_DIR)", file=sys.stderr)
        return 2
    bad = 0
    present = 0
    out = []
    for d in dirs:
        for r in registry.verify_dir(d):
            out.append({"dir": str(d), **r.__dict__})
            if r.status == "missing":
                continue
            present += 1
            if r.status == "mismatch":
                bad += 1
                print(f"MISMATCH {Path(d) / r.file}: sha256 {r.actual}, expected {r.expected}", file=sys.stderr)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in out:
            print(f"{r['status']:8} {Path(r['dir']) / r['file']}")
        print(f"{present - bad}/{present} present files match; {sum(r['status'] == 'missing' for r in out)} missing")
    return 1 if bad else 0
