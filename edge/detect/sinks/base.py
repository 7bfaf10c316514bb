"""What every sink shares: the :class:`EventBatch` it receives and the :class:`Sink` interface."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from edge.detect.events import Event
from edge.types import Detections, Frame

__all__ = ["EventBatch", "Sink", "Backoff"]


@dataclass(frozen=True)
class EventBatch:
    """The outcome of one frame, handed to every sink.

    Attributes:
        frame: the frame the events come from (sinks must not modify its image).
        detections: the tracked detections of that frame.
        events: events raised by the frame (possibly none).
        labels: class names indexed by class id.
    """

    frame: Frame
    detections: Detections
    events: tuple[Event, ...]
    labels: tuple[str, ...] = ()


class Sink:
    """Base class of event sinks. Sinks are used from one thread (the service's sink thread).

    Subclasses implement :meth:`emit` and usually :meth:`close` and :meth:`stats`. A sink that
    delivers in the background (MQTT, HTTP) keeps events on disk until delivered; :meth:`close`
    then tries to deliver what it holds for up to ``timeout`` seconds and keeps the rest on disk
    for the next start.
    """

    #: Short kind name used in metrics (``"jsonl"``, ``"mqtt"`` …).
    kind = "sink"

    def __init__(self, name: str) -> None:
        self.name = name

    def emit(self, batch: EventBatch) -> None:
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted so far is delivered (or ``timeout`` passes).

        Returns:
            True when nothing is left to deliver.
        """
        return True

    def close(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, then release resources."""

    def stats(self) -> dict:
        """Counters for ``/metrics`` (``state``, ``buffered``, ``dropped`` … as relevant)."""
        return {}

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Backoff:
    """Exponential retry delay, interruptible by an event.

    Args:
        initial: first delay, seconds.
        maximum: cap on the delay, seconds.
        factor: growth per failure.
    """

    def __init__(self, initial: float = 0.2, maximum: float = 5.0, factor: float = 2.0) -> None:
        if not 0 < initial <= maximum or factor < 1:
            raise ValueError(f"need 0 < initial <= maximum and factor >= 1, got {initial}, {maximum}, {factor}")
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.delay = initial

    def reset(self) -> None:
        self.delay = self.initial

    def wait(self, stop: threading.Event) -> bool:
        """Sleep for the current delay (or until ``stop`` is set), then grow the delay.

        Returns:
            True if ``stop`` was set.
        """
        stopped = stop.wait(self.delay)
        self.delay = min(self.delay * self.factor, self.maximum)
        return stopped
