"""Crash-safe file writes for the unlock state (templates, lockout state, exports).

:func:`atomic_write` writes a temporary file in the target's directory, fsyncs it, renames it
over the target and fsyncs the directory, so a reader (or the next boot after a power cut or a
``kill -9``) sees either the old file or the new one, never a mixture. POSIX ``rename(2)`` within
one file system is atomic; the directory fsync makes the rename itself durable (ext4 with
``data=ordered`` would usually get this right anyway, but other file systems do not).

Test hook: when the environment variable :data:`PAUSE_AFTER_TEMP_ENV` names a file, the writer
creates that file after the temporary file is complete and fsynced, then sleeps, so a test can
kill the process with SIGKILL at exactly the worst moment. It has no effect when unset.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "ensure_dir", "TEMP_MARK", "PAUSE_AFTER_TEMP_ENV"]

#: Marker in temporary file names; loaders skip every file whose name contains it.
TEMP_MARK = ".tmp-"

#: Test-only hook, see the module docstring.
PAUSE_AFTER_TEMP_ENV = "EDGE_UNLOCK_TEST_PAUSE_AFTER_TEMP"
_PAUSE_SECONDS = 120.0


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory so that entries created, renamed or removed in it are durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(directory: str | Path, mode: int = 0o700) -> Path:
    """Create ``directory`` (and parents) if missing; new directories get ``mode``."""
    d = Path(directory)
    d.mkdir(mode=mode, parents=True, exist_ok=True)
    return d


def _pause_for_test(temp: Path) -> None:
    marker = os.environ.get(PAUSE_AFTER_TEMP_ENV)
    if not marker:
        return
    # The marker itself appears atomically (written aside, then renamed), so a watcher never
    # reads it half-written.
    side = Path(marker).with_name(Path(marker).name + ".writing")
    side.write_text(str(temp), encoding="utf-8")
    os.replace(side, marker)
    time.sleep(_PAUSE_SECONDS)


def atomic_write(path: str | Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Args:
        path: the target file; its directory must exist.
        data: the complete new content.
        mode: permission bits of the new file (set at creation, before any byte is written).

    Raises:
        OSError: the directory is not writable, the disk is full … The target is untouched and
            the temporary file is removed.
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        _pause_for_test(temp)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)
