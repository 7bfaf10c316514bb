"""What the page shows live: the latest frame with its detections, and the events as they happen.

:class:`LiveSink` is an ordinary detection sink (:class:`edge.detect.sinks.base.Sink`): the
detection service hands it every frame's :class:`~edge.detect.sinks.base.EventBatch` on its sink
thread. ``emit`` only keeps a reference to the newest batch and appends the batch's events to a
bounded history, so the pipeline pays next to nothing whether or not anybody watches.

The picture is made on demand, in the web server's worker threads: :meth:`FrameHub.jpeg` draws the
overlay on a frame shrunk to the stream width and encodes it once per new frame, however many
viewers there are (OpenCV releases the GIL while it resizes, draws and encodes).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import cv2

from edge.detect.sinks.base import EventBatch, Sink
from edge.detect.zones import ZoneConfig
from edge.web.overlay import render_overlay

__all__ = ["FrameHub", "EventHub", "LiveSink", "Subscription", "caption", "label_name"]

#: Events kept for ``GET /api/events`` and for SSE clients that reconnect.
EVENT_HISTORY = 500
#: Event snapshots (JPEG crops) kept in memory.
SNAPSHOTS_KEPT = 200
#: Events waiting for one slow SSE client before its oldest are dropped.
SUBSCRIBER_QUEUE = 256


def label_name(labels, class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def caption(labels, class_id: int, score: float, track_id: int | None) -> str:
    """``#7 person 0.91``: what is written above a box."""
    return f"{'' if track_id is None else f'#{track_id} '}{label_name(labels, class_id)} {score:.2f}"


class FrameHub:
    """The newest frame and its tracked detections; renders the live picture on demand.

    Args:
        zones: drawn on every picture.
        max_width: pictures are shrunk to at most this width (a Pi streams 640 px cheaply).
        quality: JPEG quality.
    """

    def __init__(self, zones: ZoneConfig | None = None, *, max_width: int = 640, quality: int = 70) -> None:
        self.zones, self.max_width, self.quality = zones, max_width, quality
        self._latest: EventBatch | None = None
        self._seq = 0
        self._cache: tuple[int, bytes] | None = None
        self._render_lock = threading.Lock()
        self.rendered = 0

    def update(self, batch: EventBatch) -> None:
        self._latest, self._seq = batch, self._seq + 1  # a reference swap: the sink thread never waits

    @property
    def seq(self) -> int:
        """Frames seen so far (a new value means a new picture is available)."""
        return self._seq

    @property
    def latest(self) -> EventBatch | None:
        return self._latest

    def detections(self) -> dict | None:
        """The newest frame's tracked detections as JSON-ready data (None before the first frame)."""
        batch = self._latest
        if batch is None:
            return None
        d = batch.detections
        ids = d.tracker_id.tolist() if d.tracker_id is not None else [None] * len(d)
        return {"frame_index": batch.frame.index, "width": batch.frame.width, "height": batch.frame.height,
                "detections": [{"box": [round(v, 1) for v in box], "label": label_name(batch.labels, c),
                                "class_id": c, "score": round(s, 4), "track_id": t}
                               for box, c, s, t in zip(d.xyxy.tolist(), d.class_id.tolist(), d.score.tolist(), ids)]}

    def jpeg(self) -> tuple[int, bytes] | None:
        """``(seq, JPEG bytes)`` of the newest frame with the overlay; encoded once per new frame."""
        with self._render_lock:
            seq, batch = self._seq, self._latest
            if batch is None:
                return None
            if self._cache is not None and self._cache[0] == seq:
                return self._cache
            d = batch.detections
            ids = d.tracker_id.tolist() if d.tracker_id is not None else [None] * len(d)
            captions = [caption(batch.labels, c, s, t) for c, s, t in zip(d.class_id.tolist(), d.score.tolist(), ids)]
            picture = render_overlay(batch.frame.image, d.xyxy, captions, self.zones, self.max_width)
            ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:  # pragma: no cover - encoding a valid uint8 image does not fail
                return None
            self._cache = (seq, data.tobytes())
            self.rendered += 1
            return self._cache


@dataclass
class Subscription:
    """One SSE client: a queue on its event loop and its filters."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    label: str | None = None
    zone: str | None = None
    dropped: int = 0

    def wants(self, event: dict) -> bool:
        return (self.label is None or event.get("class_name") == self.label) and \
               (self.zone is None or event.get("zone") == self.zone)

    def _put(self, item: dict) -> None:  # runs on the subscriber's loop
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class EventHub:
    """Recent events (bounded), their snapshots, and the SSE subscribers they are pushed to."""

    def __init__(self, history: int = EVENT_HISTORY) -> None:
        self._events: deque[dict] = deque(maxlen=history)
        self._snapshots: OrderedDict[str, bytes] = OrderedDict()
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.total = 0

    def publish(self, events) -> None:
        """Add events (:class:`edge.detect.events.Event`); called from the sink thread."""
        items = []
        for e in events:
            d = e.to_dict()
            crop = d.pop("image_jpeg_b64", None)
            d["seq"] = next(self._ids)
            d["snapshot"] = f"/api/events/{e.event_id}/snapshot.jpg" if crop else None
            items.append((d, crop))
        with self._lock:
            for d, crop in items:
                self._events.append(d)
                if crop:
                    self._snapshots[d["event_id"]] = base64.b64decode(crop)
                    while len(self._snapshots) > SNAPSHOTS_KEPT:
                        self._snapshots.popitem(last=False)
            self.total += len(items)
            subs = list(self._subs)
        for sub in subs:
            for d, _ in items:
                if sub.wants(d):
                    try:
                        sub.loop.call_soon_threadsafe(sub._put, d)
                    except RuntimeError:  # the client's loop is closed: it is going away
                        pass

    def recent(self, *, label: str | None = None, zone: str | None = None, after: int = 0,
               limit: int = 100) -> list[dict]:
        """Newest last; ``after`` skips events up to that sequence number."""
        with self._lock:
            found = [d for d in self._events if d["seq"] > after and (label is None or d.get("class_name") == label)
                     and (zone is None or d.get("zone") == zone)]
        return found[-limit:] if limit > 0 else []

    def snapshot(self, event_id: str) -> bytes | None:
        with self._lock:
            return self._snapshots.get(event_id)

    def subscribe(self, label: str | None = None, zone: str | None = None) -> Subscription:
        sub = Subscription(asyncio.get_running_loop(), asyncio.Queue(SUBSCRIBER_QUEUE), label, zone)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


class LiveSink(Sink):
    """The detection service's sink for the web page: newest frame to a :class:`FrameHub`, events to an
    :class:`EventHub`."""

    kind = "web"

    def __init__(self, frames: FrameHub, events: EventHub) -> None:
        super().__init__("web")
        self.frames, self.events = frames, events
        self.last_frame_time: float | None = None

    def emit(self, batch: EventBatch) -> None:
        self.frames.update(batch)
        self.last_frame_time = time.time()
        if batch.events:
            self.events.publish(batch.events)

    def stats(self) -> dict:
        return {"frames": self.frames.seq, "rendered": self.frames.rendered, "events": self.events.total,
                "subscribers": self.events.subscribers}
