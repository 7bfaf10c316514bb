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
        if not batch.events or self._file is None:
            return
        self._file.write("".join(e.to_json() + "\n" for e in batch.events))
        self._file.flush()
        if self.fsync and self.path is not None:
            os.fsync(self._file.fileno())
        self.written += len(batch.events)

    def close(self, timeout: float | None = None) -> None:
        if self._file is None:
            return
        self._file.flush()
        if self.path is not None:
            os.fsync(self._file.fileno())
            self._file.close()
        self._file = None

    def stats(self) -> dict:
        return {"written": self.written}
