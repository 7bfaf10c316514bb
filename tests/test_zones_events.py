"""Zones, lines, events, the disk buffer and the local sinks (JSONL, snapshots, HTTP webhook)."""

from __future__ import annotations

import json
import threading
from contextlib import nullcontext as does_not_raise
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from _mosquitto import free_port, wait_until
from edge.detect.events import Direction, Event, EventType
from edge.detect.sinks import Backoff, EventBatch, open_sink, parse_sink_spec
from edge.detect.sinks.buffer import DiskBuffer
from edge.detect.sinks.http import HttpSink
from edge.detect.sinks.jsonl import JsonlSink
from edge.detect.sinks.snapshots import BOX_COLOR, SnapshotSink
from edge.detect.zones import ZoneConfig, ZoneMonitor, load_zones, points_in_polygon
from edge.errors import SinkError, ZoneConfigError
from edge.types import Detections, Frame

LABELS = ["person", "bicycle", "car"]
FRAME_SIZE = (640, 480)


def tracked(rows) -> Detections:
    """rows: (track_id, cx, bottom_y, class_id); boxes 20 wide, 40 tall, score 0.9."""
    if not rows:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
    a = np.array(rows, np.float64)
    xyxy = np.stack([a[:, 1] - 10, a[:, 2] - 40, a[:, 1] + 10, a[:, 2]], 1)
    return Detections(xyxy, np.full(len(a), 0.9), a[:, 3].astype(int), a[:, 0].astype(int))


def run(monitor: ZoneMonitor, frames, ended=None, dt=1.0) -> list[Event]:
    events = []
    for i, rows in enumerate(frames):
        events += monitor.update(tracked(rows), frame_size=FRAME_SIZE, frame_time=i * dt, frame_index=i,
                                 ended_ids=(ended or {}).get(i, ()))
    return events


# -- lines ---------------------------------------------------------------------------------------
GATE = {"lines": [{"name": "gate", "points": [[100, 200], [500, 200]]}]}


@pytest.mark.parametrize("path_y, want_in, want_out", [
    ([150, 190, 210, 250], 1, 0),               # straight down across: in
    ([250, 210, 190, 150], 0, 1),               # straight up: out
    ([150, 210, 190, 210, 190, 230], 1, 1),     # jitters across the line: once per direction
    ([150, 200, 200, 250], 1, 0),               # stops exactly on the line, then goes on
    ([150, 190, 199, 195], 0, 0),               # approaches, never crosses
])
def test_line_crossing_counted_once_per_direction_per_track(path_y, want_in, want_out):
    mon = ZoneMonitor(ZoneConfig.from_dict(GATE), LABELS)
    events = run(mon, [[(7, 300, y, 0)] for y in path_y])
    crossings = [e for e in events if e.event_type is EventType.LINE_CROSSED]
    assert [e.direction for e in crossings].count(Direction.IN) == want_in
    assert [e.direction for e in crossings].count(Direction.OUT) == want_out
    assert mon.counts["gate"] == {"in": {"person": want_in} if want_in else {},
                                  "out": {"person": want_out} if want_out else {}}
    assert all(e.track_id == 7 and e.zone == "gate" and e.class_name == "person" for e in crossings)


def test_line_counts_per_class_and_track_and_ignores_the_lines_extension():
    mon = ZoneMonitor(ZoneConfig.from_dict(GATE), LABELS)
    frames = [[(1, 300, 150, 0), (2, 320, 150, 2), (3, 50, 150, 2)],     # track 3 is left of A (x < 100)
              [(1, 300, 250, 0), (2, 320, 250, 2), (3, 50, 250, 2)]]
    events = run(mon, frames)
    assert sorted(e.track_id for e in events) == [1, 2]
    assert mon.counts["gate"]["in"] == {"person": 1, "car": 1}
    last = events[-1]
    assert last.counts == {"in": {"person": 1, "car": 1}, "out": {}}


def test_line_class_filter():
    cfg = ZoneConfig.from_dict({"lines": [{"name": "g", "points": [[100, 200], [500, 200]], "classes": ["car"]}]})
    events = run(ZoneMonitor(cfg, LABELS), [[(1, 300, 150, 0), (2, 320, 150, 2)], [(1, 300, 250, 0), (2, 320, 250, 2)]])
    assert [(e.track_id, e.class_name) for e in events] == [(2, "car")]


