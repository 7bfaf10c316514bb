"""Tests for edge.sources: files, a real recorded video, fake cameras and a fake picamera2."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import types
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import CameraDisconnected, CameraUnavailable, ImageLoadError, SourceError
from edge.imageio import load_image
from edge.paths import data_dir
from edge.sources import (
    FOURCC_MJPG, CameraSource, FrameSource, GStreamerSource, ImageFileSource, ImageFolderSource,
    PiCameraSource, RtspSource, SyntheticSource, VideoFileSource, gstreamer_available,
    jetson_csi_pipeline, open_source,
)
from edge.sources.capture import FFMPEG_OPTIONS_ENV
from edge.types import Frame

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data() -> Path:
    d = data_dir()
    if d is None or not (d / "samples").is_dir():
        pytest.skip("shared data directory not found (set EDGE_DATA_DIR)")
    return d


# -- synthetic -----------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["gradient", "noise", "checker"])
def test_synthetic_is_deterministic_with_moving_square(pattern):
    a = list(SyntheticSource(64, 48, pattern=pattern, seed=3, max_frames=4))
    b = list(SyntheticSource(64, 48, pattern=pattern, seed=3, max_frames=4))
    assert [f.index for f in a] == [0, 1, 2, 3]
    for fa, fb in zip(a, b):
        assert fa.image.shape == (48, 64, 3) and fa.image.dtype == np.uint8
        np.testing.assert_array_equal(fa.image, fb.image)
    # side = 48 // 4 = 12, y = 18, x = 8 * i
    assert (a[0].image[18:30, 0:12] == 255).all()
    assert (a[3].image[18:30, 24:36] == 255).all()
    assert not np.array_equal(a[0].image, a[1].image)


def test_synthetic_seed_and_timestamps():
    n1 = SyntheticSource(32, 32, pattern="noise", seed=1).open().read()
    n2 = SyntheticSource(32, 32, pattern="noise", seed=2).open().read()
    assert not np.array_equal(n1.image, n2.image)
    frames = list(SyntheticSource(32, 32, fps=20, max_frames=3))
    assert [f.timestamp for f in frames] == [0.0, 0.05, 0.1]
    assert frames[0].source_id == "synthetic:32x32"


@pytest.mark.parametrize("kwargs, match", [
    ({"pattern": "plaid"}, "pattern"),
    ({"width": 2}, "4×4"),
    ({"fps": 0}, "fps"),
    ({"realtime": True}, "realtime"),
    ({"max_frames": -1}, "max_frames"),
])
def test_synthetic_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSource(**kwargs)


def test_base_protocol_read_close_idempotent():
    src = SyntheticSource(16, 16, max_frames=2)
    with src as s:
        assert s is src
        assert isinstance(s.read(), Frame)
        assert s.read().index == 1
        assert s.read() is None  # max_frames reached
    assert src.closed
    src.close()  # idempotent
    assert src.read() is None
    with pytest.raises(SourceError, match="closed"):
        src.open()
    assert isinstance(src, FrameSource)


# -- image files and folders -------------------------------------------------------------

def test_image_file_source(data):
    path = data / "samples/cat.bmp"
    with ImageFileSource(path) as src:
        frames = list(src)
    assert len(frames) == 1
    f = frames[0]
    assert f.image.shape == (341, 512, 3) and f.index == 0 and f.timestamp == 0.0
    assert f.source_id == str(path) and f.metadata["path"] == str(path)
    np.testing.assert_array_equal(f.image, cv2.imread(str(path)))


def test_image_file_source_corrupt(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    src = ImageFileSource(bad)
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        src.read()
    assert src.closed


def test_image_folder_source_coco(data):
    folder = data / "coco128/images"
    expected = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    with ImageFolderSource(folder, max_frames=3, fps=10) as src:
        frames = list(src)
    assert len(src.files) == len(expected) == 128
    assert [f.metadata["path"] for f in frames] == [str(p) for p in expected[:3]]
    assert [f.timestamp for f in frames] == [0.0, 0.1, 0.2]
    np.testing.assert_array_equal(frames[1].image, load_image(expected[1]))


@pytest.fixture()
def mixed_folder(data, tmp_path) -> Path:
    shutil.copy(data / "samples/cat.bmp", tmp_path / "a_cat.bmp")
    (tmp_path / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    shutil.copy(data / "samples/face.jpg", tmp_path / "c_face.JPG")  # upper-case suffix
    (tmp_path / "notes.txt").write_text("not an image")
    sub = tmp_path / "sub"
    sub.mkdir()
    shutil.copy(data / "samples/parrot.jpg", sub / "d_parrot.jpg")
    return tmp_path


def test_folder_raises_on_corrupt_file_naming_it(mixed_folder):
    src = ImageFolderSource(mixed_folder)
    assert src.read().metadata["path"].endswith("a_cat.bmp")
    with pytest.raises(ImageLoadError, match="b_broken.jpg"):
        src.read()
    assert src.closed


def test_folder_skip_bad_logs_and_skips(mixed_folder, caplog):
    with caplog.at_level(logging.WARNING), ImageFolderSource(mixed_folder, skip_bad=True) as src:
        names = [Path(f.metadata["path"]).name for f in src]
    assert names == ["a_cat.bmp", "c_face.JPG"]  # notes.txt ignored, sub/ not recursive
    assert "b_broken.jpg" in caplog.text


def test_folder_recursive_and_loop(mixed_folder):
    rec = [Path(f.metadata["path"]).name
           for f in ImageFolderSource(mixed_folder, recursive=True, skip_bad=True)]
    assert rec == ["a_cat.bmp", "c_face.JPG", "d_parrot.jpg"]
    looped = [Path(f.metadata["path"]).name
              for f in ImageFolderSource(mixed_folder, loop=True, skip_bad=True, max_frames=5)]
    assert looped == ["a_cat.bmp", "c_face.JPG", "a_cat.bmp", "c_face.JPG", "a_cat.bmp"]


def test_folder_loop_over_only_bad_files_ends(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"junk")
    assert list(ImageFolderSource(tmp_path, loop=True, skip_bad=True)) == []


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing", "not found"),
    (lambda p: p, "holds no images"),
])
def test_folder_errors(tmp_path, make, match):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(SourceError, match=match):
        ImageFolderSource(make(tmp_path)).open()


# -- a real video file -------------------------------------------------------------------

VIDEO_FPS = 10.0
VIDEO_FRAMES = 12


@pytest.fixture()
def video(tmp_path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*FOURCC_MJPG), VIDEO_FPS, (64, 48))
    assert writer.isOpened()
    for i in range(VIDEO_FRAMES):
        img = np.full((48, 64, 3), i * 20, np.uint8)
        img[:, :8] = (255, 0, 0)  # a blue stripe to check channel order
        writer.write(img)
    writer.release()
    return path


def test_video_file_source_reads_back(video):
    with VideoFileSource(video) as src:
        assert src.fps == VIDEO_FPS
        frames = list(src)
    assert len(frames) == VIDEO_FRAMES
    assert [f.index for f in frames] == list(range(VIDEO_FRAMES))
    np.testing.assert_allclose([f.timestamp for f in frames],
                               np.arange(VIDEO_FRAMES) / VIDEO_FPS, atol=1e-6)
    for i, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3)
        assert abs(f.image[:, 16:].mean() - i * 20) < 4  # MJPEG is lossy
        b, g, r = f.image[:, 1:6].reshape(-1, 3).mean(axis=0)
        assert b > 200 and g < 50 and r < 50


def test_video_file_source_max_frames(video):
    assert len(list(VideoFileSource(video, max_frames=4))) == 4


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.mp4", "not found"),
    (lambda p: (p / "fake.mp4").write_text("not a video") and p / "fake.mp4", "cannot open"),
])
def test_video_file_errors(tmp_path, make, match):
    with pytest.raises(SourceError, match=match):
        VideoFileSource(make(tmp_path)).open()


# -- fake cameras --------------------------------------------------------------------------

class FakeCapture:
    """Follows cv2.VideoCapture's interface: isOpened, read, set, get, release."""

    def __init__(self, *args, opened=True, frames=None, fail_at=(), never_recovers_after=None):
        self.args = args
        self.opened = opened
        self.frames = frames  # None: endless
        self.fail_at = set(fail_at)  # read numbers that fail once (transient glitches)
        self.never_recovers_after = never_recovers_after  # successful frames before vanishing
        self.reads = 0
        self.delivered = 0
        self.released = 0
        self.props: dict[int, float] = {}
        self.set_order: list[int] = []

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self.opened

    def read(self):
        self.reads += 1
        if self.reads in self.fail_at:
            return False, None
        if self.never_recovers_after is not None and self.delivered >= self.never_recovers_after:
            return False, None
        if self.frames is not None and self.delivered >= self.frames:
            return False, None
        self.delivered += 1
        return True, np.full((4, 6, 3), self.delivered, np.uint8)

    def set(self, prop, value):
        self.set_order.append(prop)
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def release(self):
        self.released += 1
        self.opened = False


