"""``http(s)://URL``: POST every event as JSON to a webhook, buffered on disk, retried with backoff.

Events are appended to a :class:`~edge.detect.sinks.buffer.DiskBuffer` and a background thread
POSTs them one at a time, oldest first, removing each once the server answers 2xx. Network
errors, timeouts, 408, 429 and 5xx answers are retried with exponential backoff, so events wait
(in order) while the server is away. Any other 4xx answer means the server will never accept
that event: it is logged, counted in ``rejected`` and skipped, so one bad event cannot block the
queue. Delivery is at least once; receivers drop duplicates by ``event_id``.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge.detect.sinks.base import Backoff, EventBatch, Sink
from edge.detect.sinks.buffer import DEFAULT_BUFFER_LIMIT, DiskBuffer

__all__ = ["HttpSink"]

log = logging.getLogger(__name__)

#: Seconds one POST may take.
DEFAULT_REQUEST_TIMEOUT = 5.0
#: 4xx answers that are worth retrying (Request Timeout, Too Many Requests).
RETRYABLE_4XX = frozenset({408, 429})
#: Seconds the sender sleeps between looks at an empty buffer (it is also woken on emit).
IDLE_POLL = 0.5
#: Seconds between looks at the buffer while flushing.
FLUSH_POLL = 0.02


class HttpSink(Sink):
    """POST events to ``url``.

    Args:
        url: ``http://`` or ``https://`` endpoint.
        buffer_path: the SQLite file of the disk buffer.
        buffer_limit: events kept while the server is away (oldest dropped beyond it).
        timeout: seconds per request.
        backoff: retry delays (default 0.2 s doubling to 5 s).
        headers: extra request headers (e.g. ``{"Authorization": "Bearer …"}``).
    """

    kind = "http"

    def __init__(self, url: str, *, buffer_path: str | Path, buffer_limit: int = DEFAULT_BUFFER_LIMIT,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT, backoff: Backoff | None = None,
                 headers: dict[str, str] | None = None) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must start with http:// or https://, got {url!r}")
        super().__init__(url)
        self.url = url
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.buffer = DiskBuffer(buffer_path, limit=buffer_limit)
        self._backoff = backoff or Backoff()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while the sender has nothing to do
        self.delivered = self.rejected = self.failures = 0
        self.state = "idle"
        self._thread = threading.Thread(target=self._run, name="http-sink", daemon=True)
        self._thread.start()

    def emit(self, batch: EventBatch) -> None:
        if batch.events:
            self._idle.clear()
            self.buffer.append(e.to_json() for e in batch.events)
            self._wake.set()

    def _post(self, payload: bytes) -> int:
        req = urllib.request.Request(self.url, data=payload, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def _run(self) -> None:
        while True:
            rows = self.buffer.peek(1)
            if not rows:
                self._idle.set()
                self.state = "idle"
                if self._stop.is_set():
                    return
                self._wake.wait(IDLE_POLL)
                self._wake.clear()
                continue
            seq, payload = rows[0]
            try:
                status = self._post(payload)
            except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
                status, error = None, exc
            if status is not None and 200 <= status < 300:
                self.buffer.remove([seq])
                self.delivered += 1
                self.state = "ok"
                self._backoff.reset()
            elif status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
                log.warning("webhook %s rejected event (HTTP %d); skipping it: %.200s", self.url, status, payload)
                self.buffer.remove([seq])
                self.rejected += 1
            else:
                self.failures += 1
                self.state = "retrying"
                log.info("webhook %s: %s; retrying in %.1f s", self.url,
                         f"HTTP {status}" if status is not None else error, self._backoff.delay)
                if self._backoff.wait(self._stop):
                    return

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.buffer) and self._thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._wake.set()
            self._idle.wait(FLUSH_POLL)
        return not len(self.buffer)

    def close(self, timeout: float | None = 5.0) -> None:
        if self._stop.is_set():
            return
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.buffer.close()

    def stats(self) -> dict:
        return {"state": self.state, "buffered": len(self.buffer), "dropped": self.buffer.dropped,
                "delivered": self.delivered, "rejected": self.rejected, "failures": self.failures}
