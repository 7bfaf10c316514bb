"""Live sources read through ``cv2.VideoCapture``: V4L2 cameras, GStreamer pipelines, RTSP.

All three share one read loop (:class:`_CaptureSource`): a failed read is retried a few times
(USB cameras drop the odd frame); ``max_failures`` consecutive failures after the stream has
started mean the device went away and raise :class:`CameraDisconnected`; a stream that opens
but never delivers a frame raises :class:`CameraUnavailable`. The device is released either way.

The capture object is made by ``capture_factory`` (default ``cv2.VideoCapture``), so tests can
inject a fake camera that cannot open or vanishes mid-stream.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import cv2

from edge.errors import CameraDisconnected, CameraUnavailable
from edge.sources.base import FrameSource, Grab

__all__ = [
    "CameraSource", "GStreamerSource", "RtspSource", "FOURCC_MJPG", "FOURCC_YUYV",
    "gstreamer_available", "jetson_csi_pipeline",
]

log = logging.getLogger(__name__)

#: Motion-JPEG: lets USB2 webcams reach 30 fps at 720p/1080p (raw YUYV saturates the bus).
FOURCC_MJPG = "MJPG"
#: Uncompressed YUV 4:2:2, the V4L2 default of most UVC webcams.
FOURCC_YUYV = "YUYV"
#: Consecutive failed reads before a started stream counts as disconnected.
DEFAULT_MAX_FAILURES = 5
#: Pause between retries of a failed read, in seconds.
DEFAULT_RETRY_DELAY = 0.05
#: OpenCV reads FFmpeg demuxer options from this variable when a capture is opened.
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_ENV_LOCK = threading.Lock()


class _CaptureSource(FrameSource):
    """Shared open/read/release logic for anything behind ``cv2.VideoCapture``."""

    def __init__(self, source_id: str, *, capture_factory: Callable[..., Any] | None,
                 max_failures: int, retry_delay: float, max_frames: int | None) -> None:
        super().__init__(source_id, max_frames=max_frames)
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, got {max_failures!r}")
        self._factory = capture_factory or cv2.VideoCapture
        self.max_failures, self.retry_delay = max_failures, retry_delay
        self._cap: Any = None

    def _make_capture(self) -> Any:
        raise NotImplementedError

    def _configure(self) -> None:
        """Set capture properties after a successful open (cameras only)."""

    def _open(self) -> None:
        try:
            self._cap = self._make_capture()
        except cv2.error as exc:
            raise CameraUnavailable(f"cannot open {self.source_id}: {exc}") from exc
        if self._cap is None or not self._cap.isOpened():
            raise CameraUnavailable(
                f"cannot open {self.source_id}: no such device, busy, or unsupported settings"
            )
        self._configure()

    def _grab(self) -> Grab | None:
        for attempt in range(self.max_failures):
            ok, image = self._cap.read()
            if ok and image is not None and image.size:
                return image, time.monotonic(), {}
            if attempt + 1 < self.max_failures:
                time.sleep(self.retry_delay)
        if self._index == 0:
            raise CameraUnavailable(
                f"{self.source_id} opened but delivered no frame in {self.max_failures} reads"
            )
        raise CameraDisconnected(
            f"{self.source_id} stopped delivering frames after {self._index} frames "
            f"({self.max_failures} consecutive failed reads): unplugged or crashed?"
        )

    def _release(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None


def _fourcc_code(fourcc: str) -> int:
    if len(fourcc) != 4:
        raise ValueError(f"fourcc must be 4 characters like {FOURCC_MJPG!r}, got {fourcc!r}")
    return cv2.VideoWriter.fourcc(*fourcc)


class CameraSource(_CaptureSource):
    """A local camera: a V4L2 device on Linux (USB webcam, Pi camera through libcamera's V4L2
    compatibility layer), the default backend elsewhere.

    Args:
        device: index (``0``) or device path (``"/dev/video0"``, or a stable
            ``/dev/v4l/by-id/...`` link, which survives re-plugging).
        width, height, fps: requested mode. Drivers round to the nearest supported mode; the
            mode actually obtained is logged when it differs.
        fourcc: pixel format to request, e.g. :data:`FOURCC_MJPG`.
        backend: a ``cv2.CAP_*`` constant; default ``cv2.CAP_V4L2`` on Linux, else ``CAP_ANY``.
        capture_factory: called as ``capture_factory(device, backend)``.
        max_failures, retry_delay: see the module docstring.
        max_frames: see :class:`FrameSource`.

    Raises:
        CameraUnavailable: the device cannot be opened (named in the message).
        CameraDisconnected: the device stopped delivering frames after it started.

    Example:
        >>> cam = CameraSource(0, width=1280, height=720, fourcc=FOURCC_MJPG)
        >>> with cam:  # doctest: +SKIP
        ...     frame = cam.read()
    """

    def __init__(self, device: int | str = 0, *, width: int | None = None,
                 height: int | None = None, fps: float | None = None, fourcc: str | None = None,
                 backend: int | None = None, capture_factory: Callable[..., Any] | None = None,
                 max_failures: int = DEFAULT_MAX_FAILURES, retry_delay: float = DEFAULT_RETRY_DELAY,
                 max_frames: int | None = None) -> None:
        name = f"camera {device}" if isinstance(device, int) else f"camera {device!s}"
        super().__init__(name, capture_factory=capture_factory, max_failures=max_failures,
                         retry_delay=retry_delay, max_frames=max_frames)
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self._fourcc = _fourcc_code(fourcc) if fourcc is not None else None
        self.fourcc = fourcc
        self.backend = backend if backend is not None else (
            cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY)

    def _make_capture(self) -> Any:
        return self._factory(self.device, self.backend)

    def _configure(self) -> None:
        # V4L2 quirk: set the pixel format before the size, or the driver may pick the size
        # for the old format and then refuse the new one.
        wanted = [(cv2.CAP_PROP_FOURCC, self._fourcc), (cv2.CAP_PROP_FRAME_WIDTH, self.width),
                  (cv2.CAP_PROP_FRAME_HEIGHT, self.height), (cv2.CAP_PROP_FPS, self.fps)]
        for prop, value in wanted:
            if value is not None:
                self._cap.set(prop, float(value))
        for prop, value in wanted[1:]:
            if value is not None and abs(float(self._cap.get(prop)) - float(value)) > 0.5:
                log.warning("%s: asked for property %d = %s, driver gave %s",
                            self.source_id, prop, value, self._cap.get(prop))


@functools.lru_cache(maxsize=1)
def gstreamer_available() -> bool:
    """True when this OpenCV build has the GStreamer video I/O backend compiled in."""
    match = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper() != "NO"


def jetson_csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720,
                        fps: int = 30, flip_method: int = 0) -> str:
    """The GStreamer pipeline of a CSI camera on an NVIDIA Jetson (see GStreamerSource)."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
            f"nvvidconv flip-method={flip_method} ! video/x-raw,format=BGRx ! "
            "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")