def factory_for(cap: FakeCapture):
    def factory(*args):
        cap.args = args
        return cap
    return factory


def test_camera_that_cannot_open_names_device():
    cap = FakeCapture(opened=False)
    src = CameraSource(7, capture_factory=factory_for(cap))
    with pytest.raises(CameraUnavailable, match="camera 7"):
        with src:
            pass
    assert cap.released == 1 and src.closed


def test_camera_vanishing_mid_stream_raises_disconnected_and_releases():
    cap = FakeCapture(never_recovers_after=3)
    src = CameraSource("/dev/video0", capture_factory=factory_for(cap), max_failures=4,
                       retry_delay=0)
    got = []
    with pytest.raises(CameraDisconnected, match=r"/dev/video0.*after 3 frames"):
        with src:
            for frame in src:
                got.append(int(frame.image[0, 0, 0]))
    assert got == [1, 2, 3]
    assert cap.reads == 3 + 4  # three good reads, then max_failures attempts
    assert cap.released == 1
    assert cap.args[0] == "/dev/video0"


def test_camera_recovers_from_transient_failures():
    cap = FakeCapture(frames=5, fail_at={2, 3})  # two failed reads in a row < max_failures
    frames = list(CameraSource(0, capture_factory=factory_for(cap), max_failures=3, retry_delay=0,
                               max_frames=5))
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 3, 4, 5]
    assert cap.reads == 7
    assert cap.released == 1


