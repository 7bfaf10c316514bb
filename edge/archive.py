"""Bounded extraction of a bundle archive (``.tar.gz`` or ``.tar``): nothing unbounded is ever written.

A release archive comes from elsewhere (a download, a USB stick), so it is read as hostile until
its signature has been checked, which needs its files on disk first. :func:`extract_archive`
writes them only when the archive is within bounds: a cap on the total bytes and on the number
of members, regular files and directories only, no path leaving the destination. The limits are
checked from the headers before anything is written, and again on the bytes as they stream
(including what tarfile reads itself: GNU long names, pax records).

Example:
    >>> root = extract_archive("rpi5.tar.gz", private_dir)     # doctest: +SKIP
    >>> verify_bundle(root, "bundle_signing.pub")              # doctest: +SKIP
"""

from __future__ import annotations

import io
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from edge.errors import BundleArchiveError, BundleError, BundleIntegrityError

__all__ = ["extract_archive", "MAX_ARCHIVE_BYTES", "MAX_ARCHIVE_MEMBERS"]

MANIFEST = "manifest.json"
_CHUNK = 1 << 20

#: Default bounds of :func:`extract_archive`: far above any real bundle (a full five-role build is
#: tens of MB), far below what would fill a device's storage.
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_ARCHIVE_MEMBERS = 2000


class _Bounded(io.RawIOBase):
    """A read-only stream that refuses to deliver more than ``limit`` bytes in total.

    Everything tarfile reads goes through it (headers, GNU long names, pax records, data), so a
    member that declares little and a header block that holds much are stopped alike."""

    def __init__(self, raw, limit: int, origin: Path) -> None:
        self.raw, self.limit, self.origin, self.count = raw, limit, origin, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.raw.read(min(len(b), self.limit - self.count + 1))
        self.count += len(data)
        if self.count > self.limit:
            raise BundleArchiveError(f"{self.origin}: expands to more than {self.limit} bytes; refused while "
                                     "streaming it")
        b[:len(data)] = data
        return len(data)


def _open_stream(f, tar_path: Path, limit: int):
    """A streaming tar reader over ``f`` (gzip, including multi-member, or plain tar), bounded."""
    import gzip

    magic = f.read(2)
    f.seek(0)
    raw = gzip.GzipFile(fileobj=f, mode="rb") if magic == b"\x1f\x8b" else f
    return tarfile.open(fileobj=io.BufferedReader(_Bounded(raw, limit, tar_path), _CHUNK), mode="r|")


def _check_member(m: tarfile.TarInfo, tar_path: Path, count: int, declared: int, max_bytes: int,
                  max_members: int) -> None:
    parts = PurePosixPath(m.name).parts
    if count > max_members:
        raise BundleArchiveError(f"{tar_path}: more than {max_members} members (at {m.name!r}); refused before "
                                 "extracting", file=m.name)
    if PurePosixPath(m.name).is_absolute() or ".." in parts or not parts:
        raise BundleArchiveError(f"{tar_path}: unsafe member path {m.name!r}", file=m.name)
    if m.issparse() or not (m.isreg() or m.isdir()):
        raise BundleArchiveError(f"{tar_path}: member {m.name!r} is not a regular file or directory "
                                 f"(tar type {m.type!r}); refused", file=m.name)
    if declared > max_bytes:
        raise BundleArchiveError(f"{tar_path}: members up to {m.name!r} declare {declared} bytes, more than the "
                                 f"limit of {max_bytes} bytes; refused before extracting", file=m.name)


def extract_archive(tar_path: str | Path, dest: str | Path, *, max_bytes: int = MAX_ARCHIVE_BYTES,
                    max_members: int = MAX_ARCHIVE_MEMBERS) -> Path:
    """Extract a bundle archive into ``dest``, bounded, and return the bundle directory inside it.

    Two passes over one open file (so the archive cannot be swapped between them):

    1. headers only: member count, paths, types (regular files and directories only: no links,
       devices, FIFOs or sparse files) and the declared total size are checked as each header
       streams by, so an archive over the limits is refused before anything is written;
    2. extraction: each member's bytes are copied in chunks and counted; more bytes than its
       header declared, or a running total over ``max_bytes``, stops at once.

    On any refusal nothing extracted is left in ``dest``.

    Raises:
        BundleArchiveError: too many members, too many bytes, an unsafe or non-regular member.
        BundleIntegrityError: an unreadable archive, or no manifest.json at its top.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    # member data + per member a header, a long-name/pax record and padding, + the end blocks
    stream_limit = max_bytes + (max_members + 2) * 4 * 512 + _CHUNK
    written: list[Path] = []
    try:
        with open(tar_path, "rb") as f:
            count = declared = 0
            with _open_stream(f, tar_path, stream_limit) as tf:
                for m in tf:
                    count += 1
                    declared += m.size if m.isreg() else 0
                    _check_member(m, tar_path, count, declared, max_bytes, max_members)
            f.seek(0)
            total = 0
            with _open_stream(f, tar_path, stream_limit) as tf:
                for m in tf:
                    target = dest.joinpath(*PurePosixPath(m.name).parts)
                    _check_member(m, tar_path, 1, m.size if m.isreg() else 0, max_bytes, max_members)
                    if m.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    got = 0
                    with open(target, "xb") as out:
                        written.append(target)
                        while True:
                            block = src.read(_CHUNK)
                            if not block:
                                break
                            got += len(block)
                            total += len(block)
                            if got > m.size or total > max_bytes:
                                raise BundleArchiveError(f"{tar_path}: {m.name!r} expands beyond its declared "
                                                         f"size or the {max_bytes}-byte limit; refused while "
                                                         "extracting", file=m.name)
                            out.write(block)
    except BundleError:
        _clear(dest)
        raise
    except FileExistsError as e:
        _clear(dest)
        raise BundleArchiveError(f"{tar_path}: member {e.filename} appears twice", file=str(e.filename)) from e
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        _clear(dest)
        raise BundleIntegrityError(f"{tar_path}: not a readable bundle archive: {e}", file=tar_path.name) from e
    if (dest / MANIFEST).is_file():
        return dest
    tops = list(dest.iterdir())
    if len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    _clear(dest)
    raise BundleIntegrityError(f"{tar_path}: no {MANIFEST} at the top of the archive", file=MANIFEST)


def _clear(dest: Path) -> None:
    for child in list(dest.iterdir()) if dest.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
