"""The device-side command a flash runs (``edge release deploy``), built once for SSH and Ansible,
and the bundle archive it is fed (a directory is packed; ``--trust`` checks it here first)."""

from __future__ import annotations

import hashlib
import shlex
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FlashSettings", "PreparedBundle", "prepare_bundle"]


@dataclass(frozen=True)
class FlashSettings:
    """What ``edge-export flash`` passes on to ``edge release deploy`` on each device (None: the
    device profile's or the command's default)."""

    allow_slower: bool = False
    restart_cmd: str | None = None
    health_url: str | None = None
    health_timeout_s: float | None = None
    keep: int | None = None
    bench_iters: int | None = None
    bench_processes: int | None = None
    bench_warmup: int | None = None
    remote_edge: str = "edge"  # the device's edge command (e.g. /opt/edgesight/venv/bin/edge)
    remote_trust: str | None = None  # the device's trusted key (default: its /etc/edgesight/bundle_signing.pub)

    def remote_command(self, archive: str, sha256: str) -> list[str]:
        cmd = shlex.split(self.remote_edge) + ["release", "deploy", archive, "--sha256", sha256, "--record-line"]
        if self.allow_slower:
            cmd.append("--allow-slower")
        for flag, value in (("--restart-cmd", self.restart_cmd), ("--health-url", self.health_url),
                            ("--health-timeout", self.health_timeout_s), ("--keep", self.keep),
                            ("--bench-iters", self.bench_iters), ("--bench-processes", self.bench_processes),
                            ("--bench-warmup", self.bench_warmup), ("--trust", self.remote_trust)):
            if value is not None:
                cmd += [flag, str(value)]
        return cmd


@dataclass(frozen=True)
class PreparedBundle:
    archive: Path
    sha256: str
    size: int
    release_id: str | None  # known when checked here with --trust
    temporary: bool

    def cleanup(self) -> None:
        if self.temporary:
            self.archive.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_bundle(bundle: str | Path, trust: str | Path | None = None) -> PreparedBundle:
    """The archive to send for ``bundle`` (a ``.tar.gz`` as is; a directory packed into a temporary one).

    With ``trust``, the bundle is verified here first (signature, every file), so a wrong key or a
    damaged copy is found before any device is touched.

    Raises:
        FileNotFoundError: naming the bundle. BundleError: it does not verify with ``trust``.
    """
    src = Path(bundle)
    if not src.exists():
        raise FileNotFoundError(f"bundle not found: {src} (a .tar.gz or directory written by `edge-export build`)")
    rid = None
    if trust is not None:
        from edge.bundle import verify_bundle
        from edge.release import release_id

        rid = release_id(verify_bundle(src, trust))
    if src.is_file():
        return PreparedBundle(src, _sha256(src), src.stat().st_size, rid, False)
    fd, name = tempfile.mkstemp(prefix=f"{src.name}-", suffix=".tar.gz")
    tmp = Path(name)
    with open(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, arcname=f"{src.name}/{p.relative_to(src).as_posix()}", recursive=False)
    return PreparedBundle(tmp, _sha256(tmp), tmp.stat().st_size, rid, True)