# -- polygons ------------------------------------------------------------------------------------
DOOR = {"zones": [{"name": "door", "polygon": [[0, 0], [200, 0], [200, 200], [0, 200]], "dwell_s": 2.5}]}


def test_polygon_entered_dwell_left():
    mon = ZoneMonitor(ZoneConfig.from_dict(DOOR), LABELS)
    ys = [300, 150, 150, 150, 150, 150, 300, 150]  # bottom-centre anchor at x=100
    events = run(mon, [[(4, 100, y, 0)] for y in ys])
    assert [(e.event_type.value, e.frame_index) for e in events] == [
        ("entered", 1), ("dwell", 4), ("left", 6), ("entered", 7)]
    assert events[1].dwell_s == pytest.approx(3.0) and events[2].dwell_s == pytest.approx(5.0)


def test_relative_units_class_filter_and_track_ending_inside():
    cfg = ZoneConfig.from_dict({"zones": [{"name": "left_half", "units": "relative", "classes": ["car"],
                                           "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}]})
    mon = ZoneMonitor(cfg, LABELS)
    events = run(mon, [[(1, 100, 300, 2), (2, 120, 300, 0), (3, 600, 300, 2)], [], []], ended={2: (1, 2)})
    assert [(e.event_type.value, e.track_id, e.frame_index) for e in events] == [("entered", 1, 0), ("left", 1, 2)]
    assert events[1].box == events[0].box  # last known box of the ended track


def test_whole_frame_zone_reports_appearing_and_ending_tracks():
    mon = ZoneMonitor(labels=LABELS)
    events = run(mon, [[(1, 10, 50, 0)], [(1, 12, 50, 0), (2, 300, 300, 1)], []], ended={2: (1,)})
    assert [(e.event_type.value, e.track_id, e.class_name, e.zone) for e in events] == [
        ("entered", 1, "person", "frame"), ("entered", 2, "bicycle", "frame"), ("left", 1, "person", "frame")]


def test_zone_monitor_needs_tracked_detections():
    with pytest.raises(ValueError, match="tracker_id"):
        ZoneMonitor().update(Detections.empty(), frame_size=FRAME_SIZE, frame_time=0, frame_index=0)


def test_points_in_polygon_matches_opencv():
    poly = np.array([[10, 10], [200, 30], [150, 180], [60, 120], [20, 160]], np.float32)
    pts = np.random.default_rng(0).uniform(0, 220, (500, 2))
    ours = points_in_polygon(pts, poly)
    ref = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), True) for x, y in pts])
    away = np.abs(ref) > 1e-6  # points on an edge may go either way
    np.testing.assert_array_equal(ours[away], ref[away] > 0)


# -- configuration files -------------------------------------------------------------------------
GOOD_TOML = """
[[zones]]
name = "porch"
polygon = [[0, 0], [1, 0], [1, 1]]
units = "relative"
dwell_s = 10

[[lines]]
name = "gate"
points = [[0, 5], [10, 5]]
classes = ["person"]
"""


@pytest.mark.parametrize("suffix, text, expect, needle", [
    (".toml", GOOD_TOML, does_not_raise(), None),
    (".json", json.dumps(GATE), does_not_raise(), None),
    (".toml", "[[zones]]\nname='a'\npolygon=[[0,0],[1,1]]\n", pytest.raises(ZoneConfigError), "polygon"),
    (".toml", "[[zones]]\nname='a'\npolygon=[[0,0],[1,0],[1,1]]\ncolour='red'\n", pytest.raises(ZoneConfigError), "colour"),
    (".json", '{"lines": [{"name": "g", "points": [[0, 0], [0, 0]]}]}', pytest.raises(ZoneConfigError), "same point"),
    (".json", '{"lines": [{"points": [[0, 0], [1, 0]]}]}', pytest.raises(ZoneConfigError), "name"),
    (".json", '{"zones": [{"name": "a", "polygon": [[0,0],[1,0],[1,1]], "dwell_s": -1}]}',
     pytest.raises(ZoneConfigError), "dwell_s"),
    (".json", '{"zones": [{"name": "a", "polygon": [[0,0],[1,0],[1,1]], "anchor": "feet"}]}',
     pytest.raises(ZoneConfigError), "anchor"),
    (".json", '{"zones": [], "lines": []}', pytest.raises(ZoneConfigError), "no zones"),
    (".json", '{"zone": []}', pytest.raises(ZoneConfigError), "zone"),
    (".json", '{"lines": [{"name": "g", "points": [[0,0],[1,0]]}, {"name": "g", "points": [[0,1],[1,1]]}]}',
     pytest.raises(ZoneConfigError), "duplicate"),
    (".toml", "[[zones]\n", pytest.raises(ZoneConfigError), "TOML"),
    (".yaml", "zones: []", pytest.raises(ZoneConfigError), ".toml or .json"),
])
def test_load_zones(tmp_path, suffix, text, expect, needle):
    path = tmp_path / f"zones{suffix}"
    path.write_text(text)
    with expect as info:
        cfg = load_zones(path)
    if needle is None:
        assert cfg.zones or cfg.lines
    else:
        assert needle in str(info.value) and str(path) in str(info.value)


