"""``edge bundle verify DIR_OR_TAR --key PUB`` and ``edge bundle info DIR``.

Exit codes of ``verify``: 0 the bundle verifies; 1 verification failed (the message names the
file: a bad signature, or a file missing, extra or altered); 2 any other error (no such bundle,
unreadable key, missing ``cryptography``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge.cli import EXIT_ERROR, EXIT_FAIL, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("bundle", help="verify or describe a signed model bundle")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION")
    bsub.required = True
    v = bsub.add_parser("verify", help="check the signature and every file's sha256 against the manifest",
                        description="Exit 0 when the bundle verifies, 1 when it does not (naming the file), "
                                    "2 on any other error.")
    v.add_argument("bundle", type=Path, metavar="DIR_OR_TAR", help="bundle directory or .tar.gz")
    v.add_argument("--key", type=Path, required=True, metavar="PUB", help="Ed25519 public key (PEM)")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=cmd_verify)
    i = bsub.add_parser("info", help="list a bundle's profile, roles, models and report summary (no verification)")
    i.add_argument("bundle", type=Path, metavar="DIR", help="bundle directory")
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=cmd_info)


def cmd_verify(args) -> int:
    from edge.bundle import verify_bundle
    from edge.errors import BundleError, BundleKeyError

    if not args.bundle.exists():
        print(f"edge bundle verify: error: bundle not found: {args.bundle}", file=sys.stderr)
        return EXIT_ERROR
    if not args.key.is_file():
        print(f"edge bundle verify: error: public key not found: {args.key}", file=sys.stderr)
        return EXIT_ERROR
    try:
        info = verify_bundle(args.bundle, args.key)
    except BundleKeyError as e:
        print(f"edge bundle verify: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except BundleError as e:
        if args.json:
            print(json.dumps({"ok": False, "file": e.file, "error": str(e), "kind": type(e).__name__}))
        else:
            print(f"FAILED {args.bundle}: {e}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps({"ok": True, "path": str(info.path), "profile": info.profile, "key_id": info.key_id,
                          "files": info.files, "bytes": info.total_bytes, "roles": list(info.roles)}))
    else:
        print(f"OK {info.path}: profile {info.profile}, {info.files} files ({info.total_bytes / 1e6:.1f} MB), "
              f"roles {', '.join(info.roles)}, signed by key {info.key_id}, built {info.created}")
    return EXIT_OK


def cmd_info(args) -> int:
    from edge.bundle import load_bundle

    b = load_bundle(args.bundle)
    report_path = b.path / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    rows = []
    for role, models in b.roles.items():
        for m in models:
            rows.append({"role": role, "name": m.card.name, "file": m.model_path.name, "format": m.card.format,
                         "size": m.model_path.stat().st_size, "licence": m.card.licence.spdx,
                         "non_commercial": m.card.non_commercial})
    if args.json:
        print(json.dumps({"path": str(b.path), "profile": b.profile, "created": b.manifest.get("created"),
                          "models": rows, "build_seconds": report.get("build", {}).get("seconds")}, indent=2))
        return EXIT_OK
    print(f"bundle {b.path} (profile {b.profile}, built {b.manifest.get('created')})")
    for r in rows:
        flag = "  NON-COMMERCIAL" if r["non_commercial"] else ""
        print(f"  {r['role']:<14} {r['file']:<44} {r['format']:<7} {r['size'] / 1e6:6.2f} MB  {r['licence']}{flag}")
    return EXIT_OK