def test_camera_that_opens_but_never_delivers_is_unavailable():
    cap = FakeCapture(frames=0)
    with pytest.raises(CameraUnavailable, match="delivered no frame"):
        CameraSource(2, capture_factory=factory_for(cap), retry_delay=0).read()
    assert cap.released == 1


def test_camera_settings_fourcc_first_and_backend():
    cap = FakeCapture()
    with CameraSource(1, width=1280, height=720, fps=30, fourcc=FOURCC_MJPG,
                      capture_factory=factory_for(cap)) as cam:
        frame = cam.read()
    assert frame.source_id == "camera 1"
    assert cap.set_order[0] == cv2.CAP_PROP_FOURCC
    assert cap.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(*"MJPG")
    assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == 1280
    assert cap.props[cv2.CAP_PROP_FRAME_HEIGHT] == 720
    if sys.platform.startswith("linux"):
        assert cap.args == (1, cv2.CAP_V4L2)
    assert cap.released == 1


def test_break_inside_with_keeps_camera_until_exit():
    cap = FakeCapture()
    with CameraSource(0, capture_factory=factory_for(cap)) as cam:
        for frame in cam:
            if frame.index == 2:
                break
        assert cap.released == 0
        assert cam.read().index == 3  # the with block owns the camera: reading may go on
    assert cap.released == 1


def test_break_without_with_releases_camera():
    cap = FakeCapture()
    for frame in CameraSource(0, capture_factory=factory_for(cap)):
        if frame.index == 1:
            break
    assert cap.released == 1


def test_error_in_with_body_releases_camera():
    cap = FakeCapture()
    with pytest.raises(KeyError):
        with CameraSource(0, capture_factory=factory_for(cap)) as cam:
            cam.read()
            raise KeyError("user code failed")
    assert cap.released == 1


def test_bad_fourcc():
    with pytest.raises(ValueError, match="4 characters"):
        CameraSource(0, fourcc="MJPEG")


# -- GStreamer and RTSP ------------------------------------------------------------------

def test_jetson_pipeline_matches_documented_one():
    assert jetson_csi_pipeline() == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,"
        "framerate=30/1 ! nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )
    assert "nvarguscamerasrc" in GStreamerSource.__doc__