def test_load_zones_missing_file(tmp_path):
    with pytest.raises(ZoneConfigError, match="cannot read"):
        load_zones(tmp_path / "nope.toml")


# -- events --------------------------------------------------------------------------------------
def make_event(i: int = 0, **kw) -> Event:
    base = dict(event_type=EventType.ENTERED, class_name="person", class_id=0, track_id=i, zone="frame",
                score=0.875, box=(1.5, 2.25, 30.0, 40.75), time=1.7e9 + i, frame_time=float(i), frame_index=i)
    return Event(**{**base, **kw})


def test_event_json_round_trip_unique_ids_and_no_image_by_default():
    events = [make_event(i) for i in range(200)]
    assert len({e.event_id for e in events}) == 200
    e = make_event(3, event_type="line_crossed", direction="in", counts={"in": {"person": 1}, "out": {}})
    d = json.loads(e.to_json())
    assert d["event_type"] == "line_crossed" and d["direction"] == "in"
    assert "image_jpeg_b64" not in d and "dwell_s" not in d
    back = Event.from_json(e.to_json())
    assert back == e and back.counts == e.counts


@pytest.mark.parametrize("data, expect", [
    ({"event_type": "teleported"}, pytest.raises(ValueError)),
    ({"box": (0, 0, 1)}, pytest.raises(ValueError)),
    ({"box": (0, 0, float("nan"), 1)}, pytest.raises(ValueError)),
    ({"direction": "sideways"}, pytest.raises(ValueError)),
    ({"dwell_s": 3.0}, does_not_raise()),
])
def test_event_validation(data, expect):
    with expect:
        make_event(**data)


def test_event_from_dict_names_unknown_fields():
    d = make_event().to_dict() | {"colour": "red"}
    with pytest.raises(ValueError, match="colour"):
        Event.from_dict(d)


# -- disk buffer ---------------------------------------------------------------------------------
def test_disk_buffer_order_limit_and_persistence(tmp_path):
    path = tmp_path / "buf" / "q.sqlite"
    buf = DiskBuffer(path, limit=5)
    buf.append([f"e{i}" for i in range(3)])
    buf.append([f"e{i}" for i in range(3, 8)])
    assert len(buf) == 5 and buf.dropped == 3
    assert [p for _, p in buf.peek(10)] == [f"e{i}".encode() for i in range(3, 8)]
    seqs = [s for s, _ in buf.peek(2)]
    buf.remove(seqs + [999])
    assert [p for _, p in buf.peek(10, after=0)] == [b"e5", b"e6", b"e7"]
    buf.close()
    again = DiskBuffer(path, limit=2)  # a lower limit on restart trims the oldest
    assert [p for _, p in again.peek(10)] == [b"e6", b"e7"] and again.dropped == 4
    assert again.append(["e8"])[0] > max(seqs)  # seqs keep increasing across restarts
    again.close()
    with pytest.raises(SinkError, match="closed"):
        again.append(["x"])


def test_disk_buffer_rejects_a_file_that_is_not_a_buffer(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SinkError, match=str(bad)):
        DiskBuffer(bad)


# -- local sinks ---------------------------------------------------------------------------------
def batch(events, image=None) -> EventBatch:
    img = np.zeros((120, 160, 3), np.uint8) if image is None else image
    d = Detections(np.array([[20, 30, 80, 100]]), np.array([0.9]), np.array([0]), np.array([5]))
    return EventBatch(Frame(img, 0.0, 12, "test"), d, tuple(events), tuple(LABELS))


