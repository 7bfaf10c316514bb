"""Where the template key comes from: a small protocol, and a root-only key file implementing it.

The template store asks a :class:`KeyProvider` for 32 bytes and nothing else, so the key can live
wherever the device keeps secrets. :class:`FileKeyProvider` is the default: 32 random bytes in a
file created with ``O_CREAT | O_EXCL`` and mode 0600 (``/etc/edgesight/unlock.key``), which is
refused when its permissions let the group or others read it (as ssh refuses a private key).

Another backend implements the same one method. A TPM 2.0 backend would keep the key sealed to
the TPM (``tpm2_create`` / ``tpm2_unseal`` via ``tpm2-pytss``) and return the unsealed bytes; an
OS keyring backend would call ``keyring.get_password(service, name)`` and decode it::

    class KeyringKeyProvider:
        def __init__(self, service: str = "edgesight", name: str = "unlock"):
            self.service, self.name = service, name

        def get_key(self) -> bytes:
            import base64, keyring
            value = keyring.get_password(self.service, self.name)
            if value is None:
                raise KeyFileError(f"no key {self.name!r} in the keyring {self.service!r}")
            return base64.b64decode(value)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol, runtime_checkable

from edge.errors import KeyFileError
from edge.unlock.fsutil import ensure_dir, fsync_dir

__all__ = ["KeyProvider", "FileKeyProvider", "StaticKeyProvider", "KEY_BYTES", "KEY_FILE_MODE"]

#: AES-256 key length in bytes.
KEY_BYTES = 32
#: Permission bits of a new key file: read/write for its owner (root) only.
KEY_FILE_MODE = 0o600
#: Permission bits that must be clear on an existing key file: any group or other access.
_FORBIDDEN_BITS = stat.S_IRWXG | stat.S_IRWXO


@runtime_checkable
class KeyProvider(Protocol):
    """Anything that hands out the 32-byte template key.

    Implementations must return the same key on every call and raise
    :class:`~edge.errors.KeyFileError` (with a message naming where they looked) when there is
    none or it is unusable.
    """

    def get_key(self) -> bytes:
        """Return the 32-byte AES-256 key."""
        ...


def _check_key(key: bytes, where: str) -> bytes:
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{where}: the key must be {KEY_BYTES} bytes, found {len(key)}")
    return key


class StaticKeyProvider:
    """A key held in memory (tests, or a key already unsealed by the caller)."""

    def __init__(self, key: bytes) -> None:
        self._key = _check_key(bytes(key), "StaticKeyProvider")

    def get_key(self) -> bytes:
        return self._key


class FileKeyProvider:
    """The key stored as 32 raw bytes in a file only its owner may read.

    Args:
        path: the key file (default location: ``/etc/edgesight/unlock.key``).
        create: create the file with a fresh random key when it does not exist (enrolment and
            import do this; verification never does: no key means nothing was ever enrolled).

    Raises (from :meth:`get_key`):
        KeyFileError: the file is missing, is not a regular file, is readable or writable by the
            group or others, is owned by another user than the caller or root, or does not hold
            exactly 32 bytes.

    Example:
        >>> provider = FileKeyProvider("/tmp/k/unlock.key", create=True)  # doctest: +SKIP
        >>> len(provider.get_key())  # doctest: +SKIP
        32
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        self.create = create
        self._key: bytes | None = None

    def get_key(self) -> bytes:
        if self._key is None:
            if self.create and not self.path.exists():
                self._key = self.create_key_file(self.path)
            else:
                self._key = self._read()
        return self._key

    @staticmethod
    def create_key_file(path: str | Path) -> bytes:
        """Write a new random key to ``path`` (which must not exist) with mode 0600.

        ``O_EXCL`` makes creation race-free: two enrolments started at once cannot both write a
        key and leave templates encrypted under the loser's.

        Raises:
            KeyFileError: the file already exists or cannot be created.
        """
        p = Path(path)
        ensure_dir(p.parent)
        key = os.urandom(KEY_BYTES)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                         KEY_FILE_MODE)
        except FileExistsError as e:
            raise KeyFileError(f"key file {p} already exists; refusing to overwrite a key") from e
        except OSError as e:
            raise KeyFileError(f"cannot create key file {p}: {e.strerror}") from e
        try:
            os.fchmod(fd, KEY_FILE_MODE)  # the umask may have removed bits, never added: be exact
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(p.parent)
        return key

    def _read(self) -> bytes:
        p = self.path
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError as e:
            raise KeyFileError(f"key file {p} not found: enrol a user first (it is created then) "
                               f"or point --key / EDGE_UNLOCK_KEY at the key") from e
        except OSError as e:
            raise KeyFileError(f"cannot open key file {p}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"key file {p} is not a regular file")
            if st.st_mode & _FORBIDDEN_BITS:
                raise KeyFileError(
                    f"key file {p} has mode {stat.S_IMODE(st.st_mode):04o}: it must not be "
                    f"accessible by group or others; run: chmod 600 {p}")
            if st.st_uid not in (0, os.geteuid()):
                raise KeyFileError(f"key file {p} is owned by uid {st.st_uid}, "
                                   f"expected root or uid {os.geteuid()}")
            data = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
        return _check_key(data, f"key file {p}")
