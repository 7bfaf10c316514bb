"""The device's releases: versioned directories, an atomic ``current`` symlink, the last N kept.

Layout under :func:`edge.release.releases_dir` (``/var/lib/edgesight/releases``)::

    <id>/                  one verified bundle per release (named by edge.release.release_id)
    current -> <id>        the active release (what every consumer opens by default)
    previous -> <id>       the one active before it (what `rollback` returns to)
    .lock                  flock: one writer at a time (flashes, installs, removals)
    .incoming-*            a release being unpacked and verified (never under its final name)

The rules that make a flash safe to interrupt at any moment:

- a release reaches its final name only by ``rename`` of a directory that was extracted *and*
  verified (signature, every sha256, nothing extra) in a hidden temporary directory beside it,
  after its files were flushed to disk;
- ``current`` changes only by ``os.replace`` of a fresh symlink onto it (a rename: atomic), and
  only to a release that verifies again at that moment;
- a leftover ``.incoming-*`` (a killed install) is never read and is swept by the next writer.

So ``current`` always names a complete, verified release, or nothing (no release installed yet).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.bundle import BundleInfo, extract_archive, verify_bundle
from edge.errors import EdgeError
from edge.release import CURRENT, release_id, releases_dir

__all__ = ["ReleaseStore", "ReleaseStoreError", "StoreBusyError", "InstalledRelease", "PREVIOUS", "LOCK"]

PREVIOUS = "previous"
LOCK = ".lock"
INCOMING = ".incoming-"
REMOVING = ".removing-"


class ReleaseStoreError(EdgeError):
    """A release operation was refused (unknown id, removing the active release, nothing to roll back to)."""


class StoreBusyError(ReleaseStoreError):
    """Another process holds the release store's lock (a flash in progress)."""


@dataclass(frozen=True)
class InstalledRelease:
    """One release directory: its id, where it is, and when it was installed."""

    id: str
    path: Path
    installed: float  # the directory's mtime (set when it was unpacked)
    current: bool = False
    previous: bool = False

    def to_dict(self) -> dict:
        return {"id": self.id, "path": str(self.path), "current": self.current, "previous": self.previous,
                "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.installed))}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (a power cut after the rename must not leave
    a release whose name exists but whose bytes do not)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


