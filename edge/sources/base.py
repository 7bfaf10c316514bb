"""The one shape every frame source has: a context manager and an iterator of :class:`Frame`.

Subclasses implement three hooks and nothing else:

- ``_open()``: acquire the device or file (called once, lazily, by :meth:`FrameSource.open`);
- ``_grab()``: return ``(image, timestamp, metadata)`` for the next frame, or None at the end;
- ``_release()``: give the device back (called once, by :meth:`FrameSource.close`).

The base class numbers the frames, applies ``max_frames``, builds the frozen :class:`Frame`, and
guarantees the device is released on normal exit, on ``break``, and when a hook raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from edge.errors import SourceError
from edge.types import Frame

__all__ = ["FrameSource", "Grab"]

log = logging.getLogger(__name__)

#: What ``_grab`` returns: BGR (or gray) ``uint8`` image, timestamp in seconds, metadata.
Grab = tuple[np.ndarray, float, dict[str, Any]]


class FrameSource:
    """Base class of all frame sources.

    Args:
        source_id: a string naming the source in every :class:`Frame` it yields.
        max_frames: stop after this many frames (None: until the source ends).

    Use it as a context manager so the device is released even on error::

        with open_source("synthetic:320x240", max_frames=3) as src:
            for frame in src:
                ...

    ``read()`` returns None once the source is exhausted. ``close()`` may be called any number
    of times. A source is opened lazily by ``open()``, ``with`` or the first ``read()``; it
    cannot be reopened after ``close()``.
    """

    def __init__(self, source_id: str, *, max_frames: int | None = None) -> None:
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 0):
            raise ValueError(f"max_frames must be a non-negative int or None, got {max_frames!r}")
        self.source_id = source_id
        self.max_frames = max_frames
        self._index = 0
        self._opened = False
        self._closed = False
        self._in_context = False

    # -- hooks -------------------------------------------------------------------------------
    def _open(self) -> None:
        """Acquire the underlying device or file. Raise a SourceError subclass on failure."""

    def _grab(self) -> Grab | None:
        raise NotImplementedError

    def _release(self) -> None:
        """Release the underlying device or file. Must tolerate a half-finished ``_open``."""

    # -- public API --------------------------------------------------------------------------
    @property
    def frames_read(self) -> int:
        """How many frames this source has yielded so far."""
        return self._index

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> "FrameSource":
        """Open the source (idempotent). Returns self, so ``src = X(...).open()`` works."""
        if self._closed:
            raise SourceError(f"source {self.source_id} is closed; create a new one to reopen it")
        if not self._opened:
            try:
                self._open()
            except BaseException:
                self._closed = True
                self._safe_release()
                raise
            self._opened = True
        return self

    def read(self) -> Frame | None:
        """Return the next frame, or None when the source has ended or reached ``max_frames``.

        Raises:
            SourceError: (or a subclass) the device failed; it has been released already.
        """
        if self._closed and self._opened:
            return None  # ended or closed after use: behave like an exhausted iterator
        self.open()  # raises SourceError if closed before it was ever opened
        if self.max_frames is not None and self._index >= self.max_frames:
            return None
        try:
            grabbed = self._grab()
        except BaseException:
            self.close()
            raise
        if grabbed is None:
            return None
        image, timestamp, metadata = grabbed
        frame = Frame(image, float(timestamp), self._index, self.source_id, metadata)
        self._index += 1
        return frame

    def close(self) -> None:
        """Release the device. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            self._safe_release()

    def _safe_release(self) -> None:
        try:
            self._release()
        except Exception:  # releasing must never mask the error that led here
            log.warning("error while releasing %s", self.source_id, exc_info=True)

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the source ends, then close it.

        Leaving the loop early (``break``) closes the source too, unless it is inside a
        ``with`` block, which then owns the source's lifetime and may keep reading.
        """
        finished = False
        try:
            while (frame := self.read()) is not None:
                yield frame
            finished = True
        finally:  # a failed read has closed the source already (see read)
            if finished or not self._in_context:
                self.close()

    def __enter__(self) -> "FrameSource":
        self.open()
        self._in_context = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._in_context = False
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._opened else "new"
        return f"{type(self).__name__}({self.source_id!r}, {state}, frames_read={self._index})"
