"""Bearer tokens for the device web service: made at install time, stored hashed, compared in constant time.

There is no default password. At install time ``edge serve --init-token`` draws a random token
(256 bits, URL-safe base64), prints it once for the user to keep, and writes **only its SHA-256
hash** to the token-hash file (``/etc/edgesight/web_token.sha256``, mode 0600). A token can also be
handed to ``edge serve`` directly, in a file (``--token-file``, which must not be readable by
group or others) or in ``EDGE_WEB_TOKEN``; it is hashed on reading and only the hash is kept in
memory. A plain SHA-256 suffices because the tokens are long random strings, not passwords: there
is nothing to guess from a hash (GitHub stores its API tokens the same way); tokens given by the
user must be at least :data:`MIN_TOKEN_CHARS` characters.

API clients send ``Authorization: Bearer TOKEN``. The page, whose ``<img>`` (MJPEG) and
``EventSource`` (SSE) requests cannot carry that header, trades the token once for a session
cookie (``HttpOnly``, ``SameSite=Strict``), which is accepted on ``GET`` requests only: a request
that changes state always carries the bearer token, so a forged cross-site form cannot.

Example:
    >>> v = TokenVerifier([hash_token("correct horse battery staple")])
    >>> v.check("correct horse battery staple"), v.check("wrong")
    (True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from edge.errors import EdgeError

__all__ = ["WebAuthError", "TokenVerifier", "SessionStore", "hash_token", "new_token", "write_token_hash",
           "read_token_hashes", "load_verifier", "bearer_token", "DEFAULT_TOKEN_HASH_FILE", "ENV_TOKEN",
           "ENV_TOKEN_HASH_FILE", "MIN_TOKEN_CHARS", "SESSION_COOKIE"]

DEFAULT_TOKEN_HASH_FILE = Path("/etc/edgesight/web_token.sha256")
ENV_TOKEN = "EDGE_WEB_TOKEN"
ENV_TOKEN_HASH_FILE = "EDGE_WEB_TOKEN_HASH"
#: Shortest token accepted from ``--token-file`` / ``EDGE_WEB_TOKEN``.
MIN_TOKEN_CHARS = 16
#: Random bytes in a token made by :func:`new_token`.
TOKEN_BYTES = 32
HASH_PREFIX = "sha256:"
SESSION_COOKIE = "edge_session"
#: Seconds a page session lasts.
SESSION_TTL_S = 12 * 3600
#: Sessions kept at most (the oldest are dropped).
MAX_SESSIONS = 64


class WebAuthError(EdgeError, ValueError):
    """The web service's authentication is not set up, or a token file is unusable."""


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of the token's UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token_hash(path: str | Path, token_hash: str, *, force: bool = False) -> Path:
    """Write ``token_hash`` to ``path`` (mode 0600, atomically: temp file, fsync, rename).

    Raises:
        WebAuthError: the file exists and ``force`` is not set (the existing token keeps working).
    """
    path = Path(path)
    if path.exists() and not force:
        raise WebAuthError(f"a web token hash already exists at {path}; the current token keeps working. "
                           "Use --force to replace it (the old token then stops working)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token_hash + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_token_hashes(path: Path) -> list[str]:
    """The ``sha256:<hex>`` lines of a token-hash file (one token per line; ``#`` comments).

    Raises:
        WebAuthError: the file cannot be read or holds a line that is not such a hash.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WebAuthError(f"cannot read the web token hash file {path}: {getattr(e, 'strerror', None) or e}") from e
    hashes = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest = line[len(HASH_PREFIX):]
        if not line.startswith(HASH_PREFIX) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise WebAuthError(f"{path} line {n}: expected 'sha256:' followed by 64 lower-case hex digits "
                               "(written by `edge serve --init-token`)")
        hashes.append(line)
    if not hashes:
        raise WebAuthError(f"the web token hash file {path} holds no hash; run `edge serve --init-token`")
    return hashes


def _read_token_file(path: Path) -> str:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WebAuthError(f"cannot read --token-file {path}: {getattr(e, 'strerror', None) or e}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WebAuthError(f"--token-file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                           f"chmod 600 {path}")
    return text.strip()


def _check_given(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise WebAuthError(f"the token in {where} must be at least {MIN_TOKEN_CHARS} characters without spaces "
                           "(make one with `edge serve --init-token`)")
    return token


class TokenVerifier:
    """Checks presented tokens against stored hashes, in constant time per hash."""

    def __init__(self, hashes: Iterable[str]) -> None:
        self._hashes = [h.encode("ascii") for h in hashes]
        if not self._hashes:
            raise WebAuthError("no web token configured")

    def check(self, token: str | None) -> bool:
        if not token:
            return False
        presented = hash_token(token).encode("ascii")
        ok = False
        for h in self._hashes:  # every hash is compared: the time does not tell which one matched
            ok |= hmac.compare_digest(presented, h)
        return ok


def load_verifier(*, token_file: str | Path | None = None, hash_file: str | Path | None = None,
                  env: Mapping[str, str] | None = None) -> TokenVerifier:
    """The tokens ``edge serve`` accepts: ``--token-file``, ``EDGE_WEB_TOKEN`` and the hash file.

    The hash file is ``hash_file``, else ``$EDGE_WEB_TOKEN_HASH``, else
    ``/etc/edgesight/web_token.sha256`` when it exists.

    Raises:
        WebAuthError: no token is configured anywhere (the message says how to make one), or a
            configured one is unusable.
    """
    env = os.environ if env is None else env
    hashes: list[str] = []
    if token_file is not None:
        hashes.append(hash_token(_check_given(_read_token_file(Path(token_file)), f"--token-file {token_file}")))
    if env.get(ENV_TOKEN):
        hashes.append(hash_token(_check_given(env[ENV_TOKEN].strip(), ENV_TOKEN)))
    explicit = hash_file if hash_file is not None else env.get(ENV_TOKEN_HASH_FILE) or None
    path = Path(explicit) if explicit is not None else DEFAULT_TOKEN_HASH_FILE
    if explicit is not None or path.exists():
        if not path.exists():
            raise WebAuthError(f"web token hash file not found: {path} (run `edge serve --init-token "
                               f"--token-hash-file {path}`)")
        hashes.extend(read_token_hashes(path))
    if not hashes:
        raise WebAuthError(f"no web token is set up, and the web service has no default password. Run "
                           f"`edge serve --init-token` once (it prints a token and stores only its hash in "
                           f"{DEFAULT_TOKEN_HASH_FILE}), or give one with --token-file FILE or {ENV_TOKEN}")
    return TokenVerifier(hashes)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class SessionStore:
    """Page sessions: random ids handed out as cookies, kept hashed with an expiry."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, clock=time.monotonic) -> None:
        self.ttl_s, self._clock = ttl_s, clock
        self._sessions: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self) -> str:
        sid = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        with self._lock:
            self._sessions = {k: t for k, t in self._sessions.items() if t > now}
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(min(self._sessions, key=self._sessions.get))
            self._sessions[hash_token(sid)] = now + self.ttl_s
        return sid

    def check(self, sid: str | None) -> bool:
        if not sid:
            return False
        key = hash_token(sid)
        with self._lock:
            expiry = self._sessions.get(key)
            if expiry is None:
                return False
            if expiry <= self._clock():
                del self._sessions[key]
                return False
            return True

    def drop(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(hash_token(sid), None)
