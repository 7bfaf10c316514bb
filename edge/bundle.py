"""Signed bundles on the device: verify before use, then find each role's model and card.

A bundle is a directory (or a ``.tar.gz`` of one) written by ``edge-export build``::

    rpi4/
      manifest.json     every other file's sha256 and size, the roles, the profile (signed)
      manifest.sig      Ed25519 signature over the exact bytes of manifest.json
      report.md, report.json
      classifier/<model>.tflite, <model>.json (card), labels …
      detector/ face_detector/ face_embedder/ liveness/

:func:`verify_bundle` refuses a bundle whose signature does not verify with the given public key,
and any file that is missing, extra, or whose size or sha256 differs, naming the file. Only the
``cryptography`` package is needed (the ``crypto`` extra).

``manifest.sig`` is canonical JSON (one accepted byte sequence per content) holding the
signature in lowercase hex, the signing key's fingerprint and the manifest's sha256. The
sha256 only serves to name the altered file (manifest.json or manifest.sig) in the error; the
decision rests on the signature over manifest.json's bytes alone.

Example:
    >>> info = verify_bundle("bundle/rpi4", "keys/bundle_signing.pub")       # doctest: +SKIP
    >>> bundle = load_bundle("bundle/rpi4")                                  # doctest: +SKIP
    >>> bundle.model("detector").model_path                                  # doctest: +SKIP
    PosixPath('bundle/rpi4/detector/yolox_nano_416_fp32.tflite')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edge.archive import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS, extract_archive
from edge.cards import ModelCard, load_card
from edge.digest import sha256_file
from edge.errors import BundleError, BundleIntegrityError, BundleKeyError, BundleSignatureError

__all__ = ["MANIFEST", "SIGNATURE", "BUNDLE_FORMAT", "BUNDLE_SCHEMA", "ROLES", "BundleInfo", "BundleModel", "Bundle",
           "verify_bundle", "load_bundle", "load_public_key", "key_fingerprint", "canonical_json",
           "signature_document", "extract_archive", "MAX_ARCHIVE_BYTES", "MAX_ARCHIVE_MEMBERS"]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
BUNDLE_FORMAT = "edgesight-bundle"
BUNDLE_SCHEMA = 1
SIGNATURE_ALGORITHM = "ed25519"
#: The roles a bundle may carry, in report order.
ROLES = ("classifier", "detector", "face_detector", "face_embedder", "liveness")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")


def canonical_json(obj) -> bytes:
    """The one byte form used for manifest.json and manifest.sig (sorted keys, 2-space indent)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def key_fingerprint(public_key) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signature_document(signature: bytes, public_key, manifest_bytes: bytes) -> dict:
    """The content of manifest.sig for a signature over ``manifest_bytes``."""
    return {"algorithm": SIGNATURE_ALGORITHM, "key_id": key_fingerprint(public_key),
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(), "signature": signature.hex()}


def load_public_key(key):
    """An Ed25519 public key from a PEM file/bytes, a raw 32-byte file, or a key object.

    Raises:
        ImportError: ``cryptography`` is not installed (names the extra).
        BundleKeyError: the file is unreadable or not an Ed25519 public key.
    """
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as e:  # pragma: no cover - the crypto extra is a dev dependency
        raise ImportError("verifying bundles needs cryptography: pip install 'edgesight[crypto]'") from e
    if isinstance(key, Ed25519PublicKey):
        return key
    origin = str(key) if isinstance(key, (str, Path)) else "public key bytes"
    if isinstance(key, (str, Path)):
        try:
            data = Path(key).read_bytes()
        except OSError as e:
            raise BundleKeyError(f"cannot read public key {key}: {e}") from e
    else:
        data = bytes(key)
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        loaded = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise BundleKeyError(f"{origin}: not an Ed25519 public key (PEM or 32 raw bytes expected): {e}") from e
    if not isinstance(loaded, Ed25519PublicKey):
        raise BundleKeyError(f"{origin}: expected an Ed25519 public key, got {type(loaded).__name__}")
    return loaded


@dataclass(frozen=True)
class BundleInfo:
    """What a verified bundle holds (from its signed manifest)."""

    path: Path
    profile: str
    created: str
    key_id: str
    files: int
    total_bytes: int
    roles: tuple[str, ...]
    manifest: dict = field(repr=False, compare=False, default_factory=dict)