def test_gstreamer_missing_from_build_is_a_clear_error():
    if gstreamer_available():
        pytest.skip("this OpenCV build has GStreamer")
    with pytest.raises(CameraUnavailable, match="no GStreamer support"):
        GStreamerSource("videotestsrc ! videoconvert ! appsink").open()


def test_gstreamer_with_fake_capture():
    cap = FakeCapture(frames=2)
    pipeline = jetson_csi_pipeline(sensor_id=1)
    frames = list(GStreamerSource(pipeline, capture_factory=factory_for(cap), max_frames=2))
    assert len(frames) == 2
    assert cap.args == (pipeline, cv2.CAP_GSTREAMER)
    with pytest.raises(ValueError, match="appsink"):
        GStreamerSource("videotestsrc ! autovideosink")


def test_rtsp_sets_ffmpeg_options_only_during_open(monkeypatch):
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)
    seen = {}

    def factory(*args):
        seen["env"] = os.environ.get(FFMPEG_OPTIONS_ENV)
        seen["args"] = args
        return FakeCapture(frames=1)

    url = "rtsp://admin:secret@10.0.0.5:554/stream1"
    src = RtspSource(url, latency_ms=200, capture_factory=factory, max_frames=1)
    assert "secret" not in src.source_id and "admin:***@10.0.0.5:554" in src.source_id
    frames = list(src)
    assert len(frames) == 1
    assert seen["env"] == "rtsp_transport;tcp|max_delay;200000"
    assert seen["args"][:2] == (url, cv2.CAP_FFMPEG)
    assert FFMPEG_OPTIONS_ENV not in os.environ


def test_rtsp_unreachable_and_bad_transport():
    with pytest.raises(CameraUnavailable, match="rtsp://cam.local/live"):
        RtspSource("rtsp://cam.local/live",
                   capture_factory=lambda *a: FakeCapture(opened=False)).open()
    with pytest.raises(ValueError, match="transport"):
        RtspSource("rtsp://cam.local/live", transport="http")


# -- fake picamera2 ------------------------------------------------------------------------

class FakePicamera2:
    """Follows picamera2's Picamera2 API; records calls. Pixels follow libcamera's layouts."""

    instances: list["FakePicamera2"] = []
    fail_after: int | None = None

    def __init__(self, camera_num=0):
        self.camera_num = camera_num
        self.calls: list[str] = []
        self.config = None
        self.captured = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, controls=None):
        self.calls.append("create_video_configuration")
        return {"main": dict(main), "controls": dict(controls)}

    def configure(self, config):
        self.calls.append("configure")
        self.config = config

    def start(self):
        self.calls.append("start")

    def capture_array(self, name="main"):
        assert name == "main"
        if self.fail_after is not None and self.captured >= self.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        self.captured += 1
        w, h = self.config["main"]["size"]
        fmt = self.config["main"]["format"]
        # A pure-red scene, in each format's memory order (picamera2 manual, appendix A).
        pixel = {"RGB888": [0, 0, 255], "BGR888": [255, 0, 0],
                 "XRGB8888": [0, 0, 255, 255], "XBGR8888": [255, 0, 0, 255]}[fmt]
        return np.tile(np.array(pixel, np.uint8), (h, w, 1))

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


@pytest.fixture()
def fake_picamera2(monkeypatch):
    FakePicamera2.instances = []
    FakePicamera2.fail_after = None
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
def test_picamera_yields_bgr(fake_picamera2, fmt):
    with PiCameraSource(size=(32, 24), fps=15, camera_num=1, format=fmt, max_frames=3) as cam:
        frames = list(cam)
    assert len(frames) == 3
    for f in frames:
        assert f.image.shape == (24, 32, 3) and f.image.dtype == np.uint8
        assert tuple(f.image[0, 0]) == (0, 0, 255)  # red in BGR
        assert f.source_id == "picamera:1"
    cam_obj = fake_picamera2.instances[0]
    assert cam_obj.camera_num == 1
    assert cam_obj.config == {"main": {"size": (32, 24), "format": fmt},
                              "controls": {"FrameRate": 15.0}}
    assert cam_obj.calls == ["create_video_configuration", "configure", "start", "stop", "close"]


