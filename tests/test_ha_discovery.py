"""Home Assistant MQTT discovery against a real Mosquitto: retained discovery payloads under
``homeassistant/`` with the fields Home Assistant requires, availability through the MQTT last will,
and state topics that follow the events."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _mosquitto import MOSQUITTO, Mosquitto, Subscriber, wait_until
from edge.detect.events import Event, EventType
from edge.detect.sinks import Backoff, EventBatch
from edge.detect.sinks.homeassistant import EVENT_TYPES, HomeAssistantSink, object_id
from edge.types import Detections, Frame

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="needs Debian's mosquitto")

ROOT = Path(__file__).resolve().parent.parent
PREFIX, DEVICE, NODE = "edgetest", "cam1", "edgesight_cam1"
#: Fields every discovery payload must carry for Home Assistant to make a grouped, available-aware entity.
REQUIRED = ("name", "unique_id", "state_topic", "availability_topic", "payload_available", "payload_not_available",
            "device")


def event(kind: EventType, track: int, zone: str = "door", label: str = "person") -> Event:
    return Event(kind, label, 0, track, zone, 0.9, (0, 0, 10, 10), time.time(), 0.0, 0)


def batch(*events: Event) -> EventBatch:
    return EventBatch(Frame(np.zeros((4, 4, 3), np.uint8), 0.0, 0, "t"), Detections.empty(), tuple(events))


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def sink(tmp_path, broker):
    s = HomeAssistantSink(f"mqtt://127.0.0.1:{broker.port}/{PREFIX}", device=DEVICE,
                          buffer_path=tmp_path / "ha.sqlite", zones=["door"], labels=["person"],
                          backoff=Backoff(0.05, 0.5))
    yield s
    s.close(0)


def retained(port: int, topic: str, n: int) -> dict[str, tuple[bytes, bool]]:
    """What a *new* subscriber gets on ``topic`` right after subscribing: the retained messages."""
    sub = Subscriber(port, topic)
    try:
        wait_until(lambda: len(sub.messages) >= n, what=f"{n} retained message(s) on {topic}")
        return {t: (p, r) for t, p, r in sub.messages}
    finally:
        sub.close()


def test_discovery_payloads_are_retained_under_homeassistant_with_required_fields(broker, sink):
    wait_until(lambda: sink.state == "connected" and sink.discovery_published >= 4, what="discovery published")
    got = retained(broker.port, "homeassistant/#", 4)
    assert set(got) == {f"homeassistant/binary_sensor/{NODE}/availability/config",
                        f"homeassistant/event/{NODE}/events/config",
                        f"homeassistant/sensor/{NODE}/last_face/config",
                        f"homeassistant/sensor/{NODE}/door_person_count/config"}
    assert all(flag for _, flag in got.values()), "discovery messages must be retained"
    ids = set()
    for topic, (payload, _) in got.items():
        cfg = json.loads(payload)
        missing = [k for k in REQUIRED if k not in cfg]
        assert not missing, f"{topic} lacks {missing}"
        assert cfg["availability_topic"] == f"{PREFIX}/{DEVICE}/availability"
        assert cfg["device"]["identifiers"] == [NODE] and cfg["origin"]["name"] == "edgesight"
        component, node, oid = topic.split("/")[1:4]
        assert node == NODE and oid == object_id(oid)
        ids.add(cfg["unique_id"])
        if component == "event":
            assert cfg["state_topic"] == f"{PREFIX}/{DEVICE}/event" and cfg["event_types"] == list(EVENT_TYPES)
        if component == "binary_sensor":
            assert (cfg["payload_on"], cfg["payload_off"], cfg["device_class"]) == ("online", "offline", "connectivity")
    assert len(ids) == 4, "unique_id must differ per entity"
    avail = retained(broker.port, f"{PREFIX}/{DEVICE}/availability", 1)
    assert avail[f"{PREFIX}/{DEVICE}/availability"] == (b"online", True)


def test_states_follow_zone_entries_exits_and_recognised_faces(broker, sink):
    sub = Subscriber(broker.port, f"{PREFIX}/{DEVICE}/#")
    try:
        wait_until(lambda: sink.state == "connected", what="connected")
        door = f"{PREFIX}/{DEVICE}/zone/door/person"
        sink.emit(batch(event(EventType.ENTERED, 1), event(EventType.ENTERED, 2)))
        wait_until(lambda: sub.payloads(door)[-1:] == [b"2"], what="door count 2")
        sink.emit(batch(event(EventType.LEFT, 1), event(EventType.DWELL, 2)))
        wait_until(lambda: sub.payloads(door)[-1:] == [b"1"], what="door count 1")
        # a zone/label pair never announced before gets its discovery message, then its state
        sink.emit(batch(event(EventType.ENTERED, 7, zone="drive way", label="car")))
        drive = f"{PREFIX}/{DEVICE}/zone/drive_way/car"
        wait_until(lambda: sub.payloads(drive)[-1:] == [b"1"], what="drive way car count")
        cfg = json.loads(retained(broker.port, f"homeassistant/sensor/{NODE}/drive_way_car_count/config", 1)
                         [f"homeassistant/sensor/{NODE}/drive_way_car_count/config"][0])
        assert cfg["state_topic"] == drive and cfg["name"] == "car in drive way"
        sink.publish_face("alice", 0.7123)
        wait_until(lambda: sub.payloads("/face/last"), what="last face")
        face = json.loads(sub.payloads("/face/last")[-1])
        assert face["user"] == "alice" and face["similarity"] == 0.7123
        assert sink.counts() == {"door": {"person": 1}, "drive way": {"car": 1}}
        # the events themselves reach the event entity's topic
        wait_until(lambda: len(sub.payloads("/event")) >= 5, what="events")
        assert json.loads(sub.payloads("/event")[0])["event_type"] == "entered"
        # and the retained states are there for a Home Assistant that starts later
        states = retained(broker.port, f"{PREFIX}/{DEVICE}/zone/#", 2)
        assert states[door] == (b"1", True) and states[drive] == (b"1", True)
    finally:
        sub.close()


CHILD = """
import sys, time
from edge.detect.sinks.homeassistant import HomeAssistantSink
s = HomeAssistantSink(sys.argv[1], device="cam1", buffer_path=sys.argv[2], zones=["door"], labels=["person"])
while s.state != "connected":
    time.sleep(0.05)
