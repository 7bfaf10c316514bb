"""Zones (polygons) and counting lines, read from a TOML or JSON file, and the events they raise.

A configuration file holds ``zones`` and ``lines`` lists (TOML: ``[[zones]]`` / ``[[lines]]``
tables)::

    [[zones]]
    name = "driveway"                    # required, unique
    polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]
    units = "relative"                   # "px" (default) or "relative" (fractions of width/height)
    classes = ["car", "person"]          # optional: only these classes
    dwell_s = 10.0                       # optional: a "dwell" event after this long inside
    anchor = "bottom_center"             # point of the box tested: bottom_center | center | top_center

    [[lines]]
    name = "gate"
    points = [[100, 300], [500, 300]]    # A then B; crossing onto the right of A→B is "in"
    classes = ["person"]

A track is inside a zone when its anchor point is; it *enters* when first seen inside (or moves
in) and *leaves* when seen outside or when the tracker ends it. With no file, one zone covering
the whole frame reports every track appearing and ending. A line crossing is counted, and an
event raised, at most once per direction per track, so an object hovering on the line is counted
once.

Example:
    >>> cfg = ZoneConfig.from_dict({"lines": [{"name": "gate", "points": [[0, 5], [10, 5]]}]})
    >>> [line.name for line in cfg.lines]
    ['gate']
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect.events import Direction, Event, EventType
from edge.errors import ZoneConfigError
from edge.types import Detections

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["PolygonZone", "CountingLine", "ZoneConfig", "ZoneMonitor", "load_zones", "points_in_polygon",
           "ANCHORS", "UNITS", "WHOLE_FRAME"]

ANCHORS = ("bottom_center", "center", "top_center")
UNITS = ("px", "relative")
#: Name of the implicit zone used when no configuration is given.
WHOLE_FRAME = "frame"


@dataclass(frozen=True)
class PolygonZone:
    """A named polygon; ``polygon=None`` covers the whole frame."""

    name: str
    polygon: tuple[tuple[float, float], ...] | None = None
    units: str = "px"
    classes: frozenset[str] | None = None
    dwell_s: float | None = None
    anchor: str = "bottom_center"


@dataclass(frozen=True)
class CountingLine:
    """A named segment from ``a`` to ``b``; see :class:`~edge.detect.events.Direction`."""

    name: str
    a: tuple[float, float]
    b: tuple[float, float]
    units: str = "px"
    classes: frozenset[str] | None = None
    anchor: str = "bottom_center"


def _fail(origin: str, where: str, msg: str) -> ZoneConfigError:
    return ZoneConfigError(f"{origin}: {where}: {msg}")


def _points(value: Any, origin: str, where: str, min_n: int, max_n: int | None = None) -> tuple:
    try:
        pts = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pts = None
    n_ok = pts is not None and pts.ndim == 2 and pts.shape[1] == 2 and pts.shape[0] >= min_n
    if not n_ok or (max_n is not None and pts.shape[0] > max_n) or not np.isfinite(pts).all():
        want = f"{min_n}" if max_n == min_n else f"at least {min_n}"
        raise _fail(origin, where, f"expected a list of {want} [x, y] number pairs, got {value!r}")
    return tuple((float(x), float(y)) for x, y in pts)


def _common(entry: dict, origin: str, where: str, allowed: set[str]) -> dict:
    if not isinstance(entry, dict):
        raise _fail(origin, where, f"expected a table/object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise _fail(origin, where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(origin, where, f"field 'name' must be a non-empty string, got {name!r}")
    where = f"{where} ({name!r})"
    units = entry.get("units", "px")
    if units not in UNITS:
        raise _fail(origin, where, f"field 'units' must be one of {list(UNITS)}, got {units!r}")
    anchor = entry.get("anchor", "bottom_center")
    if anchor not in ANCHORS:
        raise _fail(origin, where, f"field 'anchor' must be one of {list(ANCHORS)}, got {anchor!r}")
    classes = entry.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise _fail(origin, where, f"field 'classes' must be a list of class names, got {classes!r}")
        classes = frozenset(classes)
    return {"name": name, "units": units, "anchor": anchor, "classes": classes, "_where": where}


@dataclass(frozen=True)
class ZoneConfig:
    """The zones and lines of one configuration file."""

    zones: tuple[PolygonZone, ...] = ()
    lines: tuple[CountingLine, ...] = ()

    @classmethod
    def whole_frame(cls) -> "ZoneConfig":
        """One zone covering the whole frame: every track enters when it appears and leaves when it ends."""
        return cls(zones=(PolygonZone(WHOLE_FRAME),))

    @classmethod
    def from_dict(cls, data: dict, *, origin: str = "zones") -> "ZoneConfig":
        """Validate a parsed file.

        Raises:
            ZoneConfigError: naming ``origin``, the entry and the field that is wrong.
        """
        if not isinstance(data, dict):
            raise ZoneConfigError(f"{origin}: expected a table with 'zones' and/or 'lines', got {type(data).__name__}")
        unknown = sorted(set(data) - {"zones", "lines"})
        if unknown:
            raise ZoneConfigError(f"{origin}: unknown top-level key(s) {unknown}; allowed: ['lines', 'zones']")
        zones, lines = [], []
        for i, entry in enumerate(_as_list(data.get("zones", []), origin, "zones")):
            c = _common(entry, origin, f"zones[{i}]", {f.name for f in fields(PolygonZone)})
            where = c.pop("_where")
            dwell = entry.get("dwell_s")
            if dwell is not None and (isinstance(dwell, bool) or not isinstance(dwell, (int, float)) or dwell < 0):
                raise _fail(origin, where, f"field 'dwell_s' must be a non-negative number of seconds, got {dwell!r}")
            if "polygon" not in entry:
                raise _fail(origin, where, "missing field 'polygon'")
            zones.append(PolygonZone(polygon=_points(entry["polygon"], origin, f"{where} field 'polygon'", 3),
                                     dwell_s=None if dwell is None else float(dwell), **c))
        for i, entry in enumerate(_as_list(data.get("lines", []), origin, "lines")):
            c = _common(entry, origin, f"lines[{i}]", {"name", "points", "units", "classes", "anchor"})
            where = c.pop("_where")
            if "points" not in entry:
                raise _fail(origin, where, "missing field 'points'")
            a, b = _points(entry["points"], origin, f"{where} field 'points'", 2, 2)
            if a == b:
                raise _fail(origin, where, f"field 'points': A and B are the same point {a}")
            lines.append(CountingLine(a=a, b=b, **c))
        names = [z.name for z in zones] + [ln.name for ln in lines]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ZoneConfigError(f"{origin}: duplicate zone/line name(s) {dupes}")
        if not names:
            raise ZoneConfigError(f"{origin}: no zones or lines defined")
        return cls(tuple(zones), tuple(lines))


def _as_list(value: Any, origin: str, key: str) -> list:
    if not isinstance(value, list):
        raise ZoneConfigError(f"{origin}: '{key}' must be a list of tables, got {type(value).__name__}")
    return value


def load_zones(path: str | Path) -> ZoneConfig:
    """Read a zones file (``.toml`` or ``.json``).

    Raises:
        ZoneConfigError: unreadable, unparsable or invalid file (the message names it).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ZoneConfigError(f"cannot read zones file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ZoneConfigError(f"{path}: zones file must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ZoneConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    return ZoneConfig.from_dict(data, origin=str(path))


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of ``N×2`` points lie inside a ``K×2`` polygon (boolean ``N``)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, np.float64)
    x, y = pts[:, :1], pts[:, 1:]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    spans = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / np.where(y2 != y1, y2 - y1, 1.0)
    return (spans & (x < x_cross)).sum(axis=1) % 2 == 1


