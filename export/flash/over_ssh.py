"""Flash one device over SSH: one connection streams the archive into ``edge release deploy -`` and
brings back its step lines and JSON record.

One connection rather than ``scp`` then ``ssh``: one handshake (seconds on a Pi Zero), no staging
file to clean up, and an upload cut short is simply a short stdin, refused by its sha256 before
anything is unpacked. The device runs the whole procedure under its release store's lock and
finishes it (or rolls back) even if this process or the link dies; we only report what it said.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from edge.deploy import RECORD_MARK
from export.flash.command import FlashSettings, prepare_bundle
from export.flash.ssh import SshOptions, SshTarget, ssh_argv

__all__ = ["flash_over_ssh", "CONNECTION_LOST"]

CONNECTION_LOST = "connection lost"


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def flash_over_ssh(bundle: str | Path, target: SshTarget, ssh: SshOptions, settings: FlashSettings, *,
                   trust: str | Path | None = None, record_dir: Path | None = None,
                   say: Callable[[str], None] = print) -> dict:
    """Flash ``bundle`` to ``target``. Returns the workstation's record (the device's inside, under
    ``"device"``) and writes it to ``record_dir/<host>-<time>.json``.

    The record's ``outcome`` is the device's (flashed, unchanged, refused, rolled back), or
    ``connection lost`` when the device's last word never arrived.
    """
    t0 = time.monotonic()
    started = _utc()
    prep = prepare_bundle(bundle, trust)
    if prep.release_id is not None:
        say(f"{'check':<9} ok   {prep.release_id}: signature and files verified here with {trust}")
    remote = settings.remote_command("-", prep.sha256)
    argv = ssh_argv(target, ssh, remote)
    say(f"{'connect':<9} ..   {target}: sending {prep.size / 1e6:.1f} MB (sha256 {prep.sha256[:12]}…) "
        f"to `{' '.join(remote[:3])} -`")
    record = None
    lines: list[str] = []
    err: list[str] = []
    try:
        with open(prep.archive, "rb") as stdin:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    errors="replace")
            reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
            reader.start()
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(RECORD_MARK):
                    try:
                        record = json.loads(line[len(RECORD_MARK):])
                    except ValueError:
                        pass
                    continue
                lines.append(line)
                say(f"{line}")
            code = proc.wait()
            reader.join(timeout=5)
    finally:
        prep.cleanup()
    seconds = time.monotonic() - t0
    if record is None:
        stderr = " ".join(ln.strip() for ln in err if ln.strip())[-600:]
        if not lines:
            why = f"could not run the flash on {target} (ssh exit {code}): {stderr or 'no output'}"
        else:
            why = (f"connection to {target} lost after: {lines[-1].strip()[:120]} (ssh exit {code}). The device "
                   f"finishes the flash or rolls back by itself; see `edge release list` and "
                   f"/var/lib/edgesight/flash/last.json there")
        say(f"{'outcome':<9} {CONNECTION_LOST}: {why}")
        outcome = CONNECTION_LOST
    else:
        outcome = record["outcome"]
    host_record = {"target": str(target), "bundle": str(bundle), "sha256": prep.sha256, "bytes": prep.size,
                   "started": started, "seconds": round(seconds, 3), "ssh_exit": code, "outcome": outcome,
                   "release": (record or {}).get("release") or prep.release_id, "device": record}
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
        path = record_dir / f"{target.host}-{target.port}-{started.replace(':', '')}.json"
        path.write_text(json.dumps(host_record, indent=1))
        host_record["record_file"] = str(path)
        say(f"{'record':<9} ok   {path} (workstation); device copy {(record or {}).get('record_file', '?')}")
    say(f"flash {target}: {outcome} in {seconds:.1f} s")
    return host_record
