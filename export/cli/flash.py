"""``edge-export flash BUNDLE``: put a release on a device over SSH, into a mounted root file
system (``--rootfs``), or on a fleet through Ansible (``--inventory``). See :mod:`export.flash`.

Exit codes: 0 the release is active (or already was) everywhere asked; 1 refused, rolled back,
connection lost or a host failed; 2 bad options or input.
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("flash", help="put a signed release on a device (SSH), an SD card root (--rootfs) or a fleet "
                                     "(--inventory, Ansible)",
                       description="Copy a bundle to a device and run `edge release deploy` there: verify with the "
                                   "device's trusted key, self-test on its runtime, bench against the active release, "
                                   "switch `current` atomically, restart the service and wait for its health "
                                   "endpoint; any failure leaves or puts `current` back on the previous release.")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle .tar.gz or directory from edge-export build")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", metavar="ssh://USER@HOST[:PORT]", help="one device over SSH")
    where.add_argument("--rootfs", type=Path, metavar="PATH", help="a mounted Raspberry Pi OS root file system (offline)")
    where.add_argument("--inventory", type=Path, metavar="HOSTS", help="an Ansible inventory: flash every host")
    p.add_argument("--trust", type=Path, metavar="PUBKEY",
                   help="verify the bundle here first with this key (required with --rootfs: it is written there)")
    s = p.add_argument_group("ssh")
    s.add_argument("--identity", type=Path, metavar="KEY", help="SSH private key (default: your ssh config / agent)")
    s.add_argument("--known-hosts", type=Path, metavar="FILE",
                   help="known_hosts file (default: OpenSSH's; a new host key is recorded, a changed one refused)")
    d = p.add_argument_group("on the device")
    d.add_argument("--allow-slower", action="store_true",
                   help="flash even if the release benches slower than the active one (the record says so)")
    d.add_argument("--restart-cmd", metavar="CMD",
                   help="how the device restarts its service (default: systemctl restart <profile [release] service>)")
    d.add_argument("--health-url", metavar="URL", help="device health endpoint (default: the profile's)")
    d.add_argument("--health-timeout", type=float, metavar="S", help="seconds to wait for it (default: the profile's)")
    d.add_argument("--keep", type=int, metavar="N", help="releases kept on the device (default: the profile's)")
    d.add_argument("--bench-iters", type=int, metavar="N", help="timed runs per model in the regression bench (default 50)")
    d.add_argument("--bench-processes", type=int, metavar="N", help="bench worker processes per model (default 2)")
    d.add_argument("--bench-warmup", type=int, metavar="N", help="untimed runs per model first (default 5)")
    d.add_argument("--remote-edge", default="edge", metavar="CMD",
                   help="the device's edge command (default 'edge'; e.g. /opt/edgesight/venv/bin/edge)")
    d.add_argument("--remote-trust", metavar="PATH", help="the device's trusted key (default: its own default)")
    f = p.add_argument_group("fleet (--inventory)")
    f.add_argument("--serial", type=int, default=1, metavar="N", help="hosts per batch (default 1)")
    f.add_argument("--max-fail-percent", type=float, default=0.0, metavar="P",
                   help="stop the rollout when more than P%% of a batch fails (default 0: at the first failure)")
    f.add_argument("--limit", metavar="PATTERN", help="only these inventory hosts (Ansible pattern)")
    p.add_argument("--record-dir", type=Path, default=Path("flash-records"), metavar="DIR",
                   help="where the workstation keeps the JSON records (default ./flash-records)")
    p.set_defaults(func=cmd_flash)


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_flash(args) -> int:
    from export.flash.command import FlashSettings

    for name in ("health_timeout", "keep", "bench_iters", "bench_processes", "bench_warmup"):
        v = getattr(args, name)
        if v is not None and v <= 0 and not (name == "bench_warmup" and v == 0):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.rootfs is not None:
        from export.flash.rootfs import write_rootfs

        if args.trust is None:
            raise ValueError("--rootfs needs --trust PUBKEY: the key is written into the image and the release "
                             "is verified with it")
        write_rootfs(args.bundle, args.rootfs, args.trust, keep=args.keep or 3, say=_say)
        return 0
    settings = FlashSettings(allow_slower=args.allow_slower, restart_cmd=args.restart_cmd, health_url=args.health_url,
                             health_timeout_s=args.health_timeout, keep=args.keep, bench_iters=args.bench_iters,
                             bench_processes=args.bench_processes, bench_warmup=args.bench_warmup,
                             remote_edge=args.remote_edge, remote_trust=args.remote_trust)
    if args.inventory is not None:
        from export.flash.fleet import flash_fleet

        summary = flash_fleet(args.bundle, args.inventory, settings, serial=args.serial,
                              max_fail_percent=args.max_fail_percent, identity=args.identity,
                              known_hosts=args.known_hosts, trust=args.trust, limit=args.limit,
                              record_dir=args.record_dir, say=_say)
        return 0 if all(r["outcome"] in ("flashed", "unchanged") for r in summary["rows"]) else 1
    from export.flash.over_ssh import flash_over_ssh
    from export.flash.ssh import SshOptions, SshTarget

    target = SshTarget.parse(args.target)
    rec = flash_over_ssh(args.bundle, target, SshOptions(identity=args.identity, known_hosts=args.known_hosts),
                         settings, trust=args.trust, record_dir=args.record_dir, say=_say)
    if rec["outcome"] in ("flashed", "unchanged"):
        return 0
    print(f"edge-export flash: {rec['outcome']}", file=sys.stderr)
    return 1
