"""Raspberry Pi camera modules through picamera2 (libcamera).

``picamera2`` is imported when the source is opened, never at import time: its ``__init__``
loads libcamera and probes the cameras, which fails off a Pi.

Pixel order. libcamera names formats by their little-endian word layout, so picamera2's
``"RGB888"`` is laid out in memory as ``[B, G, R]`` per pixel, which is OpenCV's BGR already;
``"BGR888"`` is ``[R, G, B]``; ``"XRGB8888"`` is ``[B, G, R, 255]`` and ``"XBGR8888"`` is
``[R, G, B, 255]``. Source: *The Picamera2 Library* manual (Raspberry Pi Ltd), Appendix A,
"Pixel and image formats". :data:`_TO_BGR` turns each into ``uint8`` BGR ``H×W×3``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.errors import CameraDisconnected, CameraUnavailable
from edge.sources.base import FrameSource, Grab

__all__ = ["PiCameraSource", "PICAMERA_FORMATS"]

_INSTALL_HINT = (
    "PiCameraSource needs picamera2: `pip install edgesight[picamera]` on a Raspberry Pi "
    "(it needs libcamera, shipped with Raspberry Pi OS; `sudo apt install python3-picamera2` "
    "and a venv made with --system-site-packages also work)"
)

#: picamera2 main-stream format → conversion of ``capture_array`` output to BGR (see module doc).
_TO_BGR: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "RGB888": lambda a: a,                   # [B, G, R]
    "BGR888": lambda a: a[..., ::-1],        # [R, G, B]
    "XRGB8888": lambda a: a[..., :3],        # [B, G, R, A]: drop alpha
    "XBGR8888": lambda a: a[..., 2::-1],     # [R, G, B, A]: drop alpha, swap R and B
}
PICAMERA_FORMATS = tuple(_TO_BGR)


class PiCameraSource(FrameSource):
    """A Raspberry Pi camera (CSI) through picamera2.

    Args:
        size: ``(width, height)`` of the main stream.
        fps: frame rate, set through the ``FrameRate`` control.
        camera_num: which camera, for boards with two CSI ports.
        format: main-stream pixel format, one of :data:`PICAMERA_FORMATS`; ``"RGB888"`` (default)
            needs no conversion for OpenCV.
        controls: extra libcamera controls (e.g. ``{"AwbEnable": True}``), merged with FrameRate.
        max_frames: see :class:`FrameSource`.

    Raises:
        ImportError: picamera2 is not installed (the message names the extra to install).
        CameraUnavailable: the camera cannot be opened or configured.
        CameraDisconnected: ``capture_array`` failed after streaming had started.

    Example:
        >>> with PiCameraSource(size=(1280, 720), fps=30) as cam:  # doctest: +SKIP
        ...     frame = cam.read()
    """

    def __init__(self, size: tuple[int, int] = (640, 480), fps: float = 30, camera_num: int = 0,
                 *, format: str = "RGB888", controls: dict[str, Any] | None = None,
                 max_frames: int | None = None) -> None:
        if format not in _TO_BGR:
            raise ValueError(f"format must be one of {', '.join(PICAMERA_FORMATS)}, got {format!r}")
        super().__init__(f"picamera:{camera_num}", max_frames=max_frames)
        self.size, self.fps, self.camera_num, self.format = tuple(size), fps, camera_num, format
        self.controls = {"FrameRate": float(fps), **(controls or {})}
        self._cam: Any = None
        self._started = False

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
        try:
            self._cam = Picamera2(self.camera_num)
            config = self._cam.create_video_configuration(
                main={"size": self.size, "format": self.format}, controls=self.controls)
            self._cam.configure(config)
            self._cam.start()
        except Exception as exc:  # picamera2 raises IndexError/RuntimeError for a missing camera
            raise CameraUnavailable(f"cannot open {self.source_id}: {exc}") from exc
        self._started = True

    def _grab(self) -> Grab | None:
        try:
            array = self._cam.capture_array("main")
        except Exception as exc:
            raise CameraDisconnected(
                f"{self.source_id} failed after {self._index} frames: {exc}") from exc
        ts = time.monotonic()
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise CameraDisconnected(
                f"{self.source_id} returned an array of shape {array.shape} for format "
                f"{self.format}; expected H×W×3 or H×W×4")
        image = np.ascontiguousarray(_TO_BGR[self.format](array), dtype=np.uint8)
        return image, ts, {}

    def _release(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            if self._started:
                cam.stop()
        finally:
            self._started = False
            cam.close()
