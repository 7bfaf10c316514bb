"""``edge unlock serve``: the face pipeline kept loaded, answering verifications on a Unix socket.

A PAM attempt through :mod:`edge.unlock.client` costs a Python start and one round trip instead
of loading the models again. Each request goes through :meth:`edge.unlock.app.UnlockApp.verify`
(guards, lockout reservation, templates read fresh from the store, audit), with the camera opened
for that request only and closed after it.

- **Listening**: the socket systemd passes (socket activation: ``LISTEN_PID`` is this process and
  ``LISTEN_FDS`` ≥ 1, the socket is fd 3, see ``sd_listen_fds(3)``), else a socket bound at a path
  (mode 0660 by default; a stale socket file nobody answers on is replaced).
- **Who may ask**: the peer credentials of each connection (``SO_PEERCRED``) must name root, this
  service's user, or a configured uid or gid (the PAM helper's); others get ``refused``, which is
  logged and audited.
- **Reading**: one JSON line per request (:mod:`edge.unlock.client` describes the protocol), with
  a deadline: a client that sends nothing, or garbage, is answered or dropped within
  ``read_timeout`` and never holds the service.
- **Concurrency**: verifications run one at a time (one pipeline, one camera); up to
  ``max_waiting`` further clients wait their turn, more are answered ``busy`` (they fall back).
- The SSH guard looks at the client: its forwarded ``PAM_RHOST``/``SSH_*`` variables and the
  ancestors of its pid.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import LockedOutError, UnknownUserError, UnlockRefused
from edge.unlock.client import (
    EXIT_ACCEPT, EXIT_ERROR, EXIT_LOCKED, EXIT_REJECT, FORWARDED_ENV, PROTOCOL_VERSION, read_line, send_line,
)
from edge.unlock.verify import VerifyPolicy

__all__ = ["ServiceOptions", "UnlockService", "systemd_socket", "bind_socket", "peer_credentials",
           "resolve_ids", "SD_LISTEN_FDS_START"]

log = logging.getLogger(__name__)

#: First file descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: Longest verification a client may ask for, in seconds.
MAX_TIMEOUT_S = 60.0


def systemd_socket(env: dict[str, str] | None = None) -> socket.socket | None:
    """The listening socket systemd passed, or None when this process was not socket-activated.

    Follows sd_listen_fds(3): the variables count only when ``LISTEN_PID`` is this process; they
    are removed from the environment so that children do not take the socket for theirs.

    Raises:
        ValueError: the passed descriptor is not a listening AF_UNIX stream socket.
    """
    env = os.environ if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    finally:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(var, None)
    if count < 1:
        return None
    if count > 1:
        log.warning("systemd passed %d sockets; using the first (fd %d)", count, SD_LISTEN_FDS_START)
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    os.set_inheritable(sock.fileno(), False)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or \
            not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError(f"fd {SD_LISTEN_FDS_START} from systemd is not a listening Unix stream socket "
                         f"(edge-unlock.socket needs ListenStream=/path)")
    return sock


def bind_socket(path: str | Path, *, mode: int = 0o660, group: int | None = None) -> socket.socket:
    """Listen at ``path``; a stale socket there (nobody answering) is replaced.

    Raises:
        OSError: something else is at ``path``, or another service answers on it.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise FileExistsError(f"{p} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(p))
        except OSError:
            p.unlink()  # a socket left by a service that died
        else:
            raise OSError(f"another service already answers on {p}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)  # never a moment with wider permissions than asked
    try:
        sock.bind(str(p))
    finally:
        os.umask(old)
    os.chmod(p, mode)
    if group is not None:
        os.chown(p, -1, group)
    sock.listen(16)
    return sock


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    return _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


@dataclass(frozen=True)
class ServiceOptions:
    """How the service answers.

    Attributes:
        source: the camera (or file) opened for each request.
        client_source: let clients name another source (tests, benchmarks); off by default,
            when the source a client names is ignored.
        allowed_uids, allowed_gids: peers allowed besides root and the service's own user.
        read_timeout: seconds a client has to send its request line.
        max_waiting: clients that may wait while one is verified; more are told ``busy``.
    """

    source: str = "0"
    client_source: bool = False
    allowed_uids: frozenset[int] = frozenset()
    allowed_gids: frozenset[int] = frozenset()
    read_timeout: float = 2.0
    max_waiting: int = 4


class UnlockService:
    """Answers verification requests with one loaded :class:`~edge.unlock.app.UnlockApp`.

    Args:
        app: the app; its pipeline is loaded by :meth:`load` before the first request.
        options: see :class:`ServiceOptions`.
    """

    def __init__(self, app, options: ServiceOptions = ServiceOptions()) -> None:
        self.app = app
        self.options = options
        self._verify_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(options.max_waiting + 1)
        self._stop = threading.Event()
        self.load_ms = 0.0

    def load(self) -> float:
        """Load the models now (not at the first request); returns milliseconds taken."""
        t0 = time.perf_counter()
        self.app.pipeline()
        self.load_ms = (time.perf_counter() - t0) * 1e3
        return self.load_ms

    def stop(self) -> None:
        self._stop.set()

    def allowed(self, uid: int, gid: int) -> bool:
        return uid in (0, os.geteuid()) or uid in self.options.allowed_uids or gid in self.options.allowed_gids

    def serve(self, listener: socket.socket) -> None:
        """Accept clients until :meth:`stop`; each is handled in its own thread."""
        listener.settimeout(0.25)
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, InterruptedError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    # -- one client --------------------------------------------------------------------------
    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                pid, uid, gid = peer_credentials(conn)
            except OSError as e:
                log.warning("no peer credentials (%s): connection dropped", e)
                return
            try:
                self._answer(conn, pid, uid, gid)
            except OSError as e:  # the client went away: its problem, not the service's
                log.info("client pid %d uid %d: connection lost (%s)", pid, uid, e)

    def _answer(self, conn: socket.socket, pid: int, uid: int, gid: int) -> None:
        if not self.allowed(uid, gid):
            log.warning("refused a client: pid %d uid %d gid %d is not allowed (root, uid %d, uids %s, gids %s)",
                        pid, uid, gid, os.geteuid(), sorted(self.options.allowed_uids),
                        sorted(self.options.allowed_gids))
            self._audit_quietly("refused", f"peer uid {uid} gid {gid} not allowed", pid, uid)
            send_line(conn, {"status": "refused", "message": f"uid {uid} may not ask this service"})
            return
        if not self._slots.acquire(blocking=False):
            send_line(conn, {"status": "busy", "message": "too many requests waiting"})
            return
        try:
            try:
                request = read_line(conn, time.monotonic() + self.options.read_timeout, bytearray())
                verify_args = self._parse(request)
            except TimeoutError:
                log.info("client pid %d uid %d sent no request within %.1f s", pid, uid, self.options.read_timeout)
                return
            except ValueError as e:
                send_line(conn, {"status": "error", "exit": 2, "message": f"bad request: {e}"})
                return
            if verify_args is None:
                send_line(conn, {"status": "pong", "v": PROTOCOL_VERSION, "load_ms": round(self.load_ms, 1)})
                return
            send_line(conn, {"status": "working"})
            with self._verify_lock:
                answer = self._verify(*verify_args, pid=pid, uid=uid)
            send_line(conn, answer)
        finally:
            self._slots.release()

    def _parse(self, request: dict) -> tuple | None:
        """(user, source, policy, env) of a verify request, None for a ping; ValueError otherwise."""
        if request.get("v") != PROTOCOL_VERSION:
            raise ValueError(f"protocol version {request.get('v')!r}, expected {PROTOCOL_VERSION}")
        op = request.get("op")
        if op == "ping":
            return None
        if op != "verify":
            raise ValueError(f"unknown op {op!r}")
        user = request.get("user")
        if user is not None and not isinstance(user, str):
            raise ValueError("user must be a string or null")
        timeout = _number(request, "timeout", 4.0, 0.0, MAX_TIMEOUT_S)
        defaults = self.app.policy().verify_policy()  # the profile's k of n
        k = int(_number(request, "frames_needed", defaults.k, 1, 100))
        n = int(_number(request, "window", defaults.n, 1, 100))
        source = request.get("source")
        if source is not None and not isinstance(source, str):
            raise ValueError("source must be a string or null")
        if not self.options.client_source:
            source = None  # the service's own camera: a client names one only with --client-source
        env = request.get("env") or {}
        if not isinstance(env, dict):
            raise ValueError("env must be an object")
        env = {k: str(v) for k, v in env.items() if k in FORWARDED_ENV}
        return user, source or self.options.source, VerifyPolicy(k, n, timeout), env

    def _verify(self, user, source, policy, env, *, pid: int, uid: int) -> dict:
        try:
            outcome = self.app.verify(user, source, policy, env=env, pid=pid,
                                      audit_extra={"via": "service", "peer_pid": pid, "peer_uid": uid})
        except LockedOutError as e:
            return {"status": "done", "exit": EXIT_LOCKED, "accepted": False, "reason": "locked_out", "message": str(e)}
        except (UnlockRefused, UnknownUserError) as e:
            return {"status": "done", "exit": EXIT_REJECT, "accepted": False, "reason": "refused", "message": str(e)}
        except Exception as e:  # noqa: BLE001 - any failure of one request is that request's error
            log.warning("verification failed: %s: %s", type(e).__name__, e)
            return {"status": "done", "exit": EXIT_ERROR, "accepted": False, "reason": "error",
                    "message": f"{type(e).__name__}: {e}"[:500]}
        d = outcome.decision
        return {"status": "done", "exit": EXIT_ACCEPT if d.accepted else EXIT_REJECT, "accepted": d.accepted,
                "user": d.user, "reason": d.reason, "frames": len(d.frames), "elapsed_ms": round(d.elapsed_ms, 1),
                "locked": bool(outcome.lock is not None and outcome.lock.locked)}

    def _audit_quietly(self, decision: str, reason: str, pid: int, uid: int) -> None:
        try:
            self.app.audit("serve", "", decision, reason, extra={"peer_pid": pid, "peer_uid": uid})
        except (OSError, TypeError) as e:
            log.warning("cannot write the audit log: %s", e)


def _number(request: dict, key: str, default: float, low: float, high: float) -> float:
    value = request.get(key)
    if value is None:
        return default
    if type(value) not in (int, float) or not (low < value <= high if key == "timeout" else low <= value <= high):
        raise ValueError(f"{key} must be a number in {'(' if key == 'timeout' else '['}{low}, {high}], got {value!r}")
    return float(value)


def resolve_ids(values: Iterable[str], kind: str) -> frozenset[int]:
    """Numeric uids/gids from numbers or names (``kind`` is ``user`` or ``group``).

    Raises:
        ValueError: naming an unknown user or group.
    """
    import grp
    import pwd

    out = set()
    for v in values:
        if v.isdigit():
            out.add(int(v))
            continue
        try:
            out.add(pwd.getpwnam(v).pw_uid if kind == "user" else grp.getgrnam(v).gr_gid)
        except KeyError:
            raise ValueError(f"unknown {kind} {v!r}") from None
    return frozenset(out)
