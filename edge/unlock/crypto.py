"""The three primitives the unlock store uses, from ``cryptography`` (the ``crypto`` extra).

- AES-256-GCM (:func:`seal` / :func:`open_sealed`): 96-bit random nonces, 128-bit tags. A
  record is written a handful of times in a device's life, far below the 2**32 messages per key
  NIST SP 800-38D allows with random nonces.
- HKDF-SHA256 (:func:`subkey`): separate keys for encryption and for file names derived from the
  one master key, so the key that hides user names never encrypts anything.
- scrypt (:func:`passphrase_key`): the key of an exported store, from a passphrase.

``cryptography`` is imported when first needed, so ``import edge`` works without it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from edge.errors import TemplateIntegrityError

__all__ = ["NONCE_BYTES", "seal", "open_sealed", "subkey", "name_digest", "passphrase_key",
           "SCRYPT_N", "SCRYPT_R", "SCRYPT_P"]

#: AES-GCM nonce length (the 96 bits GCM is designed for).
NONCE_BYTES = 12
#: scrypt cost for export passphrases: N=2**15, r=8 uses 32 MiB and ~0.1 s on a desktop core
#: (about 1 s on a Raspberry Pi 4), the interactive-login setting of the scrypt paper's table.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAX_N = 2**20


def _aesgcm(key: bytes):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("face unlock needs the 'cryptography' package: "
                          "pip install 'edgesight[crypto]'") from e
    return AESGCM(key)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate; returns ``nonce || ciphertext || tag``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _aesgcm(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    """Decrypt what :func:`seal` produced.

    Raises:
        TemplateIntegrityError: naming ``what``, if the blob was modified, the associated data
            differs, or the key is wrong (GCM cannot tell these apart).
    """
    from cryptography.exceptions import InvalidTag

    if len(blob) < NONCE_BYTES + 16:
        raise TemplateIntegrityError(f"{what}: truncated ({len(blob)} bytes)")
    try:
        return _aesgcm(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag as e:
        raise TemplateIntegrityError(
            f"{what}: integrity check failed (the file was modified or the key is wrong)") from e


def subkey(master: bytes, purpose: bytes) -> bytes:
    """A 32-byte key for one ``purpose`` derived from ``master`` (HKDF-SHA256, RFC 5869)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


def name_digest(key: bytes, name: str) -> str:
    """Keyed digest of a user name (HMAC-SHA256, 128 bits in hex): a file name that hides it."""
    return hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def passphrase_key(passphrase: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R,
                   p: int = SCRYPT_P) -> bytes:
    """Derive a 32-byte key from a passphrase with scrypt.

    Raises:
        ValueError: the cost parameters are out of range (an export file asking for an absurd
            cost is refused rather than allowed to exhaust memory).
    """
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if not (2 <= n <= _SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError(f"scrypt parameters out of range: n={n} r={r} p={p}")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
