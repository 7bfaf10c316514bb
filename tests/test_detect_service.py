"""The detection service and ``edge detect``: real detector, real images, real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest

from _mosquitto import MOSQUITTO, WAIT, Mosquitto, Subscriber, free_port, wait_until
from edge.cli import main as edge_main
from edge.detect.frameslot import FrameSlot
from edge.detect.service import DetectionService, ServiceOptions
from edge.detect.sinks.base import Sink
from edge.detect.sinks.jsonl import JsonlSink
from edge.detect.zones import ZoneConfig, ZoneMonitor, points_in_polygon
from edge.errors import ModelCardError
from edge.imageio import load_image
from edge.sources import ImageFolderSource, SyntheticSource
from edge.sources.files import list_images

ROOT = Path(__file__).resolve().parent.parent
MODEL = "yolox_nano_416"


@pytest.fixture(scope="module")
def detector(model_dir):
    from edge.detect import create_detector

    with create_detector(MODEL, threads=1, score_threshold=0.1) as det:
        yield det


@pytest.fixture(scope="session")
def coco_images(data_dir) -> Path:
    folder = data_dir / "coco128" / "images"
    if not folder.is_dir():
        pytest.skip(f"coco128 images not found under {data_dir}")
    return folder


def get_json(url: str):
    """(status, body) of a GET, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
    except OSError:
        return None


# -- FrameSlot -----------------------------------------------------------------------------------
@pytest.mark.parametrize("policy, capacity, puts, want_items, want_dropped", [
    ("latest", 1, 5, [4], 4),
    ("latest", 2, 5, [3, 4], 3),
    ("all", 8, 5, [0, 1, 2, 3, 4], 0),
])
def test_frame_slot_policies(policy, capacity, puts, want_items, want_dropped):
    slot = FrameSlot(policy, capacity)
    for i in range(puts):
        assert slot.put(i)
    slot.close()
    got = []
    while (item := slot.get(0)) is not None:
        got.append(item)
    assert got == want_items and slot.dropped == want_dropped and slot.finished


def test_frame_slot_all_policy_waits_for_room_and_close_releases_it():
    slot = FrameSlot("all", 1)
    assert slot.put("a")
    results = []
    t = threading.Thread(target=lambda: results.append(slot.put("b")))
    t.start()
    assert slot.get(WAIT) == "a"
    t.join(WAIT)
    assert results == [True] and slot.get(0) == "b"
    slot.put("c")
    t = threading.Thread(target=lambda: results.append(slot.put("d")))
    t.start()
    slot.close(discard=True)
    t.join(WAIT)
    assert results == [True, False] and slot.dropped == 1 and slot.get(0) is None


@pytest.mark.parametrize("kwargs, expect", [
    ({}, does_not_raise()),
    ({"frame_policy": "newest"}, pytest.raises(ValueError)),
    ({"batch_queue": 0}, pytest.raises(ValueError)),
])
def test_service_options(kwargs, expect):
    with expect:
        ServiceOptions(**kwargs)


