"""Offline flashing: write a release into a mounted Raspberry Pi OS root file system (an SD card
or an image mounted on the workstation), ready to run at first boot.

What is written, under ROOTFS:

- ``var/lib/edgesight/releases/<id>`` and ``current`` → it (the device's own release store code:
  verified, renamed into place, atomic symlink; an existing ``current`` becomes ``previous``);
- ``etc/edgesight/bundle_signing.pub`` — the key every start verifies the release with;
- ``etc/systemd/system/edge-web.service`` and ``edge-firstboot-selftest.service``, enabled as
  ``systemctl enable`` does (links in ``multi-user.target.wants``);
- ``var/lib/edgesight/firstboot-selftest`` — the marker that makes the first boot run
  ``edge selftest`` on the board's own runtime, rolling back if it fails.

The edgesight software itself (``/opt/edgesight/venv``) is not installed by this; a missing one is
reported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from edge.release_store import ReleaseStore

__all__ = ["write_rootfs", "SERVICE", "FIRSTBOOT", "FIRSTBOOT_MARKER", "UNITS_DIR"]

UNITS_DIR = Path(__file__).resolve().parent / "systemd"
SERVICE = "edge-web.service"
FIRSTBOOT = "edge-firstboot-selftest.service"
FIRSTBOOT_MARKER = Path("var/lib/edgesight/firstboot-selftest")
EDGE_BIN = Path("opt/edgesight/venv/bin/edge")


def _check_rootfs(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"--rootfs {root}: not a directory (mount the SD card's root partition there)")
    if not (root / "etc").is_dir() or not any((root / p).is_file() for p in ("etc/os-release", "usr/lib/os-release")):
        raise ValueError(f"--rootfs {root}: does not look like a root file system (no etc/os-release); give the "
                         "mounted root partition (e.g. /media/$USER/rootfs), not the boot partition")


def _enable(root: Path, unit: str) -> Path:
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    tmp = wants / f".{unit}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(f"/etc/systemd/system/{unit}", tmp)  # absolute, as systemctl enable writes it (valid at boot)
    os.replace(tmp, link)
    return link


def _install_file(src: Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    os.replace(tmp, dst)


def write_rootfs(bundle: str | Path, rootfs: str | Path, trust: str | Path, *, service: str = SERVICE,
                 keep: int = 3, say: Callable[[str], None] = print) -> dict:
    """Write ``bundle`` (verified with ``trust``) and what runs it into ``rootfs``. Returns a summary.

    Nothing is written when the bundle does not verify or ``rootfs`` is not a root file system.
    """
    root = Path(rootfs)
    _check_rootfs(root)
    trust = Path(trust)
    if not trust.is_file():
        raise FileNotFoundError(f"--trust {trust}: public key not found (bundle_signing.pub from edge-export keygen)")
    for unit in (service, FIRSTBOOT):
        if not (UNITS_DIR / unit).is_file():
            raise FileNotFoundError(f"unit file {UNITS_DIR / unit} not found (packaging/systemd)")
    store = ReleaseStore(root / "var/lib/edgesight/releases")
    with store.lock():
        rid, info, already = store.install(bundle, trust)
        say(f"{'verify':<9} ok   {rid}: signature ok (key {info.key_id}), {info.files} files sha256 ok")
        prev = store.activate(rid, trust)
        say(f"{'release':<9} ok   {store.root.relative_to(root)}/current -> {rid}" +
            (f" (previous {prev})" if prev and prev != rid else ""))
        removed = store.prune(keep)
    key_dst = root / "etc/edgesight/bundle_signing.pub"
    _install_file(trust, key_dst, 0o644)
    say(f"{'key':<9} ok   /{key_dst.relative_to(root)}")
    units = []
    for unit in (service, FIRSTBOOT):
        _install_file(UNITS_DIR / unit, root / "etc/systemd/system" / unit, 0o644)
        _enable(root, unit)
        units.append(unit)
    marker = root / FIRSTBOOT_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{rid}\n")
    say(f"{'units':<9} ok   /etc/systemd/system/{{{','.join(units)}}} enabled (multi-user.target.wants); "
        f"first-boot self-test armed")
    if not (root / EDGE_BIN).exists():
        say(f"{'note':<9}      /{EDGE_BIN} is not installed in this image: the units run it (install edgesight "
            "there, e.g. in a chroot or at first boot)")
    return {"release": rid, "previous": prev, "removed": removed, "units": units, "rootfs": str(root),
            "already_installed": already}
