"""Sources that read recorded material: one image, a folder of images, a video file."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from edge.errors import ImageLoadError, SourceError
from edge.imageio import IMAGE_SUFFIXES, load_image
from edge.sources.base import FrameSource, Grab

__all__ = [
    "ImageFileSource", "ImageFolderSource", "VideoFileSource", "VIDEO_SUFFIXES", "list_images",
]

log = logging.getLogger(__name__)

#: Suffixes (lower case) that :func:`edge.sources.open_source` treats as video files.
VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm"})


class ImageFileSource(FrameSource):
    """A single image file, yielded once (timestamp 0.0).

    Args:
        path: the image file.
        gray, max_side: passed to :func:`edge.imageio.load_image`.
        max_frames: see :class:`FrameSource`.

    Raises:
        ImageLoadError: on the first read, if the file is missing, corrupt or not an image.

    Example:
        >>> with ImageFileSource("samples/cat.bmp") as src:  # doctest: +SKIP
        ...     frame = src.read()
    """

    def __init__(self, path: str | Path, *, gray: bool = False, max_side: int | None = None,
                 max_frames: int | None = None) -> None:
        super().__init__(str(path), max_frames=max_frames)
        self.path = Path(path)
        self._gray, self._max_side = gray, max_side
        self._done = False

    def _grab(self) -> Grab | None:
        if self._done:
            return None
        self._done = True
        image = load_image(self.path, gray=self._gray, max_side=self._max_side)
        return image, 0.0, {"path": str(self.path)}


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-insensitive), sorted by path."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolderSource(FrameSource):
    """The images of a folder in sorted path order; files without an image suffix are ignored.

    Args:
        folder: the directory.
        recursive: include sub-folders.
        loop: start again after the last image (combine with ``max_frames``).
        skip_bad: log and skip files that fail to decode instead of raising.
        fps: if given, timestamps are ``index / fps`` (a recorded sequence); otherwise
            ``time.monotonic()`` at read time.
        gray, max_side: passed to :func:`edge.imageio.load_image`.
        max_frames: see :class:`FrameSource`.

    Raises:
        SourceError: on open, if the folder does not exist or holds no images.
        ImageLoadError: naming the file, when an image fails to decode and ``skip_bad`` is False.
    """

    def __init__(self, folder: str | Path, *, recursive: bool = False, loop: bool = False,
                 skip_bad: bool = False, fps: float | None = None, gray: bool = False,
                 max_side: int | None = None, max_frames: int | None = None) -> None:
        super().__init__(str(folder), max_frames=max_frames)
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive or None, got {fps!r}")
        self.folder = Path(folder)
        self.recursive, self.loop, self.skip_bad, self.fps = recursive, loop, skip_bad, fps
        self._gray, self._max_side = gray, max_side
        self.files: list[Path] = []
        self._pos = 0
        self._good_this_pass = 0

    def _open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder not found or not a directory: {self.folder}")
        self.files = list_images(self.folder, self.recursive)
        if not self.files:
            how = ", recursively" if self.recursive else ""
            raise SourceError(f"image folder {self.folder} holds no images "
                              f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}{how})")

    def _grab(self) -> Grab | None:
        while True:
            if self._pos >= len(self.files):
                # Stop when not looping, and also when a whole pass produced nothing (all bad),
                # which would otherwise loop forever.
                if not self.loop or self._good_this_pass == 0:
                    return None
                self._pos, self._good_this_pass = 0, 0
            path = self.files[self._pos]
            self._pos += 1
            try:
                image = load_image(path, gray=self._gray, max_side=self._max_side)
            except ImageLoadError as exc:
                if not self.skip_bad:
                    raise
                log.warning("skipping %s: %s", path, exc)
                continue
            self._good_this_pass += 1
            ts = self._index / self.fps if self.fps is not None else time.monotonic()
            return image, ts, {"path": str(path)}


class VideoFileSource(FrameSource):
    """A video file decoded by OpenCV (FFmpeg backend); timestamps are the stream position.

    Args:
        path: the video file (.mp4, .avi, .mkv, .mov, .webm, anything FFmpeg reads).
        capture_factory: called as ``capture_factory(str(path), cv2.CAP_FFMPEG)``; defaults to
            ``cv2.VideoCapture``. Tests inject fakes here.
        max_frames: see :class:`FrameSource`.

    Raises:
        SourceError: on open, naming the file, if it is missing or cannot be decoded.
    """

    def __init__(self, path: str | Path, *, capture_factory: Callable[..., Any] | None = None,
                 max_frames: int | None = None) -> None:
        super().__init__(str(path), max_frames=max_frames)
        self.path = Path(path)
        self._factory = capture_factory or cv2.VideoCapture
        self._cap: Any = None

    @property
    def fps(self) -> float:
        """Frame rate the container declares (0.0 if unknown or not open)."""
        return float(self._cap.get(cv2.CAP_PROP_FPS)) if self._cap is not None else 0.0

    def _open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        self._cap = self._factory(str(self.path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise SourceError(f"cannot open video {self.path}: OpenCV/FFmpeg could not decode it")

    def _grab(self) -> Grab | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            return None  # end of file (a truncated file also just ends here)
        # After read(), POS_MSEC is the presentation time of the frame just returned.
        ts = float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        return image, ts, {"path": str(self.path)}

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