def _read(root: Path, name: str, error: type[BundleError]) -> bytes:
    p = root / name
    if not p.is_file() or p.is_symlink():
        raise error(f"{root}: {name} is missing", file=name)
    return p.read_bytes()


def _parse_signature(raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleSignatureError(f"{SIGNATURE} is not valid JSON (altered?): {e}", file=SIGNATURE) from e
    keys = {"algorithm", "key_id", "manifest_sha256", "signature"}
    if not isinstance(doc, dict) or set(doc) != keys:
        raise BundleSignatureError(f"{SIGNATURE} must hold exactly the fields {sorted(keys)} (altered?)", file=SIGNATURE)
    if canonical_json(doc) != raw:
        raise BundleSignatureError(f"{SIGNATURE} is not in canonical form (altered?)", file=SIGNATURE)
    if doc["algorithm"] != SIGNATURE_ALGORITHM:
        raise BundleSignatureError(f"{SIGNATURE}: algorithm must be {SIGNATURE_ALGORITHM!r}, got {doc['algorithm']!r}",
                                   file=SIGNATURE)
    if not (isinstance(doc["signature"], str) and _HEX128.fullmatch(doc["signature"])
            and isinstance(doc["manifest_sha256"], str) and _HEX64.fullmatch(doc["manifest_sha256"])
            and isinstance(doc["key_id"], str) and re.fullmatch(r"[0-9a-f]{16}", doc["key_id"])):
        raise BundleSignatureError(f"{SIGNATURE}: malformed signature, key_id or manifest_sha256 (altered?)",
                                   file=SIGNATURE)
    return doc


def _check_signature(root: Path, public_key) -> tuple[bytes, str]:
    from cryptography.exceptions import InvalidSignature

    manifest_raw = _read(root, MANIFEST, BundleIntegrityError)
    doc = _parse_signature(_read(root, SIGNATURE, BundleSignatureError))
    kid = key_fingerprint(public_key)
    if doc["key_id"] != kid:
        raise BundleSignatureError(f"{SIGNATURE} was made with key {doc['key_id']}, not with the given public key "
                                   f"{kid} (wrong key, or {SIGNATURE} altered)", file=SIGNATURE)
    try:
        public_key.verify(bytes.fromhex(doc["signature"]), manifest_raw)
    except InvalidSignature:
        # Name the file most likely altered: the recorded digest tells whether the manifest changed.
        if hashlib.sha256(manifest_raw).hexdigest() != doc["manifest_sha256"]:
            raise BundleSignatureError(f"{MANIFEST} was altered: its signature in {SIGNATURE} does not verify "
                                       f"with key {kid}", file=MANIFEST) from None
        raise BundleSignatureError(f"{SIGNATURE}: the signature does not verify over {MANIFEST} with key {kid} "
                                   f"({SIGNATURE} altered)", file=SIGNATURE) from None
    if hashlib.sha256(manifest_raw).hexdigest() != doc["manifest_sha256"]:
        raise BundleSignatureError(f"{SIGNATURE}: manifest_sha256 does not match {MANIFEST} ({SIGNATURE} altered)",
                                   file=SIGNATURE)
    return manifest_raw, kid


def _parse_manifest(raw: bytes) -> dict:
    try:
        m = json.loads(raw)
    except json.JSONDecodeError as e:  # signed but unparsable: a builder bug, not tampering
        raise BundleIntegrityError(f"{MANIFEST} is not valid JSON: {e}", file=MANIFEST) from e
    if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT or not isinstance(m.get("files"), dict):
        raise BundleIntegrityError(f"{MANIFEST}: not an {BUNDLE_FORMAT} manifest (format/files missing)", file=MANIFEST)
    if m.get("schema") != BUNDLE_SCHEMA:
        raise BundleIntegrityError(f"{MANIFEST}: unsupported bundle schema {m.get('schema')!r} "
                                   f"(this edge reads {BUNDLE_SCHEMA})", file=MANIFEST)
    return m


def _walk(root: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            found.add(rel)
    return found - {MANIFEST, SIGNATURE}


def _check_files(root: Path, manifest: dict) -> None:
    files: dict = manifest["files"]
    present = _walk(root)
    extra = sorted(present - set(files))
    if extra:
        raise BundleIntegrityError(f"{root}: file(s) not in the signed manifest: {', '.join(extra)}", file=extra[0])
    for rel in sorted(files):
        entry = files[rel]
        p = root / rel
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise BundleIntegrityError(f"{MANIFEST}: unsafe path {rel!r}", file=rel)
        if not p.exists():
            raise BundleIntegrityError(f"{root}: {rel} is missing", file=rel)
        if p.is_symlink() or not p.is_file():
            raise BundleIntegrityError(f"{root}: {rel} is not a regular file", file=rel)
        size = p.stat().st_size
        if size != entry.get("size"):
            raise BundleIntegrityError(f"{root}: {rel} has {size} bytes, the manifest says {entry.get('size')}", file=rel)
        if sha256_file(p) != entry.get("sha256"):
            raise BundleIntegrityError(f"{root}: {rel} sha256 differs from the manifest (file altered)", file=rel)


def _verify_dir(root: Path, public_key, shown: Path) -> BundleInfo:
    raw, kid = _check_signature(root, public_key)
    manifest = _parse_manifest(raw)
    _check_files(root, manifest)
    files = manifest["files"]
    return BundleInfo(path=shown, profile=str(manifest.get("profile", "")), created=str(manifest.get("created", "")),
                      key_id=kid, files=len(files), total_bytes=sum(int(e["size"]) for e in files.values()),
                      roles=tuple(manifest.get("roles", {})), manifest=manifest)


def verify_bundle(bundle: str | Path, public_key) -> BundleInfo:
    """Verify a bundle directory or archive against a public key.

    Args:
        bundle: the bundle directory, or a ``.tar.gz`` / ``.tgz`` / ``.tar`` of it.
        public_key: PEM file path, raw key bytes, or an ``Ed25519PublicKey``.

    Returns:
        :class:`BundleInfo` from the verified manifest.

    Raises:
        BundleSignatureError: the signature is missing, malformed, made with another key, or does
            not verify (``.file`` names manifest.json or manifest.sig).
        BundleIntegrityError: a file is missing, extra, or differs from the manifest (``.file``).
        BundleKeyError: the public key cannot be read.
        FileNotFoundError: ``bundle`` does not exist.
    """
    p = Path(bundle)
    key = load_public_key(public_key)
    if p.is_dir():
        return _verify_dir(p, key, p)
    if not p.exists():
        raise FileNotFoundError(f"bundle not found: {p}")
    with tempfile.TemporaryDirectory(prefix="edgesight-bundle-") as tmp:
        root = extract_archive(p, Path(tmp))
        return _verify_dir(root, key, p)


@dataclass(frozen=True)
class BundleModel:
    """One model of a role: its card, model file and (optional) labels file, as absolute paths."""

    role: str
    card: ModelCard
    card_path: Path
    model_path: Path
    labels_path: Path | None = None


@dataclass(frozen=True)
class Bundle:
    """A bundle directory's roles (read from the manifest; call :func:`verify_bundle` first)."""

    path: Path
    profile: str
    roles: dict  # role -> tuple[BundleModel, ...]
    manifest: dict = field(repr=False, default_factory=dict)

    def models(self, role: str) -> tuple[BundleModel, ...]:
        """Every model of ``role`` (liveness has two). Raises ``KeyError`` naming the roles present."""
        if role not in self.roles:
            raise KeyError(f"bundle {self.path} has no {role!r} role (it has: {', '.join(self.roles) or 'none'})")
        return self.roles[role]

    def model(self, role: str) -> BundleModel:
        """The first (usually only) model of ``role``."""
        return self.models(role)[0]


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle directory's manifest and cards (no signature check: see :func:`verify_bundle`).

    Raises:
        BundleIntegrityError: no manifest, a malformed one, or a role entry naming a missing file.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleIntegrityError(f"bundle directory not found: {root}")
    manifest = _parse_manifest(_read(root, MANIFEST, BundleIntegrityError))
    roles: dict[str, tuple[BundleModel, ...]] = {}
    for role, entries in manifest.get("roles", {}).items():
        models = []
        for e in entries:
            for key in ("card", "model"):
                if key not in e or not (root / e[key]).is_file():
                    raise BundleIntegrityError(f"{root}: role {role!r} refers to a missing {key} file "
                                               f"{e.get(key)!r}", file=e.get(key))
            labels = root / e["labels"] if e.get("labels") else None
            models.append(BundleModel(role, load_card(root / e["card"]), root / e["card"], root / e["model"], labels))
        roles[role] = tuple(models)
    return Bundle(root, str(manifest.get("profile", "")), roles, manifest)