# -- the service in process ----------------------------------------------------------------------
def test_service_serves_health_and_metrics_and_applies_zones(tmp_path, detector, coco_images):
    polygon = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]
    zones = ZoneMonitor(ZoneConfig.from_dict({"zones": [{"name": "left", "polygon": polygon, "units": "relative"}]}),
                        detector.labels)
    jsonl = tmp_path / "events.jsonl"
    port = free_port()
    source = ImageFolderSource(coco_images, loop=True)
    service = DetectionService(source, detector, sinks=[JsonlSink(jsonl)], zones=zones,
                               options=ServiceOptions(health_port=port, device="bench"))
    out = {}
    runner = threading.Thread(target=lambda: out.setdefault("summary", service.run()))
    with source:
        runner.start()
        try:
            wait_until(lambda: (r := get_json(f"http://127.0.0.1:{port}/metrics")) and r[1]["frames_processed"] >= 4,
                       what="four processed frames in /metrics")
            status, health = get_json(f"http://127.0.0.1:{port}/health")
            status_m, metrics = get_json(f"http://127.0.0.1:{port}/metrics")
            assert get_json(f"http://127.0.0.1:{port}/nope")[0] == 404
        finally:
            service.request_stop()
            runner.join(WAIT)
    assert not runner.is_alive()
    assert (status, health["status"]) == (200, "ok") and status_m == 200
    assert metrics["frame_policy"] == "all" and metrics["fps"] > 0
    for stage in ("capture", "preprocess", "inference", "decode", "tracking", "zones", "sinks", "end_to_end"):
        row = metrics["latency_ms"][stage]
        assert 0 <= row["p50"] <= row["p90"] <= row["p99"], stage
    assert set(metrics["queue_depth"]) == {"frames", "prepared", "results", "batches"}
    assert metrics["broker"] is None and metrics["buffered_events"] == 0

    summary = out["summary"]
    assert summary.stopped_by_request
    assert summary.frames_captured == summary.frames_processed + summary.frames_dropped
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(lines) == summary.events > 0
    assert {e["zone"] for e in lines} == {"left"} and {e["device"] for e in lines} == {"bench"}
    entered = [e for e in lines if e["event_type"] == "entered"]
    assert entered
    files = list_images(coco_images)  # the folder's frame order; frame i is files[i % len]
    for e in entered:  # the bottom-centre of every entering box lies in the left half of its image
        h, w = load_image(files[e["frame_index"] % len(files)]).shape[:2]
        x1, _, x2, y2 = e["box"]
        assert points_in_polygon(np.array([[(x1 + x2) / 2, y2]]), np.array(polygon) * [w, h])[0]


def test_live_source_uses_the_latest_frame_policy(detector):
    source = SyntheticSource(320, 240, max_frames=30)
    with source:
        summary = DetectionService(source, detector).run()
    assert summary.metrics["frame_policy"] == "latest"
    assert summary.frames_captured == 30
    assert 1 <= summary.frames_processed <= 30
    assert summary.frames_processed + summary.frames_dropped == 30


class RecordingSink(Sink):
    """Keeps what reaches it: (frame index, event ids) per batch; may ask the service to stop."""

    kind = "recording"

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__("recording")
        self.batches: list[tuple[int, list[str]]] = []
        self.closed = False
        self.service: DetectionService | None = None
        self.stop_after = stop_after

    def emit(self, batch) -> None:
        self.batches.append((batch.frame.index, [e.event_id for e in batch.events]))
        if self.stop_after is not None and len(self.batches) == self.stop_after:
            self.service.request_stop()

    def close(self, timeout=None) -> None:
        self.closed = True


class FailingPostprocess:
    """The real detector whose post-processing raises on one frame (by call count)."""

    def __init__(self, detector, fail_at: int) -> None:
        self._det, self.fail_at, self.calls = detector, fail_at, 0
        self.labels, self.preprocess, self.infer = detector.labels, detector.preprocess, detector.infer

    def postprocess(self, outputs, prepared):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ModelCardError("injected post-processing failure")
        return self._det.postprocess(outputs, prepared)


@pytest.mark.parametrize("stop_after", [None, 3])
def test_staged_pipeline_keeps_frame_order_and_loses_no_inferred_frame(detector, coco_images, stop_after):
    sink = RecordingSink(stop_after)
    with ImageFolderSource(coco_images, max_frames=10) as source:
        service = DetectionService(source, detector, sinks=[sink])
        sink.service = service
        summary = service.run()
    indices = [i for i, _ in sink.batches]
    # Every inferred frame reached the sinks, in capture order, once; the rest were dropped.
    assert indices == list(range(summary.frames_processed))
    assert summary.frames_captured == summary.frames_processed + summary.frames_dropped
    assert sum(summary.metrics["frames_dropped_at"].values()) == summary.frames_dropped
    assert summary.events == sum(len(ids) for _, ids in sink.batches) and sink.closed
    if stop_after is None:
        assert (summary.frames_processed, summary.frames_dropped, summary.stopped_by_request) == (10, 0, False)
    else:
        assert summary.stopped_by_request and stop_after <= summary.frames_processed < 10
    assert summary.metrics["queue_depth"] == {"frames": 0, "prepared": 0, "results": 0, "batches": 0}


