"""The MQTT sink against a real Mosquitto broker: topics, retained availability, last will,
delivery across a broker restart, and the disk buffer's limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest

from _mosquitto import MOSQUITTO, WAIT, Mosquitto, Subscriber, free_port, wait_until
from edge.detect.events import Event, EventType
from edge.detect.sinks import Backoff, EventBatch
from edge.detect.sinks.mqtt import MqttSink, MqttTarget, parse_mqtt_url
from edge.types import Detections, Frame

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="needs Debian's mosquitto")

ROOT = Path(__file__).resolve().parent.parent
PREFIX, DEVICE = "edgetest", "cam1"
FAST = dict(initial=0.05, maximum=0.5)


def events(n: int, start: int = 0) -> list[Event]:
    return [Event(EventType.ENTERED, "person", 0, i, "frame", 0.9, (0, 0, 10, 10), time.time(), float(i), i)
            for i in range(start, start + n)]


def batch(evts) -> EventBatch:
    return EventBatch(Frame(np.zeros((4, 4, 3), np.uint8), 0.0, 0, "t"), Detections.empty(), tuple(evts))


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def sink_factory(tmp_path, broker):
    made = []

    def make(port=None, **kw):
        s = MqttSink(f"mqtt://127.0.0.1:{port or broker.port}/{PREFIX}", device=DEVICE,
                     buffer_path=tmp_path / "buffer.sqlite", backoff=Backoff(**FAST), **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close(0)


@pytest.fixture
def subscriber(broker):
    sub = Subscriber(broker.port, f"{PREFIX}/#")
    yield sub
    sub.close()


def test_events_arrive_in_order_and_availability_is_retained(broker, subscriber, sink_factory):
    sink = sink_factory()
    sent = events(20)
    sink.emit(batch(sent[:12]))
    sink.emit(batch(sent[12:]))
    assert sink.flush(timeout=WAIT)
    wait_until(lambda: len(subscriber.event_ids()) >= 20, what="20 events at the subscriber")
    assert subscriber.event_ids() == [e.event_id for e in sent]
    first = json.loads(subscriber.payloads("/event")[0])
    assert first["event_type"] == "entered" and first["class_name"] == "person"
    topics = {t for t, _, _ in subscriber.messages}
    assert topics == {f"{PREFIX}/{DEVICE}/event", f"{PREFIX}/{DEVICE}/availability"}

    late = Subscriber(broker.port, f"{PREFIX}/{DEVICE}/availability")
    try:
        wait_until(lambda: late.messages, what="the retained availability message")
        assert late.messages[0][1:] == (b"online", True)
    finally:
        late.close()
    sink.close()
    wait_until(lambda: subscriber.availability()[-1:] == ["offline"], what="offline on a clean shutdown")
    later = Subscriber(broker.port, f"{PREFIX}/{DEVICE}/availability")
    try:
        wait_until(lambda: later.messages, what="the retained offline message")
        assert later.messages[0][1:] == (b"offline", True)
    finally:
        later.close()


_CHILD = """
import sys, time
from edge.detect.sinks.mqtt import MqttSink
sink = MqttSink(sys.argv[1], device=sys.argv[2], buffer_path=sys.argv[3])
while sink.state != "connected":
    time.sleep(0.01)
