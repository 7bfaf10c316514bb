"""Keep a live source going when the camera drops: reopen it in-process with back-off.

A USB camera that is unplugged, a network camera that reboots, an RTSP stream that stalls: the
inner source raises :class:`~edge.errors.CameraDisconnected` (or cannot be reopened yet,
:class:`~edge.errors.CameraUnavailable`). :class:`ReconnectingSource` closes it, waits (0.5 s,
doubling up to 30 s), builds a new one from the same factory and goes on, so the service that
reads it keeps its tracks, zone counts and event buffers. Frame indices continue; the first
frame after a gap carries ``metadata["gap"]`` (seconds, attempts, the error), and
:meth:`ReconnectingSource.stats` reports the state and every gap for ``/metrics``.

The first open is not retried: a wrong device name is a mistake to report, not a gap to wait out.

Example:
    >>> src = ReconnectingSource(lambda: open_source("rtsp://cam.local/stream"), "rtsp://cam.local/stream")
    >>> with src:                                                        # doctest: +SKIP
    ...     for frame in src: ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge.errors import CameraDisconnected, CameraUnavailable
from edge.sources.base import FrameSource, Grab

__all__ = ["ReconnectingSource", "BackOff"]

log = logging.getLogger(__name__)

#: How long a wait sleeps between looks at the stop flag.
_POLL_S = 0.1
#: Gaps kept in :meth:`ReconnectingSource.stats` (the count is kept in full).
_KEEP_GAPS = 20


class BackOff:
    """Exponential back-off delays: ``initial``, doubling, capped at ``maximum``."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        if not (0 < initial <= maximum):
            raise ValueError(f"back-off needs 0 < initial <= maximum, got {initial} and {maximum}")
        self.initial, self.maximum = initial, maximum
        self.next = initial

    def take(self) -> float:
        delay, self.next = self.next, min(self.next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.next = self.initial


class ReconnectingSource(FrameSource):
    """Wraps a live source; on a drop, reopens it from ``factory`` with back-off.

    Args:
        factory: builds a new, unopened inner source (called once at open, then once per attempt).
        source_id: the id frames carry (the inner source's spec).
        backoff: delays between attempts (default 0.5 s doubling to 30 s).
        give_up_after: seconds of continuous outage after which the last error is raised
            (None: keep trying until :meth:`interrupt` or close).
        max_frames: see :class:`FrameSource`.
        sleep: the wait function (tests pass a fake clock's).
    """

    def __init__(self, factory: Callable[[], FrameSource], source_id: str, *, backoff: BackOff | None = None,
                 give_up_after: float | None = None, max_frames: int | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(source_id, max_frames=max_frames)
        if give_up_after is not None and give_up_after <= 0:
            raise ValueError(f"give_up_after must be positive or None, got {give_up_after!r}")
        self._factory = factory
        self.backoff = backoff or BackOff()
        self.give_up_after = give_up_after
        self._sleep, self._clock = sleep, clock
        self._inner: FrameSource | None = None
        self._interrupted = False
        self._pending_gap: dict | None = None
        self.state = "closed"
        self.gaps: list[dict] = []
        self.gap_count = 0
        self.reconnects = 0

    def interrupt(self) -> None:
        """Stop waiting for the camera (async-signal-safe: it only sets a flag)."""
        self._interrupted = True

    def stats(self) -> dict:
        return {"state": self.state, "reconnects": self.reconnects, "gaps": self.gap_count,
                "recent_gaps": list(self.gaps)}

    # -- hooks -------------------------------------------------------------------------------
    def _open(self) -> None:
        self._inner = self._factory().open()
        self.state = "streaming"

    def _grab(self) -> Grab | None:
        while True:
            try:
                frame = self._inner.read() if self._inner is not None else None
            except (CameraDisconnected, CameraUnavailable) as exc:
                if self._index == 0 and not self.gap_count:
                    raise  # never delivered a frame: a wrong device or URL, not a drop
                self._reconnect(exc)
                continue
            if frame is None:
                return None
            metadata = dict(frame.metadata)
            if self._pending_gap is not None:
                metadata["gap"], self._pending_gap = self._pending_gap, None
            return frame.image, frame.timestamp, metadata

    def _release(self) -> None:
        if self.state != "failed":
            self.state = "closed"
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    # -- reconnection --------------------------------------------------------------------------
    def _reconnect(self, error: Exception) -> None:
        """Wait and reopen until a frame source opens; raise ``error`` on give-up or interrupt."""
        started = self._clock()
        self.state = "reconnecting"
        log.warning("%s dropped (%s); reconnecting with back-off", self.source_id, error)
        if self._inner is not None:
            self._inner.close()
            self._inner = None
        attempts, last = 0, error
        self.backoff.reset()
        while True:
            if self.give_up_after is not None and self._clock() - started >= self.give_up_after:
                self.state = "failed"
                raise CameraDisconnected(f"{self.source_id}: gave up after {self._clock() - started:.1f} s "
                                         f"and {attempts} reconnection attempt(s); last error: {last}") from last
            if not self._wait(self.backoff.take()):
                raise last
            attempts += 1
            try:
                self._inner = self._factory().open()
            except (CameraUnavailable, CameraDisconnected) as exc:
                last = exc
                log.info("%s: reconnection attempt %d failed: %s", self.source_id, attempts, exc)
                continue
            break
        gap = {"seconds": round(self._clock() - started, 3), "attempts": attempts, "error": str(error),
               "after_frame": self._index}
        self._pending_gap = gap
        self.gaps = (self.gaps + [gap])[-_KEEP_GAPS:]
        self.gap_count += 1
        self.reconnects += 1
        self.state = "streaming"
        log.warning("%s back after a %.1f s gap (%d attempt(s))", self.source_id, gap["seconds"], attempts)

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` in short steps; False as soon as :meth:`interrupt` was called."""
        end = self._clock() + seconds
        while not self._interrupted:
            left = end - self._clock()
            if left <= 0:
                return True
            self._sleep(min(_POLL_S, left))
        return False