def test_picamera_failure_mid_stream(fake_picamera2):
    fake_picamera2.fail_after = 2
    got = []
    with pytest.raises(CameraDisconnected, match="picamera:0 failed after 2 frames.*timed out"):
        with PiCameraSource(size=(8, 8)) as cam:
            for f in cam:
                got.append(f.index)
    assert got == [0, 1]
    assert fake_picamera2.instances[0].calls[-2:] == ["stop", "close"]


def test_picamera_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    src = PiCameraSource()
    with pytest.raises(ImportError, match=r"edgesight\[picamera\].*libcamera"):
        src.open()


def test_picamera_no_camera_is_unavailable(monkeypatch):
    module = types.ModuleType("picamera2")

    def no_camera(camera_num=0):
        raise IndexError("list index out of range")

    module.Picamera2 = no_camera
    monkeypatch.setitem(sys.modules, "picamera2", module)
    with pytest.raises(CameraUnavailable, match="picamera:3"):
        PiCameraSource(camera_num=3).open()


def test_picamera_bad_format():
    with pytest.raises(ValueError, match="RGB888"):
        PiCameraSource(format="YUV420")


def test_importing_sources_touches_no_hardware():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import edge.sources, edge.sources.picamera, edge.sources.capture, edge.imageio\n"
        "s = edge.sources.open_source('picamera'); s2 = edge.sources.open_source('0')\n"
        "assert 'picamera2' not in sys.modules, 'picamera2 imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- open_source: table of works / raises rows -------------------------------------------

@pytest.mark.parametrize("spec, expected_type, attrs, expectation", [
    ("synthetic", SyntheticSource, {"width": 640, "height": 480}, does_not_raise()),
    ("synthetic:320x240", SyntheticSource, {"width": 320, "height": 240}, does_not_raise()),
    ("picamera", PiCameraSource, {"camera_num": 0}, does_not_raise()),
    ("picamera:1", PiCameraSource, {"camera_num": 1}, does_not_raise()),
    ("gst:videotestsrc ! appsink", GStreamerSource, {"pipeline": "videotestsrc ! appsink"},
     does_not_raise()),
    ("videotestsrc ! videoconvert ! appsink", GStreamerSource, {}, does_not_raise()),
    ("rtsp://cam.local/live", RtspSource, {"transport": "tcp"}, does_not_raise()),
    ("0", CameraSource, {"device": 0}, does_not_raise()),
    ("/dev/video2", CameraSource, {"device": "/dev/video2"}, does_not_raise()),
    ("{data}/samples/cat.bmp", ImageFileSource, {}, does_not_raise()),
    ("{data}/coco128/images", ImageFolderSource, {}, does_not_raise()),
    ("{tmp}/clip.mp4", VideoFileSource, {}, does_not_raise()),
    ("bogus", None, {}, pytest.raises(ValueError, match="accepted forms")),
    ("", None, {}, pytest.raises(ValueError, match="non-empty")),
    ("synthetic:640", None, {}, pytest.raises(ValueError, match="synthetic:WIDTHxHEIGHT")),
    ("http://example.com/a", None, {}, pytest.raises(ValueError, match="rtsp://")),
    ("{tmp}/notes.txt", None, {}, pytest.raises(ValueError, match="unrecognised")),
    ("{tmp}/missing.jpg", None, {}, pytest.raises(FileNotFoundError, match="missing.jpg")),
    ("{tmp}/missing.mkv", None, {}, pytest.raises(FileNotFoundError, match="missing.mkv")),
    ("gst:videotestsrc ! fakesink", None, {}, pytest.raises(ValueError, match="appsink")),
])
def test_open_source(data, tmp_path, spec, expected_type, attrs, expectation):
    (tmp_path / "clip.mp4").write_bytes(b"")  # only existence matters: sources open lazily
    (tmp_path / "notes.txt").write_text("x")
    spec = spec.format(data=data, tmp=tmp_path)
    with expectation:
        src = open_source(spec)
        assert type(src) is expected_type
        for name, value in attrs.items():
            assert getattr(src, name) == value
        assert not src.closed


def test_open_source_passes_options():
    src = open_source("synthetic:64x48", max_frames=2, pattern="checker")
    assert [f.image.shape for f in src] == [(48, 64, 3), (48, 64, 3)]
    with pytest.raises(TypeError):
        open_source("synthetic", no_such_option=1)
