"""``jsonl:PATH``: one JSON event per line, appended to a file (``-`` for standard output)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from edge.detect.sinks.base import EventBatch, Sink
from edge.errors import SinkError

__all__ = ["JsonlSink"]

#: Path that means standard output.
STDOUT = "-"


class JsonlSink(Sink):
    """Append events as JSON lines.

    Lines are flushed after every frame's batch and the file is ``fsync``-ed on :meth:`close`
    (and after every batch with ``fsync=True``), so a crash loses at most the last batch.

    Args:
        path: the file (parent directories are created), or ``"-"`` for standard output.
        fsync: also ``fsync`` after every batch.

    Raises:
        SinkError: the file cannot be opened for appending.

    Example:
        >>> with JsonlSink("/tmp/events.jsonl") as sink:          # doctest: +SKIP
        ...     sink.emit(batch)
    """

    kind = "jsonl"

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        super().__init__(f"jsonl:{path}")
        self.path = None if str(path) == STDOUT else Path(path)
        self.fsync = fsync
        self.written = 0
        if self.path is None:
            self._file: TextIO = sys.stdout
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                raise SinkError(f"cannot open {self.path} for appending events: {exc.strerror or exc}") from None

    def emit(self, batch: EventBatch) -> None:
        if not batch.events:
            return
        if self._file is None:
            raise SinkError(f"events file {self.path} is not open (closed, or lost after a write error)")
        text = "".join(e.to_json() + "\n" for e in batch.events)
        if self.path is None:
            self._file.write(text)
            self._file.flush()
        else:
            self._append(text)
        self.written += len(batch.events)

    def _append(self, text: str) -> None:
        """Append a whole batch or nothing: on a write error (a full disk) the file is cut back
        to where it was, so no half line is left for the next batch to follow."""
        size = self._file.tell()
        try:
            self._file.write(text)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            self._file = _reopen_at(self.path, size, self._file)
            raise SinkError(f"cannot append {len(text.splitlines())} event(s) to {self.path}: "
                            f"{exc.strerror or exc}; the file keeps every earlier event") from None

    def close(self, timeout: float | None = None) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            if self.path is not None:
                os.fsync(self._file.fileno())
        finally:
            if self.path is not None:
                self._file.close()
            self._file = None

    def stats(self) -> dict:
        return {"written": self.written}


def _reopen_at(path: Path, size: int, broken: TextIO) -> TextIO | None:
    """Drop what a failed write left in ``broken``'s buffer, cut ``path`` back to ``size`` bytes
    and open it again for appending (``None`` if even that fails: later batches then raise)."""
    try:
        os.truncate(broken.fileno(), size)
    except OSError:
        pass
    try:  # the buffered text that did not fit must not be written by close()
        os.close(broken.fileno())
    except OSError:
        pass
    try:
        broken.close()
    except OSError:
        pass
    try:
        return open(path, "a", encoding="utf-8")
    except OSError:
        return None
