"""Frame sources: files, cameras, streams and generated frames, all yielding :class:`Frame`.

:func:`open_source` turns a command-line style string into a source. Importing this package
touches no hardware: OpenCV opens devices only when a source is opened, and picamera2 is
imported only by :class:`PiCameraSource` when it opens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from edge.imageio import IMAGE_SUFFIXES
from edge.sources.base import FrameSource
from edge.sources.capture import (
    FOURCC_MJPG, FOURCC_YUYV, CameraSource, GStreamerSource, RtspSource, gstreamer_available,
    jetson_csi_pipeline,
)
from edge.sources.files import VIDEO_SUFFIXES, ImageFileSource, ImageFolderSource, VideoFileSource
from edge.sources.picamera import PiCameraSource
from edge.sources.reconnect import ReconnectingSource
from edge.sources.synthetic import SyntheticSource

__all__ = [
    "FrameSource", "ImageFileSource", "ImageFolderSource", "VideoFileSource", "CameraSource",
    "GStreamerSource", "RtspSource", "PiCameraSource", "SyntheticSource", "ReconnectingSource", "open_source",
    "SOURCE_FORMS", "FOURCC_MJPG", "FOURCC_YUYV", "VIDEO_SUFFIXES", "gstreamer_available",
    "jetson_csi_pipeline",
]


def _no_camera(settings: dict[str, Any]) -> dict[str, Any]:
    return {}


def _v4l2_camera(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: settings[k] for k in ("width", "height", "fps", "fourcc") if settings.get(k) is not None}


def _picamera_camera(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if settings.get("width") and settings.get("height"):
        out["size"] = (int(settings["width"]), int(settings["height"]))
    if settings.get("fps"):
        out["fps"] = settings["fps"]
    return out


def _csi_camera(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: int(settings[k]) for k in ("width", "height", "fps") if settings.get(k) is not None}


class _Rule(NamedTuple):
    form: str  # shown to users in the "unknown spec" message
    parse: Callable[[str, dict[str, Any]], FrameSource | None]  # None: not this form
    live: bool = False  # a camera or stream that can drop and come back (reopened with reconnect=True)
    camera: Callable[[dict[str, Any]], dict[str, Any]] = _no_camera  # a profile's camera mode -> options


def _synthetic(spec: str, opts: dict[str, Any]) -> FrameSource | None:
    m = re.fullmatch(r"synthetic(?::(\d+)x(\d+))?", spec)
    if m is None:
        return None
    if m.group(1):
        opts = {"width": int(m.group(1)), "height": int(m.group(2)), **opts}
    return SyntheticSource(**opts)


def _picamera(spec: str, opts: dict[str, Any]) -> FrameSource | None:
    m = re.fullmatch(r"picamera(?::(\d+))?", spec)
    if m is None:
        return None
    return PiCameraSource(camera_num=int(m.group(1) or 0), **opts)


def _jetson_csi(spec: str, opts: dict[str, Any]) -> FrameSource | None:
    m = re.fullmatch(r"jetson-csi(?::(\d+))?", spec)
    if m is None:
        return None
    caps = {k: opts.pop(k) for k in ("width", "height", "fps") if k in opts}
    return GStreamerSource(jetson_csi_pipeline(int(m.group(1) or 0), **caps), **opts)


def _gstreamer(spec: str, opts: dict[str, Any]) -> FrameSource | None:
    if spec.startswith("gst:"):
        return GStreamerSource(spec[len("gst:"):].strip(), **opts)
    return GStreamerSource(spec, **opts) if " ! " in spec else None


def _rtsp(spec: str, opts: dict[str, Any]) -> FrameSource | None:
    return RtspSource(spec, **opts) if spec.lower().startswith(("rtsp://", "rtsps://")) else None


def _camera(spec: str, opts: dict[str, Any]) -> FrameSource | None:
    if re.fullmatch(r"\d+", spec):
        return CameraSource(int(spec), **opts)
    if spec.startswith(("/dev/video", "/dev/v4l/")):
        return CameraSource(spec, **opts)
    return None


def _path(spec: str, opts: dict[str, Any]) -> FrameSource | None:
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        return ImageFolderSource(path, **opts)
    if suffix not in IMAGE_SUFFIXES and suffix not in VIDEO_SUFFIXES:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"source file not found: {path}")
    return (ImageFileSource if suffix in IMAGE_SUFFIXES else VideoFileSource)(path, **opts)


#: Every accepted spec, tried in order; the first parser that recognises the spec wins.
SOURCE_FORMS: tuple[_Rule, ...] = (
    _Rule("synthetic | synthetic:WIDTHxHEIGHT", _synthetic),
    _Rule("picamera | picamera:N (Raspberry Pi camera N)", _picamera, live=True, camera=_picamera_camera),
    _Rule("jetson-csi | jetson-csi:N (Jetson CSI camera N through nvarguscamerasrc)", _jetson_csi, live=True,
          camera=_csi_camera),
    _Rule("gst:PIPELINE, or any string containing ' ! ' (GStreamer pipeline)", _gstreamer, live=True),
    _Rule("rtsp://host/path (IP camera)", _rtsp, live=True),
    _Rule("N or /dev/videoN (V4L2 camera)", _camera, live=True, camera=_v4l2_camera),
    _Rule(f"a directory of images, an image file ({' '.join(sorted(IMAGE_SUFFIXES))}) "
          f"or a video file ({' '.join(sorted(VIDEO_SUFFIXES))})", _path),
)


def open_source(spec: str, *, reconnect: bool = False, give_up_after: float | None = None,
                camera: dict[str, Any] | None = None, **options: Any) -> FrameSource:
    """Build the frame source a string names. The source is returned unopened.

    Args:
        spec: see :data:`SOURCE_FORMS`, e.g. ``"0"``, ``"/dev/video2"``, ``"clip.mp4"``,
            ``"photos/"``, ``"rtsp://cam.local/stream"``, ``"picamera:1"``,
            ``"synthetic:320x240"``, ``"gst:videotestsrc ! videoconvert ! appsink"``.
        reconnect: for a live source (camera, RTSP, GStreamer, picamera), reopen it in-process with
            back-off when it drops (:class:`~edge.sources.reconnect.ReconnectingSource`); files
            and synthetic sources are returned as they are.
        give_up_after: with ``reconnect``, seconds of continuous outage before giving up.
        camera: a device profile's camera mode (``width``, ``height``, ``fps``, ``fourcc``; see
            :func:`edge.profile_use.camera_settings`), applied where the form takes it: a V4L2
            camera gets all four, picamera its size and frame rate, ``jetson-csi`` its pipeline
            caps; files, streams, raw GStreamer pipelines and synthetic frames ignore it.
            ``options`` given explicitly win.
        **options: keyword arguments for the chosen source's constructor (``max_frames``,
            ``width``, ``fourcc`` …); an option the source does not take raises TypeError.

    Returns:
        An unopened :class:`FrameSource`; use it in a ``with`` block.

    Raises:
        ValueError: the spec matches no accepted form (the message lists them).
        FileNotFoundError: the spec names an image or video file that does not exist.

    Example:
        >>> with open_source("synthetic:64x48", max_frames=1) as src:
        ...     next(iter(src)).image.shape
        (48, 64, 3)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"source spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    for rule in SOURCE_FORMS:
        merged = {**rule.camera(dict(camera or {})), **options}
        source = rule.parse(spec, dict(merged))
        if source is None:
            continue
        if reconnect and rule.live:
            inner_options = {k: v for k, v in merged.items() if k != "max_frames"}
            return ReconnectingSource(lambda: rule.parse(spec, dict(inner_options)), source.source_id,
                                      give_up_after=give_up_after, max_frames=options.get("max_frames"))
        return source
    forms = "\n  ".join(rule.form for rule in SOURCE_FORMS)
    raise ValueError(f"unrecognised source {spec!r}; accepted forms:\n  {forms}")
