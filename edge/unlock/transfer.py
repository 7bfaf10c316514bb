"""Encrypted export and import of a whole template store, protected by a passphrase.

An export file moves enrolments to a new device (or a backup) without the device key::

    MAGIC (9) | params length (u32 BE) | params JSON | nonce || AES-256-GCM(records JSON) || tag

The params (scrypt cost and salt) are the associated data, so changing them makes the file fail
authentication rather than silently deriving another key. The key is scrypt(passphrase, salt).

Import is all-or-nothing before writing: the file is decrypted and every record validated, and a
user who is already enrolled makes the import fail (``replace=True`` overwrites) before the first
record is written; each record is then written atomically.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from edge.errors import TemplateIntegrityError, TemplateStoreError, UserExistsError
from edge.unlock import crypto
from edge.unlock.fsutil import atomic_write
from edge.unlock.store import FORMAT_VERSION, TemplateRecord, TemplateStore

__all__ = ["export_store", "import_store", "ExportSummary", "MIN_PASSPHRASE_CHARS"]

MAGIC = b"EDGEUNLX\n"
#: Shortest passphrase accepted for a new export (the file may leave the device).
MIN_PASSPHRASE_CHARS = 8
_SALT_BYTES = 16
_LEN = struct.Struct(">I")
_MAX_PARAMS = 4096


@dataclass(frozen=True)
class ExportSummary:
    """What an export or import moved, and what it had to leave behind."""

    users: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # unreadable records (export) — reported, not fatal


def export_store(store: TemplateStore, path: str | Path, passphrase: str) -> ExportSummary:
    """Write every readable record of ``store`` to ``path``, encrypted under ``passphrase``.

    Raises:
        ValueError: the passphrase is shorter than :data:`MIN_PASSPHRASE_CHARS`.
        TemplateStoreError: the store holds no readable record.
    """
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise ValueError(f"export passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")
    listing = store.load_all()
    if not listing.records:
        raise TemplateStoreError(f"nothing to export: no readable record in {store.directory}")
    salt = os.urandom(_SALT_BYTES)
    params = json.dumps({"format_version": FORMAT_VERSION, "kdf": "scrypt", "n": crypto.SCRYPT_N,
                         "r": crypto.SCRYPT_R, "p": crypto.SCRYPT_P,
                         "salt": base64.b64encode(salt).decode("ascii")}).encode("utf-8")
    head = MAGIC + _LEN.pack(len(params)) + params
    key = crypto.passphrase_key(passphrase, salt)
    body = json.dumps({"records": [r.to_dict() for r in listing.records]}).encode("utf-8")
    atomic_write(Path(path), head + crypto.seal(key, body, head))
    skipped = tuple(str(p.path) for p in listing.problems)
    return ExportSummary(tuple(listing.users()), skipped)


def read_export(path: str | Path, passphrase: str) -> list[TemplateRecord]:
    """Decrypt and validate an export file.

    Raises:
        TemplateStoreError: not an export file, or malformed.
        TemplateIntegrityError: wrong passphrase or modified file.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TemplateStoreError(f"cannot read export file {p}: {e.strerror}") from e
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
        raise TemplateStoreError(f"{p} is not an edgesight unlock export (bad magic)")
    (n_params,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if n_params > _MAX_PARAMS or start + n_params > len(data):
        raise TemplateIntegrityError(f"export file {p}: truncated or corrupt header")
    head = data[:start + n_params]
    try:
        params = json.loads(head[start:])
        if params.get("kdf") != "scrypt":
            raise ValueError(f"unknown kdf {params.get('kdf')!r}")
        salt = base64.b64decode(params["salt"], validate=True)
        key = crypto.passphrase_key(passphrase, salt, int(params["n"]), int(params["r"]), int(params["p"]))
    except (KeyError, TypeError, ValueError) as e:
        raise TemplateStoreError(f"export file {p}: bad header: {e}") from e
    plain = crypto.open_sealed(key, data[len(head):], head,
                               f"export file {p} (wrong passphrase, or the file was modified)")
    records = json.loads(plain).get("records", [])
    return [TemplateRecord.from_dict(r, f"export file {p} record {i}") for i, r in enumerate(records)]


def import_store(store: TemplateStore, path: str | Path, passphrase: str, *,
                 replace: bool = False) -> ExportSummary:
    """Add the records of an export file to ``store``.

    Raises:
        UserExistsError: some users of the file are already enrolled and ``replace`` is False
            (nothing has been written then).
        TemplateIntegrityError, TemplateStoreError: see :func:`read_export`.
    """
    records = read_export(path, passphrase)
    clash = [r.user for r in records if store.exists(r.user)]
    if clash and not replace:
        raise UserExistsError(f"already enrolled: {', '.join(clash)}; nothing imported "
                              f"(use --replace to overwrite them)")
    for r in records:
        store.save(r, replace=True)
    return ExportSummary(tuple(r.user for r in records))
