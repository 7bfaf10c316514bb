"""Ed25519 signing keys for bundles (workstation side; the device only needs the public key).

The private key is PKCS#8 PEM, unencrypted, written with mode 0600 into a new file (an existing
key is never overwritten); the public key is SubjectPublicKeyInfo PEM. ``edge bundle verify
--key`` reads the latter.

Example:
    >>> priv, pub = generate_keypair("keys/")                       # doctest: +SKIP
    >>> sig = sign_manifest(load_private_key(priv), manifest_bytes)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.bundle import canonical_json, key_fingerprint, signature_document

__all__ = ["PRIVATE_KEY_NAME", "PUBLIC_KEY_NAME", "SigningKeyError", "generate_keypair", "load_private_key", "sign_manifest",
           "fingerprint"]

PRIVATE_KEY_NAME = "bundle_signing.key"
PUBLIC_KEY_NAME = "bundle_signing.pub"
PRIVATE_MODE = 0o600


class SigningKeyError(ValueError):
    """A signing key file is missing, unreadable, not Ed25519, or would overwrite an existing key."""


def generate_keypair(out_dir: str | Path, *, force: bool = False) -> tuple[Path, Path]:
    """Create a new Ed25519 key pair in ``out_dir``.

    Args:
        out_dir: directory (created if needed, mode 0700 when new).
        force: replace existing key files (the old private key is lost).

    Returns:
        ``(private_key_path, public_key_path)``.

    Raises:
        SigningKeyError: a key file exists and ``force`` is false.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(out_dir)
    if not d.exists():
        d.mkdir(parents=True, mode=0o700)
    priv_p, pub_p = d / PRIVATE_KEY_NAME, d / PUBLIC_KEY_NAME
    existing = [str(p) for p in (priv_p, pub_p) if p.exists()]
    if existing and not force:
        raise SigningKeyError(f"refusing to overwrite existing key file(s) {', '.join(existing)} (use --force to replace "
                        f"them; bundles signed with the old key will no longer verify with the new public key)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for path, data, mode in ((priv_p, pem, PRIVATE_MODE), (pub_p, pub, 0o644)):
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    return priv_p, pub_p


def load_private_key(path: str | Path):
    """Read an Ed25519 private key (PKCS#8 PEM).

    Raises:
        SigningKeyError: missing, unreadable or not an Ed25519 private key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise SigningKeyError(f"cannot read private key {p}: {e}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{p}: not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{p}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def sign_manifest(private_key, manifest_bytes: bytes) -> bytes:
    """The bytes of ``manifest.sig`` for ``manifest_bytes`` (see :mod:`edge.bundle`)."""
    signature = private_key.sign(manifest_bytes)
    return canonical_json(signature_document(signature, private_key.public_key(), manifest_bytes))


def fingerprint(private_key) -> str:
    """The key id written into manifest.sig (of the matching public key)."""
    return key_fingerprint(private_key.public_key())
