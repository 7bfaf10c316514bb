"""A live source that drops is reopened in-process with back-off; the service keeps its state."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.errors import CameraDisconnected, CameraUnavailable
from edge.sources import CameraSource, ReconnectingSource, open_source
from edge.sources.reconnect import BackOff


class FlakyCamera:
    """Follows cv2.VideoCapture (isOpened/read/set/get/release). A shared script decides, per open,
    how many frames the device delivers before it drops, and whether it opens at all."""

    def __init__(self, script: list, frames: list):
        self.script, self.frames = script, frames
        step = script.pop(0) if script else "gone"
        self.opened = step != "gone"
        self.left = step if isinstance(step, int) else 0

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        self.frames.append(len(self.frames))
        return True, np.full((8, 8, 3), len(self.frames) % 256, np.uint8)

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 0.0

    def release(self):
        self.opened = False


def flaky(script):
    delivered: list = []
    return (lambda *a: FlakyCamera(script, delivered)), delivered


def test_backoff_doubles_and_caps():
    b = BackOff(0.5, 3.0)
    assert [b.take() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.take() == 0.5
    with pytest.raises(ValueError, match="initial"):
        BackOff(0, 1)


def test_dropped_camera_is_reopened_and_numbering_continues():
    # 3 frames, drop; reopen fails twice ("gone"); then 4 frames, drop; then 2 frames and the end
    factory, delivered = flaky([3, "gone", "gone", 4, 2])
    sleeps: list[float] = []
    src = open_source("0", reconnect=True, capture_factory=factory, max_failures=1, retry_delay=0, max_frames=9)
    assert isinstance(src, ReconnectingSource)
    src._sleep = sleeps.append  # no real waiting: the fake clock below only counts
    src._clock = lambda: sum(sleeps)
    with src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(9))
    gaps = [f.metadata.get("gap") for f in frames if "gap" in f.metadata]
    assert [g["attempts"] for g in gaps] == [3, 1]  # two failed reopenings, then one at once
    assert gaps[0]["after_frame"] == 3 and gaps[1]["after_frame"] == 7
    assert src.stats()["gaps"] == 2 and src.stats()["reconnects"] == 2
    assert sum(sleeps) == pytest.approx(0.5 + 1.0 + 2.0 + 0.5)  # back-off restarts after each recovery


def test_never_delivering_a_frame_is_an_error_not_a_gap():
    factory, _ = flaky([0])
    with pytest.raises(CameraUnavailable, match="delivered no frame"):
        with open_source("0", reconnect=True, capture_factory=factory, max_failures=1, retry_delay=0) as src:
            src.read()


def test_wrong_device_is_reported_at_open():
    factory, _ = flaky(["gone"])
    with pytest.raises(CameraUnavailable, match="cannot open"):
        open_source("/dev/video9", reconnect=True, capture_factory=factory).open()


def test_give_up_after_raises_the_last_error():
    factory, _ = flaky([2])  # then gone for ever
    src = ReconnectingSource(lambda: CameraSource(0, capture_factory=factory, max_failures=1, retry_delay=0),
                             "cam", give_up_after=1.0, backoff=BackOff(0.01, 0.02))
    with src, pytest.raises(CameraDisconnected, match="gave up after"):
        list(src)
    assert src.state == "failed"


def test_interrupt_ends_the_wait_promptly():
    factory, _ = flaky([1])
    src = ReconnectingSource(lambda: CameraSource(0, capture_factory=factory, max_failures=1, retry_delay=0),
                             "cam", backoff=BackOff(30.0, 30.0))
    threading.Timer(0.3, src.interrupt).start()
    t0 = time.monotonic()
    with src, pytest.raises(CameraDisconnected):
        list(src)
    assert time.monotonic() - t0 < 5  # not the 30 s back-off


def test_files_are_not_wrapped(tmp_path):
    assert not isinstance(open_source("synthetic:32x32", reconnect=True), ReconnectingSource)


def test_service_keeps_tracks_across_a_camera_drop(model_dir):
    """The detection service reads through a drop: same service, frames keep coming, gap reported."""
    from edge.detect import create_detector
    from edge.detect.service import DetectionService

    factory, _ = flaky([5, "gone", 5])
    src = open_source("0", reconnect=True, capture_factory=factory, max_failures=1, retry_delay=0, max_frames=10,
                      give_up_after=30.0)  # bounded: a bug must fail, not hang
    src.backoff = BackOff(0.01, 0.02)
    with create_detector("yolox_nano_416", threads=1) as det:
        service = DetectionService(src, det)
        summary = service.run()
    assert summary.frames_captured == 10  # a live source: the latest-frame policy may skip some for inference
    assert summary.metrics["source"]["gaps"] == 1 and summary.metrics["source"]["reconnects"] == 1
