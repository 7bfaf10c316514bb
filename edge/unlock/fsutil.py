"""Crash-safe file writes for the unlock state (templates, lockout state, exports).

:func:`atomic_write` writes a temporary file in the target's directory, fsyncs it, renames it
over the target and fsyncs the directory, so a reader (or the next boot after a power cut or a
``kill -9``) sees either the old file or the new one, never a mixture. POSIX ``rename(2)`` within
one file system is atomic; the directory fsync makes the rename itself durable (ext4 with
``data=ordered`` would usually get this right anyway, but other file systems do not).

Writers of one directory serialise with :func:`exclusive_lock` (``flock(2)`` on a lock file
there), and :func:`remove_stale_temps` removes the temporary files a killed writer left behind:
a file is stale when the process named in its name is gone, or started after the file was
written (its pid was reused).

Test hook: when the environment variable :data:`PAUSE_AFTER_TEMP_ENV` names a file, the writer
creates that file after the temporary file is complete and fsynced, then sleeps, so a test can
kill the process with SIGKILL at exactly the worst moment. :data:`SLOW_WRITE_ENV` (seconds)
makes every write wait that long before its rename, widening the window in which concurrent
writers could lose each other's work, so the concurrency tests can fail. Neither has any effect
when unset.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "ensure_dir", "exclusive_lock", "remove_stale_temps",
           "TEMP_MARK", "PAUSE_AFTER_TEMP_ENV", "SLOW_WRITE_ENV"]

#: Marker in temporary file names; loaders skip every file whose name contains it.
TEMP_MARK = ".tmp-"

#: Test-only hook, see the module docstring.
PAUSE_AFTER_TEMP_ENV = "EDGE_UNLOCK_TEST_PAUSE_AFTER_TEMP"
_PAUSE_SECONDS = 120.0
#: Test-only hook, see the module docstring.
SLOW_WRITE_ENV = "EDGE_UNLOCK_TEST_SLOW_WRITE"


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


@contextmanager
def exclusive_lock(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created 0600) for the ``with`` block.

    The kernel drops the lock when the descriptor is closed, including when the process is
    killed, so a crashed holder never leaves it taken.
    """
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _started_at(pid: int) -> float | None:
    """Epoch start time of process ``pid`` from /proc, None when it is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        ticks = int(stat[stat.rfind(")") + 2:].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        return 0.0  # running, start unknown: assume it may be the writer
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` whose writer is gone; return them.

    A temporary file names its writer's pid; it is stale when that process is not running or
    started after the file was last written (the pid was reused). Files that cannot be removed
    (a read-only caller) are left for the next writer.
    """
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for path in entries:
        if TEMP_MARK not in path.name:
            continue
        try:
            pid = int(path.name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0])
            mtime = path.lstat().st_mtime
        except (ValueError, IndexError, OSError):
            continue
        started = _started_at(pid)
        if started is None or started > mtime + 1.0:  # /proc start times have 10 ms steps
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                continue
    return removed


def _pause_for_test(temp: Path) -> None:
    slow = os.environ.get(SLOW_WRITE_ENV)
    if slow:
        time.sleep(min(float(slow), 5.0))
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