def test_a_failing_stage_stops_the_service_and_its_error_is_raised_after_the_flush(detector, coco_images):
    sink = RecordingSink()
    failing = FailingPostprocess(detector, fail_at=4)
    with ImageFolderSource(coco_images, loop=True) as source:
        service = DetectionService(source, failing, sinks=[sink])
        with pytest.raises(ModelCardError, match="injected"):
            service.run()
    assert [i for i, _ in sink.batches] == [0, 1, 2] and sink.closed
    assert service.health()["status"] == "failed"
    assert service.frames_captured == service.frames_processed + service.frames_dropped


def test_a_detector_with_only_detect_runs_whole_in_the_inference_stage(model_dir, coco_images):
    from edge.vision.face_detectors import create_face_detector

    sink = RecordingSink()
    with create_face_detector("yunet", threads=1) as faces, ImageFolderSource(coco_images, max_frames=4) as source:
        summary = DetectionService(source, faces, sinks=[sink]).run()
    assert [i for i, _ in sink.batches] == [0, 1, 2, 3]
    lat = summary.metrics["latency_ms"]
    assert lat["inference"]["n"] == 4 and lat["preprocess"]["n"] == 4


# -- the command line ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["--sink", "kafka://x"], "unrecognised sink"),
    (["--zones", "{tmp}/missing.toml"], "missing.toml"),
    (["--zones", "{tmp}/bad.json"], "duplicate"),
    (["--max-frames", "-1"], "--max-frames"),
    (["--score", "2"], "--score"),
    (["--bundle", "{tmp}", "--trust", "{tmp}/k.pub"], "trusted public key not found"),
    (["--trust", "{tmp}/k.pub"], "give --bundle"),
])
def test_detect_command_reports_bad_input(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.json").write_text('{"lines": [{"name": "g", "points": [[0,0],[1,0]]},'
                                       ' {"name": "g", "points": [[0,1],[1,1]]}]}')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = edge_main(["detect", "--source", "synthetic", *argv])
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_health_port_in_use_is_a_clean_error(tmp_path, capsys, model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        rc = edge_main(["detect", "--source", "synthetic", "--max-frames", "1", "--threads", "1",
                        "--health-port", str(taken.getsockname()[1]), "--sink", f"jsonl:{tmp_path / 'e.jsonl'}"])
    assert rc == 2
    assert "cannot serve /health" in capsys.readouterr().err


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory, model_dir):
    """A real signed bundle whose detector role holds YOLOX-Nano (ONNX) and the SSD (TFLite)."""
    pytest.importorskip("cryptography")
    from edge.registry import get_card, resolve_file, resolve_model
    from export.bundle.keys import generate_keypair, load_private_key
    from export.bundle.write import BundleEntry, write_bundle

    priv, pub = generate_keypair(tmp_path_factory.mktemp("keys"))
    entries = []
    for name in (MODEL, "ssd_mobilenet_v1_coco_quant"):
        card = get_card(name)
        labels = resolve_file(card.labels.file, card.labels.sha256) if card.labels else None
        entries.append(BundleEntry("detector", resolve_model(card), card, labels))
    out = tmp_path_factory.mktemp("bundles") / "board"
    write_bundle(out, entries, profile="board", private_key=load_private_key(priv), report={}, report_md="")
    return out, pub


@pytest.mark.parametrize("model, tamper, key, rc, needle", [
    (None, None, True, 2, "has several models for 'detector' model"),
    ("nope", None, True, 2, "has no 'detector' model of task 'object_detection' named 'nope'"),
    (MODEL, None, True, 0, None),
    ("ssd_mobilenet_v1_coco_quant", None, True, 0, None),
    (MODEL, None, False, 2, "trusted public key not found"),  # never used unverified
    (MODEL, "detector/yolox_nano_416.json", True, 2, "yolox_nano_416.json sha256 differs"),
    (MODEL, "manifest.json", True, 2, "manifest.json was altered"),
])
def test_detect_command_runs_a_verified_bundle(tmp_path, capsys, caplog, signed_bundle, coco_images, model, tamper,
                                               key, rc, needle):
    import shutil

    bundle, pub = signed_bundle
    if tamper is not None:
        bundle = Path(shutil.copytree(bundle, tmp_path / "board"))
        target = bundle / tamper
        target.write_bytes(target.read_bytes().replace(b"{", b"[", 1))  # same size, other bytes
    jsonl = tmp_path / "ev.jsonl"
    argv = ["detect", "--source", str(coco_images), "--max-frames", "2", "--threads", "1", "--bundle", str(bundle),
            "--sink", f"jsonl:{jsonl}", "--trust", str(pub if key else tmp_path / "none.pub")]
    argv += ["--model", model] if model else []
    assert edge_main(argv) == rc
    err = capsys.readouterr().err
    if rc != 0:
        assert needle in err
        assert not jsonl.exists()
        return
    assert json.loads(err.strip().splitlines()[-1])["frames"] == 2
    assert jsonl.read_text().strip()