def test_jsonl_sink_appends_one_line_per_event(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    events = [make_event(i) for i in range(5)]
    with JsonlSink(path) as sink:
        sink.emit(batch(events[:2]))
        sink.emit(batch([]))
        sink.emit(batch(events[2:]))
    with JsonlSink(path) as sink:  # appends, never truncates
        sink.emit(batch([make_event(9)]))
    lines = path.read_text().splitlines()
    assert [json.loads(x)["event_id"] for x in lines] == [e.event_id for e in events] + [json.loads(lines[-1])["event_id"]]
    assert len(lines) == 6


def test_snapshot_sink_draws_boxes_and_skips_frames_without_events(tmp_path):
    image = np.full((120, 160, 3), 40, np.uint8)
    sink = SnapshotSink(tmp_path / "snaps", max_files=2)
    sink.emit(batch([], image))
    assert list((tmp_path / "snaps").iterdir()) == []
    for _ in range(3):
        sink.emit(batch([make_event()], image))
    files = sorted((tmp_path / "snaps").iterdir())
    assert len(files) == 2 and all(f.name.startswith("000012_") for f in files)
    shot = cv2.imread(str(files[-1]))
    b, g, r = shot[65, 20].astype(int)  # on the left edge of the box (x=20): clearly green
    assert BOX_COLOR == (0, 255, 0) and g - max(b, r) > 60
    assert np.abs(shot[65, 50].astype(int) - 40).max() < 20  # inside the box: untouched
    assert image.max() == 40  # the frame itself was not drawn on


@pytest.mark.parametrize("spec, kind, expect", [
    ("jsonl:/tmp/x.jsonl", "jsonl", does_not_raise()),
    ("mqtt://127.0.0.1:1883/home", "mqtt", does_not_raise()),
    ("https://example.invalid/hook", "http", does_not_raise()),
    ("snapshots:/tmp/s", "snapshots", does_not_raise()),
    ("kafka://broker", None, pytest.raises(ValueError, match="accepted forms")),
    ("jsonl:", None, pytest.raises(ValueError)),
])
def test_parse_sink_spec(spec, kind, expect):
    with expect:
        assert parse_sink_spec(spec).kind == kind


class _Hook(BaseHTTPRequestHandler):
    """Webhook receiver: answers the scripted status codes first, then 200."""

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        with srv.lock:
            status = srv.script.pop(0) if srv.script else 200
            if status == 200:
                srv.received.append(json.loads(body)["event_id"])
            srv.attempts += 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _hook_server(port: int, script: list[int]) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", port), _Hook)
    srv.lock, srv.script, srv.received, srv.attempts = threading.Lock(), list(script), [], 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_http_sink_buffers_while_the_server_is_down_and_delivers_in_order(tmp_path):
    port = free_port()
    sink = open_sink(f"http://127.0.0.1:{port}/hook", device="cam", buffer_dir=tmp_path,
                     backoff=Backoff(0.02, 0.2))
    assert isinstance(sink, HttpSink)
    events = [make_event(i) for i in range(6)]
    sink.emit(batch(events[:3]))
    wait_until(lambda: sink.stats()["failures"] >= 2, what="webhook retries while the server is down")
    assert sink.stats()["buffered"] == 3
    srv = _hook_server(port, script=[503, 429, 400])  # two retryable errors, then a rejection
    try:
        sink.emit(batch(events[3:]))
        assert sink.flush(timeout=30)
        st = sink.stats()
        # The 400 rejects the first event; every other arrives once, in order.
        assert srv.received == [e.event_id for e in events[1:]]
        assert st["rejected"] == 1 and st["delivered"] == 5 and st["buffered"] == 0
    finally:
        sink.close(0)
        srv.shutdown()
        srv.server_close()


def test_http_sink_keeps_undelivered_events_on_disk_for_the_next_start(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    sink = open_sink(url, device="cam", buffer_dir=tmp_path, backoff=Backoff(0.02, 0.1))
    events = [make_event(i) for i in range(4)]
    sink.emit(batch(events))
    sink.close(timeout=0.1)
    assert sink.stats()["buffered"] == 4
    srv = _hook_server(port, script=[])
    try:
        again = open_sink(url, device="cam", buffer_dir=tmp_path, backoff=Backoff(0.02, 0.1))
        assert again.flush(timeout=30)
        again.close()
        assert srv.received == [e.event_id for e in events]
    finally:
        srv.shutdown()
        srv.server_close()