print("ready", flush=True)
time.sleep(600)
"""


def test_availability_goes_offline_through_the_last_will_when_the_process_dies(tmp_path, broker):
    sub = Subscriber(broker.port, f"{PREFIX}/{DEVICE}/availability")
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"mqtt://127.0.0.1:{broker.port}/{PREFIX}",
                              str(tmp_path / "child.sqlite")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "ready"
        wait_until(lambda: sub.availability()[-1:] == ["online"], what="online")
        child.send_signal(signal.SIGKILL)  # no clean goodbye: only the broker's last will can say it
        child.wait(30)
        wait_until(lambda: sub.availability()[-1:] == ["offline"], what="offline from the last will")
        assert retained(broker.port, f"{PREFIX}/{DEVICE}/availability", 1)[f"{PREFIX}/{DEVICE}/availability"] == \
            (b"offline", True)
    finally:
        if child.poll() is None:
            child.kill()
        sub.close()


def test_bad_discovery_prefix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="discovery prefix"):
        HomeAssistantSink("mqtt://127.0.0.1:1/x", device="d", buffer_path=tmp_path / "b.sqlite",
                          discovery_prefix="home/#")


@pytest.mark.slow
def test_edge_serve_publishes_entities_counts_and_the_last_recognised_face(tmp_path, broker, data_dir):
    """End to end: ``edge serve --mqtt`` over real detections, and a recognition through the API."""
    pytest.importorskip("fastapi", reason="the web extra")
    from _unlock_helpers import deepface_people
    from _web_server import WebServer, people_folder

    sub = Subscriber(broker.port, "#")
    srv = WebServer(tmp_path / "srv", people_folder(data_dir, tmp_path / "srv" / "source"), liveness_dir=None,
                    extra=["--mqtt", f"mqtt://127.0.0.1:{broker.port}/{PREFIX}"])
    try:
        node = "edgesight_testcam"
        count = f"{PREFIX}/testcam/zone/frame/person"
        wait_until(lambda: sub.payloads(f"homeassistant/sensor/{node}/frame_person_count/config"),
                   what="discovery of the person count in the whole-frame zone")
        wait_until(lambda: any(int(p) > 0 for p in sub.payloads(count)), what="a person counted")
        people = deepface_people(data_dir)
        assert srv.upload("/api/faces/alice/photos", [("photos", p.name, p.read_bytes()) for p in people.enrol]
                          ).status == 200
        assert srv.upload("/api/recognize", [("image", "g.jpg", people.genuine[0].read_bytes())]).status == 200
        wait_until(lambda: sub.payloads("/testcam/face/last"), what="last face state")
        assert json.loads(sub.payloads("/testcam/face/last")[-1])["user"] == "alice"
        assert sub.availability()[-1:] == ["online"]
    finally:
        assert srv.stop() == 0
        wait_until(lambda: sub.availability()[-1:] == ["offline"], what="offline after a clean stop")
        sub.close()
