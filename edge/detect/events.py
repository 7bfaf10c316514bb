"""Events: what the detection pipeline reports about tracked objects.

An :class:`Event` is one thing that happened to one track: it entered or left a zone, dwelled
in a zone longer than the zone's limit, or crossed a counting line. Every event has a unique id
(``uuid4``), so a consumer of an at-least-once channel (MQTT QoS 1, a retried webhook) can drop
the duplicates it may receive.

The JSON form uses ``event_type`` for the type because that is the key Home Assistant's MQTT
``event`` entity reads. An event carries no image unless the pipeline was configured to attach
one (``image_jpeg_b64``, a base64 JPEG crop of the box).

Example:
    >>> e = Event(EventType.ENTERED, class_name="person", class_id=0, track_id=3, zone="door",
    ...           score=0.9, box=(1, 2, 3, 4), time=0.0, frame_time=0.0, frame_index=7)
    >>> Event.from_json(e.to_json()) == e
    True
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

__all__ = ["Event", "EventType", "Direction", "new_event_id"]


class EventType(str, Enum):
    """The kinds of event; the value is what goes on the wire."""

    ENTERED = "entered"
    LEFT = "left"
    DWELL = "dwell"
    LINE_CROSSED = "line_crossed"


class Direction(str, Enum):
    """Direction of a line crossing, relative to the line drawn from its point A to point B.

    ``IN`` means the object moved onto the right-hand side of A→B as seen on the screen (image
    y grows downwards), ``OUT`` the opposite. For a line drawn left to right, IN is downwards.
    """

    IN = "in"
    OUT = "out"


def new_event_id() -> str:
    """A fresh event id: 32 hex digits of a random (version 4) UUID."""
    return uuid.uuid4().hex


#: Decimal places kept for box coordinates and scores on the wire.
JSON_DECIMALS = 2
SCORE_DECIMALS = 4


@dataclass(frozen=True)
class Event:
    """One event about one tracked object.

    Attributes:
        event_type: see :class:`EventType`.
        class_name: label of the object's class (``"person"``).
        class_id: index of that class in the detector's labels.
        track_id: the tracker's id for the object.
        zone: name of the zone or line the event is about.
        score: detector confidence of the box that triggered the event.
        box: ``(x1, y1, x2, y2)`` in source-frame pixels.
        time: wall-clock time of the event, seconds since the Unix epoch.
        frame_time: timestamp of the frame (the source's clock: monotonic or video position).
        frame_index: index of the frame in its source.
        source: the source id (path, device, URL).
        device: name of the device that produced the event.
        direction: for ``line_crossed``, ``"in"`` or ``"out"``; else None.
        dwell_s: for ``dwell`` and ``left``, seconds the track spent in the zone; else None.
        counts: for ``line_crossed``, the line's running totals ``{direction: {class: n}}``.
        image_jpeg_b64: base64 JPEG of the box, only when the pipeline is configured to add it.
        event_id: unique id (see :func:`new_event_id`).
    """

    event_type: EventType
    class_name: str
    class_id: int
    track_id: int
    zone: str
    score: float
    box: tuple[float, float, float, float]
    time: float
    frame_time: float
    frame_index: int
    source: str = ""
    device: str = ""
    direction: Direction | None = None
    dwell_s: float | None = None
    counts: dict[str, dict[str, int]] | None = field(default=None, compare=False)
    image_jpeg_b64: str | None = field(default=None, repr=False)
    event_id: str = field(default_factory=new_event_id)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_type", EventType(self.event_type))
        if self.direction is not None:
            object.__setattr__(self, "direction", Direction(self.direction))
        box = tuple(float(v) for v in self.box)
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"Event.box must be 4 finite numbers (x1, y1, x2, y2), got {self.box!r}")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "class_id", int(self.class_id))
        object.__setattr__(self, "track_id", int(self.track_id))
        object.__setattr__(self, "score", float(self.score))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (enums as strings, rounded numbers, no ``None`` optional fields)."""
        d = asdict(self)
        d["event_type"] = self.event_type.value
        d["direction"] = self.direction.value if self.direction is not None else None
        d["box"] = [round(v, JSON_DECIMALS) for v in self.box]
        d["score"] = round(self.score, SCORE_DECIMALS)
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> str:
        """One line of JSON, keys in field order."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field is missing or unknown, naming it.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown event field(s) {unknown}; expected some of {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"malformed event {data!r}: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "Event":
        return cls.from_dict(json.loads(text))