def test_detect_command_writes_jsonl_over_coco128(tmp_path, capsys, model_dir, coco_images):
    jsonl = tmp_path / "ev.jsonl"
    rc = edge_main(["detect", "--source", str(coco_images), "--max-frames", "6", "--threads", "1",
                    "--sink", f"jsonl:{jsonl}", "--sink", f"snapshots:{tmp_path / 'snaps'}", "--classes", "person,car"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    events = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert summary["frames"] == 6 and summary["events"] == len(events) > 0
    assert {e["class_name"] for e in events} <= {"person", "car"}
    assert len({e["event_id"] for e in events}) == len(events)
    assert len(list((tmp_path / "snaps").glob("*.jpg"))) == len({e["frame_index"] for e in events})


# -- end to end: edge detect + Mosquitto restart + SIGTERM ---------------------------------------
@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="needs Debian's mosquitto")
def test_edge_detect_survives_a_broker_restart_and_stops_cleanly(tmp_path, model_dir, coco_images):
    prefix, device = "edgetest", "cam1"
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, f"{prefix}/#")
    health_port = free_port()
    jsonl = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "edge", "detect", "--source", str(coco_images), "--loop", "--threads", "1",
           "--sink", f"jsonl:{jsonl}", "--sink", f"mqtt://127.0.0.1:{broker.port}/{prefix}",
           "--health-port", str(health_port), "--device", device, "--buffer-dir", str(tmp_path / "buffer"),
           "--drain-timeout", "30"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def metrics() -> dict:
        assert proc.poll() is None, f"edge detect exited early: {proc.stderr.read()[-3000:]}"
        r = get_json(f"http://127.0.0.1:{health_port}/metrics")
        return r[1] if r else {}

    try:
        wait_until(lambda: len(sub.event_ids()) >= 10, what="events over MQTT before the outage")
        status, health = get_json(f"http://127.0.0.1:{health_port}/health")
        assert (status, health["status"]) == (200, "ok")
        assert metrics()["broker"] == "connected"

        broker.stop()
        wait_until(lambda: metrics().get("broker") == "disconnected", what="the service to see the broker go")
        m = wait_until(lambda: (m := metrics()).get("buffered_events", 0) >= 10 and m,
                       what="events buffered on disk during the outage")
        assert m["events_dropped"] == 0
        subs = sub.subscriptions
        broker.start(gated=True)  # same port; only the subscriber gets in until the gate opens
        wait_until(lambda: sub.subscriptions > subs, what="the subscriber to subscribe again")
        broker.open_gate()
        wait_until(lambda: metrics().get("broker") == "connected", what="the service to reconnect")
        held = m["buffered_events"]
        delivered_before = len(set(sub.event_ids()))
        wait_until(lambda: len(set(sub.event_ids())) >= delivered_before + held,
                   what="the buffered events to be delivered")

        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    try:
        assert proc.returncode == 0, stderr[-3000:]
        summary = json.loads(stderr.strip().splitlines()[-1])
        assert summary["stopped"] is True and summary["buffered_events"] == 0 and summary["events_dropped"] == 0
        written = [json.loads(x)["event_id"] for x in jsonl.read_text().splitlines()]
        assert len(written) == len(set(written)) == summary["events"]
        wait_until(lambda: set(sub.event_ids()) >= set(written), what="every JSONL event at the subscriber")
        received = sub.event_ids()
        assert set(received) == set(written)
        wait_until(lambda: sub.availability()[-1:] == ["offline"], what="offline after SIGTERM")
        assert sub.availability().count("online") >= 2  # birth again after the restart
        print(f"\nedge detect e2e: {summary['frames']} frames, {len(written)} events, held {held} during the "
              f"outage, {len(received) - len(set(received))} duplicate(s) at the subscriber, fps {summary['fps']}")
    finally:
        sub.close()
        broker.stop()
