"""The client of ``edge unlock serve``: the PAM helper asks the warm service with it.

It imports nothing but the standard library (no numpy, no OpenCV, no model), so a PAM attempt
pays for a Python start and one round trip, not for loading models::

    python -I -m edge.unlock.client alice --socket /run/edgesight/unlock.sock --timeout 4

Exit status: 0 accepted, 1 rejected, 2 error, 3 locked out (as ``edge unlock verify``), and
:data:`EXIT_UNAVAILABLE` (75, ``EX_TEMPFAIL``) when the service cannot answer: no socket, nobody
listening, this peer refused, the service busy, or no acknowledgement within ``--ack-timeout``.
The PAM helper then decides in-process.

The protocol: one JSON object per line (UTF-8, at most :data:`MAX_LINE` bytes) each way, every
read with a deadline. The client sends ``{"v": 1, "op": "verify", "user": …, "timeout": …,
"frames_needed": …, "window": …, "source": …, "env": {…}}`` (``env`` carries only
:data:`FORWARDED_ENV`, for the SSH check); the service answers ``{"status": "working"}`` at once,
then ``{"status": "done", "exit": 0-3, "accepted": …, "reason": …, "message": …}``. Other
answers: ``{"status": "refused" | "busy" | "error", "message": …}``. ``{"op": "ping"}`` gets
``{"status": "pong", …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

__all__ = ["ask", "read_line", "send_line", "ServiceUnavailable", "PROTOCOL_VERSION", "DEFAULT_SOCKET",
           "SOCKET_ENV", "MAX_LINE", "EXIT_ACCEPT", "EXIT_REJECT", "EXIT_ERROR", "EXIT_LOCKED", "EXIT_RETRY",
           "EXIT_UNAVAILABLE", "FORWARDED_ENV", "main"]

PROTOCOL_VERSION = 1
#: Where the service listens unless ``--socket`` / ``EDGE_UNLOCK_SOCKET`` say otherwise.
DEFAULT_SOCKET = "/run/edgesight/unlock.sock"
SOCKET_ENV = "EDGE_UNLOCK_SOCKET"
#: Longest request or answer line, newline included.
MAX_LINE = 64 * 1024
#: Exit codes of a decision, the same as ``edge unlock verify``'s.
EXIT_ACCEPT, EXIT_REJECT, EXIT_ERROR, EXIT_LOCKED, EXIT_RETRY = 0, 1, 2, 3, 4
#: Exit status when the service cannot answer (sysexits.h EX_TEMPFAIL): decide in-process.
EXIT_UNAVAILABLE = 75
#: Environment variables sent with a request: what the SSH guard looks at.
FORWARDED_ENV = ("PAM_RHOST", "PAM_SERVICE", "PAM_TTY", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")
#: Seconds added to the verification timeout before the client stops waiting for a decision.
DECISION_GRACE_S = 5.0


class ServiceUnavailable(Exception):
    """The service did not answer usably (the caller falls back to deciding in-process)."""


def send_line(sock: socket.socket, message: dict) -> None:
    sock.sendall(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")


def read_line(sock: socket.socket, deadline: float, buffer: bytearray) -> dict:
    """Read one JSON line before ``deadline`` (``time.monotonic``); bytes after it stay in ``buffer``.

    Raises:
        TimeoutError: the deadline passed.
        ValueError: the peer closed first, the line is longer than MAX_LINE, or not a JSON object.
    """
    while b"\n" not in buffer:
        if len(buffer) >= MAX_LINE:
            raise ValueError(f"line longer than {MAX_LINE} bytes")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete line in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, MAX_LINE - len(buffer)))
        except socket.timeout as e:
            raise TimeoutError("no complete line in time") from e
        if not chunk:
            raise ValueError("connection closed before a complete line")
        buffer += chunk
    end = buffer.index(b"\n")
    line = bytes(buffer[:end])
    del buffer[:end + 1]
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a JSON line: {e}") from None
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def ask(path: str, request: dict, *, connect_timeout: float = 0.5, ack_timeout: float = 1.0,
        decision_timeout: float = 10.0) -> dict:
    """Send ``request`` to the service at ``path``; return its final answer.

    Raises:
        ServiceUnavailable: no socket or listener, no acknowledgement within ``ack_timeout``,
            refused, busy, or no decision within ``decision_timeout`` after the acknowledgement.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise ServiceUnavailable(f"cannot reach {path}: {e.strerror or e}") from e
        buffer = bytearray()
        try:
            send_line(sock, request)
        except OSError as e:  # the service may have answered (refused, busy) and closed already
            try:
                said = read_line(sock, time.monotonic() + connect_timeout, buffer)
            except (OSError, TimeoutError, ValueError):
                raise ServiceUnavailable(f"cannot reach {path}: {e.strerror or e}") from e
            raise ServiceUnavailable(f"service answered {said.get('status')!r}: {said.get('message', '')}") from e
        try:
            first = read_line(sock, time.monotonic() + ack_timeout, buffer)
            if first.get("status") != "working":
                if first.get("status") in ("done", "pong", "error"):
                    return first
                raise ServiceUnavailable(f"service answered {first.get('status')!r}: {first.get('message', '')}")
            return read_line(sock, time.monotonic() + decision_timeout, buffer)
        except (OSError, TimeoutError, ValueError) as e:
            raise ServiceUnavailable(f"no usable answer from {path}: {e}") from e
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-unlock-client", description=__doc__.splitlines()[0])
    p.add_argument("user", nargs="?", help="the claimed user (omit to identify among all)")
    p.add_argument("--socket", default=os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET,
                   help=f"the service's socket ({SOCKET_ENV}; default {DEFAULT_SOCKET})")
    p.add_argument("--source", default=os.environ.get("EDGE_UNLOCK_SOURCE") or None,
                   help="camera or image (EDGE_UNLOCK_SOURCE); the service must allow clients to choose")
    p.add_argument("--timeout", type=float, default=4.0, help="seconds the camera is watched (default 4)")
    p.add_argument("--frames-needed", type=int, default=None)
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--ack-timeout", type=float, default=1.0, help="seconds to wait for the service to take the request")
    p.add_argument("--ping", action="store_true", help="only check that the service answers")
    p.add_argument("--json", action="store_true", help="print the service's answer as JSON")
    # The rest of `edge unlock verify`'s options (models, state paths) are the service's to decide.
    args, _ = p.parse_known_args(argv)
    if not (0 < args.timeout <= 600) or not (0 < args.ack_timeout <= 60):
        print("edge-unlock-client: --timeout must be in (0, 600] and --ack-timeout in (0, 60]", file=sys.stderr)
        return EXIT_ERROR
    request = {"v": PROTOCOL_VERSION, "op": "ping"} if args.ping else {
        "v": PROTOCOL_VERSION, "op": "verify", "user": args.user, "timeout": args.timeout,
        "frames_needed": args.frames_needed, "window": args.window, "source": args.source,
        "env": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
    try:
        answer = ask(args.socket, request, ack_timeout=args.ack_timeout,
                     decision_timeout=args.timeout + DECISION_GRACE_S)
    except ServiceUnavailable as e:
        print(f"edge-unlock-client: service unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.json or args.ping:
        print(json.dumps(answer))
    if answer.get("message"):
        print(f"edge-unlock-client: {answer['message']}", file=sys.stderr)
    if args.ping:
        return EXIT_ACCEPT if answer.get("status") == "pong" else EXIT_ERROR
    code = answer.get("exit")
    ok = answer.get("status") == "done" and code in (EXIT_ACCEPT, EXIT_REJECT, EXIT_ERROR, EXIT_LOCKED, EXIT_RETRY)
    return code if ok else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