class GStreamerSource(_CaptureSource):
    """A GStreamer pipeline ending in ``appsink``, e.g. a CSI camera on a Jetson.

    The Jetson CSI pipeline (:func:`jetson_csi_pipeline` builds it)::

        nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1
        ! nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert
        ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1

    ``nvvidconv`` copies the frame out of NVMM (GPU) memory as BGRx, ``videoconvert`` drops the
    x byte to give the BGR that OpenCV expects, and ``appsink drop=1 max-buffers=1`` keeps only
    the newest frame so a slow model sees fresh frames instead of a growing backlog.

    Args:
        pipeline: the pipeline description (must end in an ``appsink``).
        capture_factory: called as ``capture_factory(pipeline, cv2.CAP_GSTREAMER)``. When left
            None, the OpenCV build is checked for GStreamer support first.
        max_failures, retry_delay, max_frames: as for :class:`CameraSource`.

    Raises:
        ValueError: the pipeline has no ``appsink``.
        CameraUnavailable: OpenCV lacks GStreamer (pip's opencv-python wheels do), or the
            pipeline cannot start.
        CameraDisconnected: the pipeline stopped delivering frames after it started.
    """

    def __init__(self, pipeline: str, *, capture_factory: Callable[..., Any] | None = None,
                 max_failures: int = DEFAULT_MAX_FAILURES, retry_delay: float = DEFAULT_RETRY_DELAY,
                 max_frames: int | None = None) -> None:
        if "appsink" not in pipeline:
            raise ValueError(f"GStreamer pipeline must end in an appsink for OpenCV: {pipeline!r}")
        super().__init__(f"gst:{pipeline}", capture_factory=capture_factory,
                         max_failures=max_failures, retry_delay=retry_delay, max_frames=max_frames)
        self.pipeline = pipeline
        self._check_build = capture_factory is None

    def _make_capture(self) -> Any:
        if self._check_build and not gstreamer_available():
            raise CameraUnavailable(
                f"cannot open {self.source_id}: this OpenCV build has no GStreamer support "
                "(cv2.getBuildInformation() says 'GStreamer: NO'). pip's opencv-python wheels "
                "lack it; on a Jetson use the system OpenCV from JetPack (python3-opencv)."
            )
        return self._factory(self.pipeline, cv2.CAP_GSTREAMER)


