"""``edge release …``: the releases installed on this device (see :mod:`edge.release_store`).

Examples::

    edge release list
    edge release deploy bundles/rpi5.tar.gz            # what edge-export flash runs here over SSH
    edge release install bundles/rpi5.tar.gz && edge release activate rpi5-20261205T181710Z-1a2b3c4d
    edge release rollback
    edge release remove rpi5-20261130T101500Z-0f0e0d0c
    edge release wait-health http://127.0.0.1:8080/api/health --release ID --timeout 60

Exit codes: 0 done; 1 the flash was refused or rolled back (``deploy``), or the health endpoint did
not report the release (``wait-health``); 2 a usage error, a release that does not verify, or a
busy store. A failed command never changes ``current``.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge.cli import EXIT_FAIL, EXIT_OK
from edge.cli.argtypes import integer, number


def add_parser(sub) -> None:
    p = sub.add_parser("release", help="install, activate, roll back and list this device's releases; deploy a flash",
                       description=__doc__.split("\n\n")[0])
    rs = p.add_subparsers(dest="release_command", metavar="ACTION")
    rs.required = True

    def trust(q):
        q.add_argument("--trust", type=Path, metavar="PUBKEY",
                       help="trusted Ed25519 public key (default: $EDGE_TRUST, else /etc/edgesight/bundle_signing.pub)")

    q = rs.add_parser("list", help="installed releases, newest first (current and previous marked)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_list)

    q = rs.add_parser("install", help="unpack and verify a bundle into a new release directory (not activated)")
    q.add_argument("bundle", metavar="ARCHIVE_OR_DIR")
    trust(q)
    q.set_defaults(func=cmd_install)

    q = rs.add_parser("activate", help="switch `current` to an installed release (verified again first)")
    q.add_argument("id", metavar="ID")
    trust(q)
    q.set_defaults(func=cmd_activate)

    q = rs.add_parser("rollback", help="switch `current` back to the previous release")
    trust(q)
    q.set_defaults(func=cmd_rollback)

    q = rs.add_parser("remove", help="delete an installed release (never the active one)")
    q.add_argument("id", metavar="ID")
    q.set_defaults(func=cmd_remove)

    q = rs.add_parser("wait-health", help="wait until a health endpoint reports a release")
    q.add_argument("url", metavar="URL")
    q.add_argument("--release", required=True, metavar="ID", help="the release id it must report")
    q.add_argument("--timeout", type=number(0, 3600, low_open=True), default=60.0, metavar="S",
                   help="seconds to wait (default 60)")
    q.set_defaults(func=cmd_wait_health)

    q = rs.add_parser("deploy", help="flash a bundle here: verify, self-test, bench against the active release, "
                                     "switch, restart, check health; roll back on any failure")
    q.add_argument("bundle", metavar="ARCHIVE_OR_DIR", help="bundle .tar.gz or directory; - reads the archive from stdin")
    trust(q)
    q.add_argument("--sha256", metavar="HEX", help="sha256 the archive must have (checked before unpacking)")
    q.add_argument("--allow-slower", action="store_true",
                   help="flash even when the bench finds the release slower than the active one (recorded)")
    q.add_argument("--restart-cmd", metavar="CMD",
                   help="command restarting the service (default: systemctl restart <profile [release] service>; "
                        "'' skips)")
    q.add_argument("--health-url", metavar="URL",
                   help="health endpoint that must report the new release (default: the profile's; '' skips)")
    q.add_argument("--health-timeout", type=number(0, 3600, low_open=True), default=None, metavar="S",
                   help="seconds to wait for it (default: the profile's)")
    q.add_argument("--keep", type=integer(1, 100), default=None, metavar="N",
                   help="releases kept after a flash (default: the profile's [release] keep)")
    q.add_argument("--bench-iters", type=integer(1, 100_000), default=50, metavar="N",
                   help="timed runs per model in the regression bench (default 50)")
    q.add_argument("--bench-warmup", type=integer(0, 10_000), default=5, metavar="N", help="untimed runs first (default 5)")
    q.add_argument("--bench-processes", type=integer(1, 16), default=2, metavar="N",
                   help="bench worker processes per model (default 2)")
    q.add_argument("--bench-threads", type=integer(1, 256), default=None, metavar="N",
                   help="inference threads in the bench (default: the profile's)")
    q.add_argument("--record-dir", type=Path, metavar="DIR",
                   help="where the JSON flash record goes (default /var/lib/edgesight/flash)")
    q.add_argument("--record-line", action="store_true",
                   help="end with one line 'edgesight-flash-record {JSON}' (read by edge-export flash)")
    q.set_defaults(func=cmd_deploy)


def _store():
    from edge.release_store import ReleaseStore

    return ReleaseStore()


def _trust(args) -> Path:
    from edge.errors import BundleKeyError
    from edge.release import default_trust

    key = args.trust or default_trust()
    if not Path(key).is_file():
        raise BundleKeyError(f"trusted public key not found: {key} (give --trust PUBKEY or set EDGE_TRUST)",
                             file=str(key))
    return Path(key)


def cmd_list(args) -> int:
    store = _store()
    releases = store.list()
    if args.json:
        print(json.dumps({"root": str(store.root), "current": store.current(), "previous": store.previous(),
                          "releases": [r.to_dict() for r in releases]}, indent=1))
        return EXIT_OK
    if not releases:
        print(f"no release installed in {store.root}")
        return EXIT_OK
    for r in releases:
        mark = "current " if r.current else ("previous" if r.previous else "")
        print(f"{mark:<9}{r.id:<48} installed {r.to_dict()['installed']}")
    return EXIT_OK


def cmd_install(args) -> int:
    key = _trust(args)
    store = _store()
    with store.lock():
        rid, info, already = store.install(args.bundle, key)
    print(f"{'already installed' if already else 'installed'}: {rid} (profile {info.profile}, {info.files} files, "
          f"signed by key {info.key_id}); activate it with `edge release activate {rid}`")
    return EXIT_OK


def cmd_activate(args) -> int:
    key = _trust(args)
    store = _store()
    with store.lock():
        old = store.activate(args.id, key)
    print(f"current -> {args.id}" + (f" (was {old})" if old and old != args.id else ""))
    return EXIT_OK


def cmd_rollback(args) -> int:
    key = _trust(args)
    store = _store()
    with store.lock():
        old, now = store.rollback(key)
    print(f"current -> {now} (was {old})")
    return EXIT_OK


def cmd_remove(args) -> int:
    store = _store()
    with store.lock():
        store.remove(args.id)
    print(f"removed {args.id}")
    return EXIT_OK


def cmd_wait_health(args) -> int:
    from edge.deploy import wait_health

    ok, seen = wait_health(args.url, args.release, args.timeout)
    print(f"{args.url}: {'reports' if ok else 'did not report'} {args.release} ({seen})")
    return EXIT_OK if ok else EXIT_FAIL


def cmd_deploy(args) -> int:
    from edge.deploy import FLASHED, RECORD_MARK, UNCHANGED, BenchSettings, DeployOptions, deploy

    opts = DeployOptions(archive=args.bundle, trust=_trust(args), sha256=args.sha256, allow_slower=args.allow_slower,
                         restart_cmd=args.restart_cmd, health_url=args.health_url, health_timeout_s=args.health_timeout,
                         keep=args.keep, record_dir=args.record_dir,
                         bench=BenchSettings(iters=args.bench_iters, warmup=args.bench_warmup,
                                             processes=args.bench_processes, threads=args.bench_threads))
    record = deploy(opts)
    if args.record_line:
        try:
            print(RECORD_MARK + json.dumps(record, default=str), flush=True)
        except OSError:
            pass
    return EXIT_OK if record["outcome"] in (FLASHED, UNCHANGED) else EXIT_FAIL
