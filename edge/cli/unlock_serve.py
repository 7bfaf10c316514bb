"""``edge unlock serve``: keep the face models loaded and answer the PAM helper on a Unix socket.

Socket-activated by systemd (``packaging/systemd/edge-unlock.socket``) or bound at ``--socket``.
Only root, this service's user and the ``--allow-user`` / ``--allow-group`` peers may ask
(checked with SO_PEERCRED). SIGTERM/SIGINT stop it; a socket it bound itself is removed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from edge.cli.argtypes import integer, number

log = logging.getLogger(__name__)


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"expected octal permission bits such as 0660, got {text!r}")
    return mode


def add_serve_parser(usub, parents, guarded) -> None:
    from edge.unlock.client import DEFAULT_SOCKET, SOCKET_ENV

    s = usub.add_parser("serve", parents=parents, help="warm service for the PAM helper (Unix socket)",
                        description=__doc__.split("\n\n")[0])
    s.add_argument("--socket", metavar="PATH", help=f"socket to bind when systemd passes none "
                                                    f"({SOCKET_ENV}; default {DEFAULT_SOCKET})")
    s.add_argument("--socket-mode", type=_mode, default=0o660, metavar="OCTAL",
                   help="permissions of a socket bound here (default 0660)")
    s.add_argument("--source", help="camera opened for each request (EDGE_UNLOCK_SOURCE; default 0)")
    s.add_argument("--client-source", action="store_true",
                   help="let clients name the source (tests, benchmarks; not for production)")
    s.add_argument("--allow-user", action="append", default=[], metavar="USER|UID",
                   help="also answer this user (repeatable); root and the service's user always may")
    s.add_argument("--allow-group", action="append", default=[], metavar="GROUP|GID",
                   help="also answer members of this primary group (repeatable)")
    s.add_argument("--read-timeout", type=number(0, 60, low_open=True), default=2.0,
                   help="seconds a client has to send its request (default 2)")
    s.add_argument("--max-waiting", type=integer(0, 64), default=4,
                   help="clients that may wait while one is verified; more are told busy (default 4)")
    s.set_defaults(func=guarded(cmd_serve))


def cmd_serve(args) -> int:
    from edge.cli.unlock_cmd import _app, _models_or_help, _models_used, _source
    from edge.unlock.client import DEFAULT_SOCKET, SOCKET_ENV
    from edge.unlock.service import ServiceOptions, UnlockService, bind_socket, resolve_ids, systemd_socket

    logging.getLogger("edge.unlock").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    options = ServiceOptions(source=_source(args), client_source=args.client_source,
                             allowed_uids=resolve_ids(args.allow_user, "user"),
                             allowed_gids=resolve_ids(args.allow_group, "group"),
                             read_timeout=args.read_timeout, max_waiting=args.max_waiting)
    app = _app(args, with_models=True)
    service = UnlockService(app, options)
    listener = systemd_socket()
    bound = None
    if listener is None:
        bound = args.socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
        listener = bind_socket(bound, mode=args.socket_mode)
    try:
        load_ms = _models_or_help(service.load, app.options)
        where = bound or f"the socket systemd passed ({listener.getsockname()})"
        print(f"edge unlock serve: listening on {where}; models loaded in {load_ms:.0f} ms; "
              f"{_models_used(app)}", file=sys.stderr, flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stop())
        service.serve(listener)
    finally:
        listener.close()
        if bound is not None:
            try:
                os.unlink(bound)
            except FileNotFoundError:
                pass
        app.close()
    return 0