def _redact(url: str) -> str:
    """Hide the password of ``rtsp://user:password@host/...`` so it never reaches logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RtspSource(_CaptureSource):
    """An RTSP stream (IP camera) read through OpenCV's FFmpeg backend.

    Args:
        url: ``rtsp://[user:password@]host[:port]/path``. The password is masked in
            ``source_id`` and messages.
        transport: ``"tcp"`` (default: no smeared frames from lost UDP packets) or ``"udp"``.
        latency_ms: FFmpeg ``max_delay`` (demuxer reordering delay), lower means less lag.
        timeout_ms: open and read timeouts, so a dead camera fails instead of hanging.
        capture_factory: called as ``capture_factory(url, cv2.CAP_FFMPEG, params)``.
        max_failures, retry_delay, max_frames: as for :class:`CameraSource`.

    Raises:
        CameraUnavailable: the stream cannot be opened.
        CameraDisconnected: the stream stopped after it started.
    """

    def __init__(self, url: str, *, transport: str = "tcp", latency_ms: int | None = None,
                 timeout_ms: int = 5000, capture_factory: Callable[..., Any] | None = None,
                 max_failures: int = DEFAULT_MAX_FAILURES, retry_delay: float = DEFAULT_RETRY_DELAY,
                 max_frames: int | None = None) -> None:
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be 'tcp' or 'udp', got {transport!r}")
        super().__init__(_redact(url), capture_factory=capture_factory,
                         max_failures=max_failures, retry_delay=retry_delay, max_frames=max_frames)
        self.url, self.transport = url, transport
        self.latency_ms, self.timeout_ms = latency_ms, timeout_ms

    @property
    def ffmpeg_options(self) -> str:
        """The value given to ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` ("key;value|key;value")."""
        opts = [f"rtsp_transport;{self.transport}"]
        if self.latency_ms is not None:
            opts.append(f"max_delay;{int(self.latency_ms) * 1000}")  # FFmpeg wants microseconds
        return "|".join(opts)

    def _make_capture(self) -> Any:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms]
        # OpenCV reads the options from the environment at open time only; set them just
        # around the open (under a lock) rather than leaking them into the whole process.
        with _ENV_LOCK:
            previous = os.environ.get(FFMPEG_OPTIONS_ENV)
            os.environ[FFMPEG_OPTIONS_ENV] = self.ffmpeg_options
            try:
                return self._factory(self.url, cv2.CAP_FFMPEG, params)
            finally:
                if previous is None:
                    os.environ.pop(FFMPEG_OPTIONS_ENV, None)
                else:
                    os.environ[FFMPEG_OPTIONS_ENV] = previous
