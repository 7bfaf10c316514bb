"""A tiny HTTP endpoint with ``/health`` and ``/metrics`` (JSON), served from a daemon thread.

It binds to 127.0.0.1 by default: it is meant for a local supervisor or a scraper on the device,
not for the network.

Example:
    >>> server = HealthServer(lambda: {"status": "ok"}, lambda: {"fps": 0.0}, port=0)
    >>> port = server.start().port
    >>> import urllib.request, json
    >>> json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health"))
    {'status': 'ok'}
    >>> server.stop()
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["HealthServer", "HEALTHY_STATES"]

log = logging.getLogger(__name__)

#: ``/health`` answers 200 in these states and 503 otherwise.
HEALTHY_STATES = frozenset({"ok", "starting"})


class HealthServer:
    """Serve ``/health`` and ``/metrics`` as JSON.

    Args:
        health: returns a dict with at least ``status`` (200 when in :data:`HEALTHY_STATES`).
        metrics: returns the metrics dict.
        host: address to bind (default loopback only).
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).

    Raises:
        OSError: the port is taken (from :meth:`start`).
    """

    def __init__(self, health: Callable[[], dict], metrics: Callable[[], dict], *,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes = {"/health": health, "/metrics": metrics}
        self.host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self._port

    def start(self) -> "HealthServer":
        routes = self._routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                route = routes.get(self.path.split("?", 1)[0].rstrip("/") or "/")
                if route is None:
                    self._send(404, {"error": f"no such path {self.path}; try /health or /metrics"})
                    return
                try:
                    body = route()
                except Exception as exc:  # noqa: BLE001 - report, never kill the server
                    log.exception("health endpoint %s failed", self.path)
                    self._send(500, {"error": str(exc)})
                    return
                code = 200 if self.path.startswith("/metrics") or body.get("status") in HEALTHY_STATES else 503
                self._send(code, body)

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args) -> None:
                log.debug("health endpoint: " + fmt, *args)

        self._server = ThreadingHTTPServer((self.host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
