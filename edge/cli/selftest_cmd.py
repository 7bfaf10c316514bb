"""``edge selftest [--bundle B] [--trust K] [--json] [--role R]``: the release's golden-input test.

Exit 0 when every check passes, 1 when one fails (or the release carries no self-test), 2 for a
usage error or a release that does not verify.
"""

from __future__ import annotations

import json
import sys

from edge.cli import EXIT_FAIL, EXIT_OK
from edge.cli.argtypes import threads as threads_type


def add_parser(sub) -> None:
    from edge.release import add_release_args

    p = sub.add_parser("selftest", help="run the release's golden inputs on this device's runtime and compare "
                                        "with the outputs recorded at build time (with tolerance)")
    add_release_args(p)
    p.add_argument("--role", action="append", metavar="ROLE", help="only this role (repeatable)")
    p.add_argument("--threads", type=threads_type, default=1, help="engine threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_selftest)


def cmd_selftest(args) -> int:
    from edge.release import release_from_args
    from edge.selftest import SelftestMissingError, run

    release = release_from_args(args)
    try:
        report = run(release.path, threads=args.threads, roles=args.role)
    except SelftestMissingError as exc:
        if args.json:
            print(json.dumps({"passed": False, "release": str(release.source), "error": str(exc), "checks": []}))
        print(f"edge selftest: {exc}", file=sys.stderr)
        return EXIT_FAIL
    doc = report.to_dict()
    doc["release"] = str(release.source)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        for c in report.checks:
            cos = "" if c.cosine is None else f" cos {c.cosine:.6f}"
            print(f"{'pass' if c.passed else 'FAIL'}  {c.role:<14} {c.model:<34} {c.input:<22} {c.output:<16} "
                  f"{c.metric} {c.value:.2e} <= {c.limit:.0e}{cos}  {c.note}")
        print(f"self-test {'passed' if report.passed else 'FAILED'}: {sum(c.passed for c in report.checks)}/"
              f"{len(report.checks)} checks, release {release.source}")
    return EXIT_OK if report.passed else EXIT_FAIL