class ReleaseStore:
    """The releases directory of one device (``root``; default :func:`edge.release.releases_dir`).

    Methods that change the store expect the caller to hold :meth:`lock`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else releases_dir()

    # -- reading -------------------------------------------------------------------------------
    def _link(self, name: str) -> str | None:
        try:
            target = os.readlink(self.root / name)
        except (FileNotFoundError, OSError):
            return None
        rid = Path(target).name
        return rid if (self.root / rid).is_dir() and not rid.startswith(".") else None

    def current(self) -> str | None:
        """The active release's id (None: none installed)."""
        return self._link(CURRENT)

    def previous(self) -> str | None:
        return self._link(PREVIOUS)

    def path(self, rid: str) -> Path:
        """The directory of release ``rid``. Raises :class:`ReleaseStoreError` naming the ids there are."""
        if not rid or "/" in rid or rid.startswith(".") or rid in (CURRENT, PREVIOUS):
            raise ReleaseStoreError(f"{rid!r} is not a release id (see `edge release list`)")
        p = self.root / rid
        if not p.is_dir() or p.is_symlink():
            have = ", ".join(r.id for r in self.list()) or "none"
            raise ReleaseStoreError(f"no release {rid!r} in {self.root} (installed: {have})")
        return p

    def list(self) -> list[InstalledRelease]:
        """Installed releases, newest first."""
        if not self.root.is_dir():
            return []
        cur, prev = self.current(), self.previous()
        out = []
        for p in self.root.iterdir():
            if p.name.startswith(".") or p.is_symlink() or not p.is_dir():
                continue
            out.append(InstalledRelease(p.name, p, p.stat().st_mtime, p.name == cur, p.name == prev))
        return sorted(out, key=lambda r: (r.installed, r.id), reverse=True)

    # -- locking -------------------------------------------------------------------------------
    @contextmanager
    def lock(self, timeout_s: float = 60.0):
        """Hold the store's lock (``<root>/.lock``, flock: released by the kernel if the holder dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it (for `list` and diagnostics)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise StoreBusyError(f"{path}: another flash or release command (pid {self.holder()}) holds "
                                             f"the lock (waited {timeout_s:.0f} s)") from None
                    time.sleep(0.1)
            self.sweep()
            yield self
        finally:
            os.close(fd)

    def holder(self) -> int | None:
        """The pid that last took the lock (it may have finished since)."""
        try:
            return int((self.root / LOCK).read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def sweep(self) -> list[str]:
        """Remove what killed writers left behind (``.incoming-*``, ``.removing-*``, stale link temps)."""
        gone = []
        for p in self.root.iterdir():
            if p.name.startswith((INCOMING, REMOVING)):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                gone.append(p.name)
            elif p.name.startswith((f".{CURRENT}.tmp-", f".{PREVIOUS}.tmp-")):
                p.unlink(missing_ok=True)
                gone.append(p.name)
        return gone

    # -- changing ------------------------------------------------------------------------------
    def incoming_file(self, suffix: str = ".tar.gz") -> Path:
        """A fresh hidden file in the store for an upload (swept if the writer dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=INCOMING, suffix=suffix, dir=self.root)
        os.close(fd)
        return Path(name)

    def install(self, bundle: str | Path, trust: str | Path) -> tuple[str, BundleInfo, bool]:
        """Unpack ``bundle`` (a ``.tar.gz`` or a directory) into a hidden directory, verify it with
        ``trust``, flush it and rename it to its id. Returns ``(id, info, already_installed)``.

        Raises:
            BundleError (signature, integrity, archive): nothing is left in the store.
        """
        src = Path(bundle)
        tmp = Path(tempfile.mkdtemp(prefix=INCOMING, dir=self.root))
        try:
            if src.is_dir():
                root = tmp / src.name
                shutil.copytree(src, root, symlinks=True)
            else:
                if not src.exists():
                    raise FileNotFoundError(f"bundle not found: {src}")
                root = extract_archive(src, tmp)
            info = verify_bundle(root, trust)
            rid = release_id(info)
            final = self.root / rid
            if final.is_dir():
                try:
                    verify_bundle(final, trust)
                    return rid, info, True
                except EdgeError:  # a damaged copy under the name: replaced by the verified one
                    self._discard(final)
            _fsync_tree(root)
            os.rename(root, final)
            _fsync_dir(self.root)
            return rid, info, False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def verify(self, rid: str, trust: str | Path) -> BundleInfo:
        """Verify an installed release again (signature, every file, nothing extra)."""
        return verify_bundle(self.path(rid), trust)

    def _switch(self, name: str, rid: str | None) -> None:
        link = self.root / name
        if rid is None:
            link.unlink(missing_ok=True)
        else:
            tmp = self.root / f".{name}.tmp-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            os.symlink(rid, tmp)  # relative: the store can be mounted anywhere (an SD card on a workstation)
            os.replace(tmp, link)
        _fsync_dir(self.root)

    def activate(self, rid: str, trust: str | Path) -> str | None:
        """Point ``current`` at ``rid`` (verified again first); ``previous`` at the one it replaces.
        Returns the previously active id."""
        self.verify(rid, trust)
        old = self.current()
        if old == rid:
            return old
        if old is not None:
            self._switch(PREVIOUS, old)
        self._switch(CURRENT, rid)
        return old

    def rollback(self, trust: str | Path) -> tuple[str | None, str]:
        """Make ``previous`` current again. Returns ``(rolled back from, now current)``."""
        prev = self.previous()
        if prev is None:
            raise ReleaseStoreError(f"nothing to roll back to: {self.root / PREVIOUS} names no installed release")
        return self.activate(prev, trust), prev

    def deactivate(self) -> str | None:
        """Remove ``current`` (back to "no release installed"). Returns the id it named."""
        old = self.current()
        self._switch(CURRENT, None)
        return old

    def _discard(self, path: Path) -> None:
        hidden = Path(tempfile.mkdtemp(prefix=REMOVING, dir=self.root))
        os.rmdir(hidden)
        os.rename(path, hidden)  # gone from its name at once; the bytes go next
        shutil.rmtree(hidden, ignore_errors=True)

    def remove(self, rid: str) -> None:
        """Delete release ``rid`` (never the active one)."""
        p = self.path(rid)
        if rid == self.current():
            raise ReleaseStoreError(f"{rid} is the active release: activate another one first")
        if rid == self.previous():
            self._switch(PREVIOUS, None)
        self._discard(p)

    def prune(self, keep: int) -> list[str]:
        """Keep the ``keep`` newest releases (the active one and, if room, the previous one first)."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        releases = self.list()
        pinned = [r.id for r in releases if r.current] + [r.id for r in releases if r.previous]
        kept = pinned[:keep]
        for r in releases:
            if len(kept) >= keep:
                break
            if r.id not in kept:
                kept.append(r.id)
        removed = [r.id for r in releases if r.id not in kept]
        for rid in removed:
            self.remove(rid)
        return removed
