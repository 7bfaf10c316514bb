"""The detection service running beside the web server, in a background thread of the same process.

One process keeps one copy of the models and frames in memory (a Pi 4 has 1-8 GB) and lets the page
show exactly the frames and boxes the sinks see. Inference runs in the service's own threads with
the GIL released, so the web server's asyncio loop stays responsive.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["DetectionRunner", "PacedSource", "UploadDetector", "bind"]

log = logging.getLogger(__name__)


class PacedSource:
    """Deliver a source's frames no faster than ``fps`` (replaying files or folders like a camera)."""

    def __init__(self, source, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"--fps must be positive, got {fps}")
        self._source, self._period, self._next = source, 1.0 / fps, 0.0
        self.source_id = getattr(source, "source_id", "paced")

    def read(self):
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(now, self._next) + self._period
        return self._source.read()

    def __enter__(self) -> "PacedSource":
        self._source.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._source.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._source, name)


class DetectionRunner:
    """Run :meth:`DetectionService.run` in a thread; stop it cleanly with :meth:`stop`."""

    def __init__(self, service) -> None:
        self.service = service
        self.summary = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="detection", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.service.run()
            log.info("detection ended: %d frames", self.summary.frames_processed)
        except BaseException as e:  # noqa: BLE001 - reported by stop() and /api/metrics
            self.error = e
            log.error("detection stopped: %s", e)

    def start(self) -> "DetectionRunner":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def metrics(self) -> dict:
        m = self.service.metrics()
        m["running"] = self.running
        if self.error is not None:
            m["error"] = str(self.error)
        return m

    def stop(self, timeout: float = 30.0) -> None:
        self.service.request_stop()
        self._thread.join(timeout)


class UploadDetector:
    """Detections for uploaded images on an engine of their own, made on first use.

    The service's detector is busy in its stage threads, and not every runtime's interpreter may be
    called from two threads (LiteRT's may not), so uploads get a second, single-threaded detector,
    used by one request at a time.
    """

    def __init__(self, factory) -> None:
        self._factory = factory
        self._detector = None
        self._lock = threading.Lock()

    def __call__(self, image):
        with self._lock:
            if self._detector is None:
                self._detector = self._factory()
            return self._detector.detect(image), self._detector.labels

    def close(self) -> None:
        with self._lock:
            if self._detector is not None:
                self._detector.close()
                self._detector = None


def bind(host: str, port: int):
    """A listening socket on ``host:port``, bound before any model is loaded so a taken port fails fast.

    Raises:
        ServiceError: naming the address (in use, not an address of this machine, not allowed).
    """
    import socket

    from edge.errors import ServiceError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port} (--listen): {e.strerror or e}") from None
    sock.listen(128)
    return sock