def _anchors(xyxy: np.ndarray, anchor: str) -> np.ndarray:
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = {"bottom_center": xyxy[:, 3], "top_center": xyxy[:, 1], "center": (xyxy[:, 1] + xyxy[:, 3]) / 2}[anchor]
    return np.stack([cx, y], axis=1)


def _cross(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


@dataclass
class _Visit:
    since: float
    dwell_reported: bool = False


class ZoneMonitor:
    """Turns tracked detections, frame after frame, into zone and line events.

    Args:
        config: zones and lines (default: :meth:`ZoneConfig.whole_frame`).
        labels: class names indexed by class id.
        device: device name written into every event.

    Example:
        >>> mon = ZoneMonitor(ZoneConfig.whole_frame(), ["person"])
        >>> d = Detections(np.array([[0, 0, 5, 5]]), np.array([0.9]), np.array([0]), np.array([1]))
        >>> [e.event_type.value for e in mon.update(d, frame_size=(10, 10), frame_time=0.0, frame_index=0)]
        ['entered']
    """

    def __init__(self, config: ZoneConfig | None = None, labels: Sequence[str] = (), *, device: str = "") -> None:
        self.config = config or ZoneConfig.whole_frame()
        self.labels = list(labels)
        self.device = device
        self._visits: dict[str, dict[int, _Visit]] = {z.name: {} for z in self.config.zones}
        self._sides: dict[str, dict[int, tuple[float, np.ndarray]]] = {ln.name: {} for ln in self.config.lines}
        self._crossed: dict[str, dict[int, set[Direction]]] = {ln.name: {} for ln in self.config.lines}
        self._counts: dict[str, dict[str, dict[str, int]]] = {
            ln.name: {d.value: {} for d in Direction} for ln in self.config.lines}
        self._last: dict[int, tuple[np.ndarray, float, int]] = {}  # track -> (box, score, class_id)

    def class_name(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(int(class_id))

    @property
    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per line, per direction, per class name: crossings so far (a deep copy)."""
        return {k: {d: dict(c) for d, c in v.items()} for k, v in self._counts.items()}

    @staticmethod
    def _scale(points: Sequence[tuple[float, float]], units: str, size: tuple[int, int]) -> np.ndarray:
        pts = np.asarray(points, np.float64)
        return pts * np.asarray(size, np.float64) if units == "relative" else pts

    def update(self, tracked: Detections, *, frame_size: tuple[int, int], frame_time: float,
               frame_index: int, ended_ids: Sequence[int] = (), source: str = "") -> list[Event]:
        """Events raised by one frame.

        Args:
            tracked: detections with ``tracker_id`` (from :meth:`ByteTracker.update`).
            frame_size: ``(width, height)`` of the frame, for ``relative`` units.
            frame_time: frame timestamp in seconds (dwell times are measured on this clock).
            frame_index: index of the frame.
            ended_ids: tracks the tracker ended this frame (they leave every zone).
            source: source id written into the events.

        Raises:
            ValueError: ``tracked`` has no ``tracker_id``.
        """
        if tracked.tracker_id is None:
            raise ValueError("ZoneMonitor.update needs tracked detections (tracker_id is None)")
        events: list[Event] = []
        ids = tracked.tracker_id.tolist()
        classes = tracked.class_id.tolist()
        names = [self.class_name(c) for c in classes]

        def make(kind: EventType, zone: str, tid: int, box, score: float, cls: int, **extra) -> Event:
            return Event(kind, class_name=self.class_name(cls), class_id=cls, track_id=tid, zone=zone,
                         score=score, box=tuple(box), time=time.time(), frame_time=frame_time,
                         frame_index=frame_index, source=source, device=self.device, **extra)

        def row(i: int) -> tuple:
            return ids[i], tracked.xyxy[i], float(tracked.score[i]), classes[i]

        for zone in self.config.zones:
            visits = self._visits[zone.name]
            if zone.polygon is None:
                inside = np.ones(len(tracked), bool)
            else:
                inside = points_in_polygon(_anchors(tracked.xyxy, zone.anchor),
                                           self._scale(zone.polygon, zone.units, frame_size))
            for i, tid in enumerate(ids):
                if zone.classes is not None and names[i] not in zone.classes:
                    continue
                visit = visits.get(tid)
                if inside[i] and visit is None:
                    visits[tid] = _Visit(frame_time)
                    events.append(make(EventType.ENTERED, zone.name, *row(i)))
                elif inside[i] and zone.dwell_s is not None and not visit.dwell_reported \
                        and frame_time - visit.since > zone.dwell_s:
                    visit.dwell_reported = True
                    events.append(make(EventType.DWELL, zone.name, *row(i), dwell_s=frame_time - visit.since))
                elif not inside[i] and visit is not None:
                    del visits[tid]
                    events.append(make(EventType.LEFT, zone.name, *row(i), dwell_s=frame_time - visit.since))

        for line in self.config.lines:
            events.extend(self._line_events(line, tracked, names, frame_size, make, row))

        for i, tid in enumerate(ids):
            self._last[tid] = (np.array(tracked.xyxy[i]), float(tracked.score[i]), classes[i])
        for tid in ended_ids:
            last = self._last.pop(tid, None)
            for zone in self.config.zones:
                visit = self._visits[zone.name].pop(tid, None)
                if visit is not None and last is not None:
                    events.append(make(EventType.LEFT, zone.name, tid, *last, dwell_s=frame_time - visit.since))
            for line in self.config.lines:
                self._sides[line.name].pop(tid, None)
                self._crossed[line.name].pop(tid, None)
        return events

    def _line_events(self, line: CountingLine, tracked: Detections, names: list[str],
                     frame_size: tuple[int, int], make, row) -> list[Event]:
        a, b = self._scale((line.a, line.b), line.units, frame_size)
        ab = b - a
        sides, crossed, counts = self._sides[line.name], self._crossed[line.name], self._counts[line.name]
        out = []
        for i, p in enumerate(_anchors(tracked.xyxy, line.anchor)):
            tid = row(i)[0]
            if line.classes is not None and names[i] not in line.classes:
                continue
            side = np.sign(_cross(ab, p - a))
            if side == 0:
                continue  # on the line: keep comparing with the last side it was clearly on
            prev = sides.get(tid)
            sides[tid] = (side, p)
            if prev is None or prev[0] == side:
                continue
            p0 = prev[1]
            move = p - p0
            # The path p0→p must cross the segment itself, not the line's extension.
            if _cross(move, a - p0) * _cross(move, b - p0) > 0:
                continue
            direction = Direction.IN if side > 0 else Direction.OUT
            done = crossed.setdefault(tid, set())
            if direction in done:
                continue
            done.add(direction)
            per_class = counts[direction.value]
            per_class[names[i]] = per_class.get(names[i], 0) + 1
            out.append(make(EventType.LINE_CROSSED, line.name, *row(i), direction=direction,
                            counts={d: dict(c) for d, c in counts.items()}))
        return out