print("ready", flush=True)
sys.stdin.read()
"""


def test_last_will_goes_offline_when_the_process_dies(tmp_path, broker, subscriber, sink_factory):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, f"mqtt://127.0.0.1:{broker.port}/{PREFIX}", DEVICE,
                              str(tmp_path / "child.sqlite")], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        wait_until(lambda: subscriber.availability() == ["online"], what="the child's birth message")
        child.kill()  # no clean disconnect: the broker must publish the will
        child.wait(WAIT)
    finally:
        if child.poll() is None:
            child.kill()
    wait_until(lambda: subscriber.availability() == ["online", "offline"], what="the last will")
    sink_factory()
    wait_until(lambda: subscriber.availability() == ["online", "offline", "online"], what="online again")


def test_broker_restart_loses_nothing_and_keeps_order(broker, subscriber, sink_factory):
    sink = sink_factory()
    before, during, after = events(15), events(25, 100), events(10, 200)
    sink.emit(batch(before))
    assert sink.flush(timeout=WAIT)
    wait_until(lambda: len(subscriber.event_ids()) >= 15, what="events before the outage")

    broker.stop()
    wait_until(lambda: sink.stats()["state"] != "connected", what="the sink to notice the outage")
    sink.emit(batch(during[:10]))
    sink.emit(batch(during[10:]))
    assert sink.stats()["buffered"] == 25
    failures = sink.stats()["connect_failures"]

    subs = subscriber.subscriptions  # read before the restart: the subscriber may be back at once
    broker.start(gated=True)  # same port; only the subscriber may connect for now
    wait_until(lambda: subscriber.subscriptions > subs, what="the subscriber to subscribe again")
    wait_until(lambda: sink.stats()["connect_failures"] > failures, what="the sink to be refused while gated")
    assert sink.stats()["buffered"] == 25  # refused: everything still on disk
    broker.open_gate()
    sink.emit(batch(after))
    assert sink.flush(timeout=WAIT)
    sent = [e.event_id for e in before + during + after]
    wait_until(lambda: set(subscriber.event_ids()) >= set(sent), what="every event after the restart")

    got = subscriber.event_ids()
    assert set(got) == set(sent)
    first_seen = list(dict.fromkeys(got))
    assert first_seen == sent  # in order, judged by first arrival
    stats = sink.stats()
    assert stats["buffered"] == 0 and stats["dropped"] == 0 and stats["connections"] == 2
    print(f"broker restart: {len(sent)} events, {len(got) - len(set(got))} duplicate(s) received")


def test_buffer_limit_drops_the_oldest_and_counts_them(tmp_path):
    broker = Mosquitto(tmp_path / "late-broker")  # not running yet: the sink starts offline
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{PREFIX}", device=DEVICE, buffer_path=tmp_path / "b.sqlite",
                    buffer_limit=10, backoff=Backoff(**FAST))
    try:
        sent = events(25)
        for k in range(0, 25, 5):
            sink.emit(batch(sent[k:k + 5]))
        stats = sink.stats()
        assert (stats["buffered"], stats["dropped"], stats["state"]) == (10, 15, "disconnected")
        broker.start(gated=True)
        sub = Subscriber(broker.port, f"{PREFIX}/+/event")
        try:
            broker.open_gate()
            assert sink.flush(timeout=WAIT)
            wait_until(lambda: len(set(sub.event_ids())) >= 10, what="the 10 kept events")
            assert list(dict.fromkeys(sub.event_ids())) == [e.event_id for e in sent[15:]]
        finally:
            sub.close()
        assert sink.stats()["dropped"] == 15
    finally:
        sink.close(0)
        broker.stop()


@pytest.mark.parametrize("url, expect, want", [
    ("mqtt://h", does_not_raise(), MqttTarget("h", 1883, "edgesight")),
    ("mqtts://h/a/b/", does_not_raise(), MqttTarget("h", 8883, "a/b", tls=True)),
    ("mqtt://u:p%40ss@h:1884/x", does_not_raise(), MqttTarget("h", 1884, "x", username="u", password="p@ss")),
    ("mqtt://u@h/x", does_not_raise(), MqttTarget("h", 1883, "x", username="u", password="from-env")),
    ("http://h/x", pytest.raises(ValueError, match="mqtt://"), None),
    ("mqtt:///x", pytest.raises(ValueError, match="no host"), None),
    ("mqtt://h:99999/x", pytest.raises(ValueError, match="port"), None),
    ("mqtt://h/a/#", pytest.raises(ValueError, match="prefix"), None),
])
def test_parse_mqtt_url(monkeypatch, url, expect, want):
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "from-env")
    with expect:
        assert parse_mqtt_url(url) == want


@pytest.mark.parametrize("device", ["", "a/b", "cam+", "#"])
def test_bad_device_names_are_refused(tmp_path, device):
    with pytest.raises(ValueError, match="device"):
        MqttSink(f"mqtt://127.0.0.1:{free_port()}/p", device=device, buffer_path=tmp_path / "x.sqlite")


def test_unreachable_broker_is_not_an_error_at_start(tmp_path):
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/p", device="d", buffer_path=tmp_path / "x.sqlite",
                    backoff=Backoff(**FAST))
    try:
        sink.emit(batch(events(3)))
        wait_until(lambda: sink.stats()["connect_failures"] >= 2, what="reconnect attempts")
        assert sink.flush(timeout=0.1) is False
    finally:
        sink.close(timeout=0.1)
    assert sink.stats()["buffered"] == 3
    assert os.path.exists(tmp_path / "x.sqlite")


def test_edge_detect_fails_when_the_broker_was_never_reached(tmp_path):
    """No events to send, but the device never announced itself: exit 1, naming the sink."""
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "edge", "detect", "--source", "synthetic", "--max-frames", "3",
                           "--sink", f"mqtt://127.0.0.1:{port}/p", "--buffer-dir", str(tmp_path / "buf"),
                           "--drain-timeout", "0.5"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"mqtt://127.0.0.1:{port}/p: never connected" in proc.stderr and "Traceback" not in proc.stderr
