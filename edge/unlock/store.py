"""The template store: one AES-256-GCM encrypted file per enrolled user.

Layout: ``STORE_DIR/<digest>.tpl``, where ``<digest>`` is a keyed hash of the user name, so a
directory listing reveals neither names nor vectors. Each file is::

    MAGIC (8) | format version (u16 BE) | meta length (u32 BE) | sealed meta | sealed payload

Both parts are AES-256-GCM (``nonce || ciphertext || tag``). The *meta* part holds the user name,
the embedder's model id and sha256 and timestamps, authenticated with the header as associated
data. The *payload* (template vectors; face crops only when the user opted in) is authenticated
with associated data that binds the user name, the model id, the model sha256 and the format
version, so a payload cannot be moved to another user or passed off as another model's. A file
renamed to another user's digest is detected too.

Each file is written atomically (:func:`edge.unlock.fsutil.atomic_write`): a crash or ``kill -9``
during an enrolment leaves the previous record whole, and the temporary file it leaves is removed
when the store is next opened. Every write (save, read-modify-write by :meth:`TemplateStore.update`,
remove, rename) holds an ``flock`` on ``STORE_DIR/.store.lock``, so concurrent enrolments never
lose each other's samples. A damaged file makes that one user fail with
:class:`~edge.errors.TemplateIntegrityError`; the others still load.

``STORE_DIR/store.keycheck`` holds a constant sealed with the store's key. A key that does not
open it (or, in a store written before it existed, opens none of the records) is refused with
:class:`~edge.errors.StoreKeyMismatchError` before anything is read or written, instead of
looking like an empty store.

Templates of an embedder other than the one running are *stale*: :meth:`TemplateStore.
templates_for` raises :class:`~edge.errors.StaleEnrollmentError` asking for a re-enrolment, and
nothing ever compares vectors across models.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import (
    StaleEnrollmentError, StoreKeyMismatchError, TemplateIntegrityError, TemplateStoreError,
    UnknownUserError, UserExistsError,
)
from edge.unlock import crypto
from edge.unlock.fsutil import (
    TEMP_MARK, atomic_write, ensure_dir, exclusive_lock, fsync_dir, remove_stale_temps,
)
from edge.unlock.keys import KeyProvider

__all__ = ["TemplateRecord", "RecordInfo", "StoreProblem", "StoreListing", "TemplateStore",
           "FORMAT_VERSION", "RECORD_SUFFIX", "validate_user"]

#: First bytes of every record file.
MAGIC = b"EDGEUNLK"
#: Version of the record format; bound into every record's associated data.
FORMAT_VERSION = 1
#: Suffix of record files; anything else in the store directory is ignored.
RECORD_SUFFIX = ".tpl"
#: Longest accepted user name (PAM user names are far shorter; this only bounds the input).
MAX_USER_CHARS = 256
_HEADER = struct.Struct(">8sHI")
#: Lock file every writer of the store holds (flock) while it reads, changes and writes.
LOCK_FILE = ".store.lock"
#: A constant sealed with the store key: proves a key is the store's before anything is written.
KEY_CHECK_FILE = "store.keycheck"
_KEY_CHECK = b"edgesight unlock store key check v1"
_ENC_PURPOSE = b"edgesight unlock templates v1"
_NAME_PURPOSE = b"edgesight unlock names v1"


def validate_user(user: str) -> str:
    """Return ``user`` if it is a usable name: 1-256 printable characters, no path separators.

    Raises:
        ValueError: naming what is wrong with the name.
    """
    if not isinstance(user, str) or not user.strip():
        raise ValueError(f"user name must be a non-empty string, got {user!r}")
    if len(user) > MAX_USER_CHARS:
        raise ValueError(f"user name longer than {MAX_USER_CHARS} characters")
    if user != user.strip() or any(unicodedata.category(c).startswith("C") for c in user):
        raise ValueError(f"user name {user!r} has control characters or surrounding spaces")
    if "/" in user or user in (".", ".."):
        raise ValueError(f"user name {user!r} must not contain '/' or be '.' or '..'")
    return user


@dataclass(frozen=True)
class TemplateRecord:
    """One user's enrolment.

    Attributes:
        user: the user name (a PAM user name for sudo/login).
        model_id: the embedder that made the vectors (its card name).
        model_sha256: sha256 of the embedder file that made them.
        vectors: ``float32`` ``N×D`` L2-normalised templates (read-only).
        images: encoded face crops (JPEG bytes), present only when the user opted in.
        created, updated: epoch seconds.
        format_version: the store format the record was written in.
    """

    user: str
    model_id: str
    model_sha256: str
    vectors: np.ndarray
    images: tuple[bytes, ...] = ()
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        validate_user(self.user)
        if not self.model_id or not isinstance(self.model_id, str):
            raise ValueError(f"TemplateRecord.model_id must be a non-empty string, got {self.model_id!r}")
        if not (isinstance(self.model_sha256, str) and len(self.model_sha256) == 64):
            raise ValueError(f"TemplateRecord.model_sha256 must be 64 hex characters, got {self.model_sha256!r}")
        v = np.array(self.vectors, dtype=np.float32, copy=True)
        if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
            raise ValueError(f"TemplateRecord.vectors must have shape N×D with N, D > 0, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("TemplateRecord.vectors holds NaN or infinity")
        v.setflags(write=False)
        object.__setattr__(self, "vectors", v)
        object.__setattr__(self, "images", tuple(bytes(b) for b in self.images))

    def is_stale(self, model_id: str, model_sha256: str) -> bool:
        """True when the record was made by another embedder than (model_id, model_sha256)."""
        return (self.model_id, self.model_sha256) != (model_id, model_sha256)

    def info(self, path: Path | None = None) -> "RecordInfo":
        return RecordInfo(self.user, self.model_id, self.model_sha256, int(self.vectors.shape[0]),
                          self.created, self.updated, len(self.images) > 0, path)

    def to_dict(self) -> dict:
        """Plain-JSON form (vectors as base64 little-endian float32), used by exports."""
        return {"user": self.user, "model_id": self.model_id, "model_sha256": self.model_sha256,
                "shape": list(self.vectors.shape), "created": self.created, "updated": self.updated,
                "vectors": base64.b64encode(self.vectors.astype("<f4").tobytes()).decode("ascii"),
                "images": [base64.b64encode(b).decode("ascii") for b in self.images]}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "TemplateRecord":
        """Inverse of :meth:`to_dict`. Raises TemplateStoreError naming ``where`` and the field."""
        try:
            n, dim = (int(x) for x in d["shape"])
            raw = base64.b64decode(d["vectors"], validate=True)
            if len(raw) != n * dim * 4:
                raise ValueError(f"vectors hold {len(raw)} bytes, shape {n}×{dim} needs {n * dim * 4}")
            vectors = np.frombuffer(raw, dtype="<f4").reshape(n, dim)
            images = tuple(base64.b64decode(b, validate=True) for b in d.get("images", []))
            return cls(d["user"], d["model_id"], d["model_sha256"], vectors, images,
                       float(d["created"]), float(d["updated"]))
        except KeyError as e:
            raise TemplateStoreError(f"{where}: missing field {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise TemplateStoreError(f"{where}: malformed record: {e}") from e


@dataclass(frozen=True)
class RecordInfo:
    """What ``edge unlock list`` shows about a record (no vectors)."""

    user: str
    model_id: str
    model_sha256: str
    templates: int
    created: float
    updated: float
    has_images: bool
    path: Path | None = None


@dataclass(frozen=True)
class StoreProblem:
    """A record file that could not be read, and why."""

    path: Path
    error: Exception


@dataclass(frozen=True)
class StoreListing:
    """Every readable record, and the files that could not be read."""

    records: tuple[TemplateRecord, ...]
    problems: tuple[StoreProblem, ...]

    def users(self) -> list[str]:
        return [r.user for r in self.records]


class TemplateStore:
    """The encrypted per-user template files in one directory.

    Args:
        directory: the store directory (created with mode 0700 on the first write).
        keys: the :class:`~edge.unlock.keys.KeyProvider` holding the master key.

    Example:
        >>> keys = FileKeyProvider("/etc/edgesight/unlock.key", create=True)  # doctest: +SKIP
        >>> store = TemplateStore("/var/lib/edgesight/templates", keys)  # doctest: +SKIP
        >>> store.save(TemplateRecord("alice", "sface_2021dec_fp32", sha, vectors))  # doctest: +SKIP
        >>> store.load("alice").vectors.shape  # doctest: +SKIP
        (5, 128)
    """

    def __init__(self, directory: str | Path, keys: KeyProvider) -> None:
        self.directory = Path(directory)
        self._keys = keys
        self._subkeys: tuple[bytes, bytes] | None = None

    # -- keys and names ----------------------------------------------------------------------
    def _keypair(self) -> tuple[bytes, bytes]:
        """The derived keys, after checking the directory and that the key opens this store.

        Opening the store also removes the temporary files of writers that were killed.
        """
        if self._subkeys is None:
            self.check_directory()
            master = self._keys.get_key()
            subkeys = (crypto.subkey(master, _ENC_PURPOSE), crypto.subkey(master, _NAME_PURPOSE))
            self._check_key(subkeys[0])
            self._subkeys = subkeys
            if self.directory.is_dir():
                remove_stale_temps(self.directory)
        return self._subkeys

    def check_directory(self) -> None:
        """Raise TemplateStoreError if the store path exists and is not a directory."""
        if self.directory.exists() and not self.directory.is_dir():
            raise TemplateStoreError(f"template store {self.directory} is not a directory "
                                     f"(--store / EDGE_UNLOCK_STORE must name a directory)")

    def _key_name(self) -> str:
        path = getattr(self._keys, "path", None)
        return f"key file {path}" if path is not None else f"key of {type(self._keys).__name__}"

    def _check_key(self, enc: bytes) -> None:
        check = self.directory / KEY_CHECK_FILE
        mismatch = StoreKeyMismatchError(
            f"the {self._key_name()} does not open the template store {self.directory}: its records "
            f"were written with another key (or {check} is damaged). Point --key / EDGE_UNLOCK_KEY at "
            f"the key the users were enrolled with; nothing was read or written")
        try:
            blob = check.read_bytes()
        except FileNotFoundError:
            blob = None
        except OSError as e:
            raise TemplateStoreError(f"cannot read {check}: {e.strerror}") from e
        if blob is not None:
            try:
                crypto.open_sealed(enc, blob, MAGIC + b"|keycheck", str(check))
            except TemplateIntegrityError:
                raise mismatch from None
            return
        # A store written before the check file existed: the key must open some record's meta.
        files = self.record_files()
        for path in files:
            try:
                data = path.read_bytes()
                _, _, meta_len = _HEADER.unpack_from(data)
                crypto.open_sealed(enc, data[_HEADER.size:_HEADER.size + meta_len],
                                   data[:10] + b"|meta", str(path))
                return
            except (OSError, struct.error, TemplateIntegrityError):
                continue
        if files:
            raise mismatch

    def _write_key_check(self) -> None:
        check = self.directory / KEY_CHECK_FILE
        if not check.exists():
            atomic_write(check, crypto.seal(self._keypair()[0], _KEY_CHECK, MAGIC + b"|keycheck"))

    def path_for(self, user: str) -> Path:
        """The record file of ``user`` (whether or not it exists)."""
        return self.directory / f"{crypto.name_digest(self._keypair()[1], validate_user(user))}{RECORD_SUFFIX}"

    def exists(self, user: str) -> bool:
        return self.path_for(user).is_file()

    def record_files(self) -> list[Path]:
        """Record files in the directory (temporary files of interrupted writes excluded)."""
        self.check_directory()
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir()
                      if p.suffix == RECORD_SUFFIX and TEMP_MARK not in p.name and p.is_file())

    # -- encoding ----------------------------------------------------------------------------
    @staticmethod
    def _payload_aad(header: bytes, user: str, model_id: str, sha: str) -> bytes:
        bound = json.dumps([user, model_id, sha, FORMAT_VERSION], ensure_ascii=True)
        return header + b"|payload|" + bound.encode("ascii")

    def _encode(self, record: TemplateRecord) -> bytes:
        enc, _ = self._keypair()
        meta = json.dumps({"user": record.user, "model_id": record.model_id,
                           "model_sha256": record.model_sha256, "created": record.created,
                           "updated": record.updated}).encode("utf-8")
        payload = json.dumps({"shape": list(record.vectors.shape),
                              "vectors": base64.b64encode(record.vectors.astype("<f4").tobytes()).decode("ascii"),
                              "images": [base64.b64encode(b).decode("ascii") for b in record.images]}
                             ).encode("utf-8")
        prefix = MAGIC + struct.pack(">H", FORMAT_VERSION)
        sealed_meta = crypto.seal(enc, meta, prefix + b"|meta")
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(sealed_meta))
        sealed_payload = crypto.seal(enc, payload, self._payload_aad(
            header[:10], record.user, record.model_id, record.model_sha256))
        return header + sealed_meta + sealed_payload

    def _decode(self, data: bytes, path: Path) -> TemplateRecord:
        enc, names = self._keypair()
        where = f"template record {path}"
        if len(data) < _HEADER.size:
            raise TemplateIntegrityError(f"{where}: truncated ({len(data)} bytes)")
        magic, version, meta_len = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise TemplateStoreError(f"{where}: not an edgesight template record (bad magic)")
        if version != FORMAT_VERSION:
            raise TemplateStoreError(f"{where}: store format version {version} is not supported "
                                     f"(this edgesight reads version {FORMAT_VERSION}); re-enrol")
        body = data[_HEADER.size:]
        if meta_len > len(body):
            raise TemplateIntegrityError(f"{where}: truncated (meta length {meta_len} > {len(body)})")
        meta = json.loads(crypto.open_sealed(enc, body[:meta_len], data[:10] + b"|meta", where))
        user = meta["user"]
        if path.name != f"{crypto.name_digest(names, user)}{RECORD_SUFFIX}":
            raise TemplateIntegrityError(f"{where}: record of another user moved to this file name")
        plain = crypto.open_sealed(enc, body[meta_len:], self._payload_aad(
            data[:10], user, meta["model_id"], meta["model_sha256"]), where)
        payload = json.loads(plain)
        return TemplateRecord.from_dict({**meta, **payload}, where)

    # -- reading -----------------------------------------------------------------------------
    def _read(self, path: Path) -> TemplateRecord:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise TemplateStoreError(f"cannot read template record {path}: {e.strerror}") from e
        return self._decode(data, path)

    def load(self, user: str) -> TemplateRecord:
        """The record of ``user``.

        Raises:
            UnknownUserError: the user is not enrolled.
            TemplateIntegrityError: the record was modified or the key is wrong.
            TemplateStoreError: unreadable or unsupported record.
        """
        path = self.path_for(user)
        if not path.is_file():
            raise UnknownUserError(f"no templates for user {user!r} in {self.directory}")
        return self._read(path)

    def load_all(self) -> StoreListing:
        """Every record that can be read; damaged files are reported, never fatal to the others."""
        records, problems = [], []
        for path in self.record_files():
            try:
                records.append(self._read(path))
            except (TemplateStoreError, ValueError, KeyError) as e:
                problems.append(StoreProblem(path, e))
        records.sort(key=lambda r: r.user)
        return StoreListing(tuple(records), tuple(problems))

    def templates_for(self, user: str, model_id: str, model_sha256: str) -> TemplateRecord:
        """The record of ``user`` if it was made by this embedder.

        Raises:
            StaleEnrollmentError: the templates come from another embedder: re-enrol.
            UnknownUserError, TemplateIntegrityError, TemplateStoreError: as :meth:`load`.
        """
        record = self.load(user)
        if record.is_stale(model_id, model_sha256):
            raise StaleEnrollmentError(
                f"the templates of {user!r} were made by {record.model_id} "
                f"(sha256 {record.model_sha256[:12]}…) but the embedder is now {model_id} "
                f"(sha256 {model_sha256[:12]}…): they are stale and are not compared; re-enrol "
                f"with: edge unlock enroll {user} --replace")
        return record

    # -- writing -----------------------------------------------------------------------------
    def _lock(self):
        """The store's write lock (the directory is created first)."""
        self._keypair()
        ensure_dir(self.directory)
        return exclusive_lock(self.directory / LOCK_FILE)

    def _write(self, record: TemplateRecord) -> Path:
        self._write_key_check()
        path = self.path_for(record.user)
        atomic_write(path, self._encode(record))
        return path

    def save(self, record: TemplateRecord, *, replace: bool = True) -> Path:
        """Write ``record`` atomically, replacing the user's previous record if ``replace``.

        Raises:
            UserExistsError: the user exists and ``replace`` is False (checked under the lock,
                so of two enrolments of a new user at once, one is told so).
        """
        with self._lock():
            if not replace and self.path_for(record.user).exists():
                raise UserExistsError(f"user {record.user!r} is already enrolled")
            return self._write(record)

    def update(self, user: str, change: Callable[[TemplateRecord | None], TemplateRecord]) -> TemplateRecord:
        """Read-modify-write the record of ``user`` under the store lock.

        ``change`` gets the current record (None when the user is not enrolled) and returns the
        record to write; no other writer runs in between, so nothing another enrolment wrote is
        lost. Errors of ``change`` or of reading leave the store untouched.
        """
        with self._lock():
            current = self.load(user) if self.path_for(user).is_file() else None
            record = change(current)
            if record.user != user:
                raise ValueError(f"update of {user!r} returned a record of {record.user!r}")
            self._write(record)
            return record

    def _unlink(self, user: str) -> None:
        path = self.path_for(user)
        try:
            path.unlink()
        except FileNotFoundError as e:
            raise UnknownUserError(f"no templates for user {user!r} in {self.directory}") from e
        fsync_dir(self.directory)

    def remove(self, user: str) -> None:
        """Delete the record of ``user``. Raises UnknownUserError if there is none."""
        with self._lock():
            self._unlink(user)

    def rename(self, old: str, new: str) -> TemplateRecord:
        """Move the templates of ``old`` to ``new`` (re-encrypted: the name is bound into them).

        The new record is written before the old one is removed, so a crash in between leaves
        both names enrolled rather than neither.

        Raises:
            UnknownUserError: ``old`` is not enrolled.
            UserExistsError: ``new`` already is.
        """
        validate_user(new)
        with self._lock():
            record = self.load(old)
            if self.exists(new):
                raise UserExistsError(f"cannot rename {old!r} to {new!r}: {new!r} is already enrolled")
            renamed = dataclasses.replace(record, user=new, updated=time.time())
            self._write(renamed)
            self._unlink(old)
        return renamed
