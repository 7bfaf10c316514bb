"""``snapshots:DIR``: a JPEG of each frame that raised events, with the tracked boxes drawn."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import cv2
import numpy as np

from edge.detect.sinks.base import EventBatch, Sink
from edge.errors import SinkError

__all__ = ["SnapshotSink", "draw_detections"]

#: BGR colour of boxes and labels.
BOX_COLOR = (0, 255, 0)
TEXT_COLOR = (0, 0, 0)
DEFAULT_JPEG_QUALITY = 85
#: Snapshots kept by default; the oldest written by this sink are deleted beyond it.
DEFAULT_MAX_FILES = 1000


def draw_detections(image: np.ndarray, xyxy: np.ndarray, captions: list[str]) -> np.ndarray:
    """A BGR copy of ``image`` with one box and caption per row of ``xyxy`` (the input is untouched)."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 or image.shape[2] == 1 else image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for (x1, y1, x2, y2), caption in zip(np.asarray(xyxy).round().astype(int), captions):
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, thickness)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - base, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), BOX_COLOR, cv2.FILLED)
        cv2.putText(out, caption, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.5, TEXT_COLOR, 1, cv2.LINE_AA)
    return out


class SnapshotSink(Sink):
    """Write ``<frame_index>_<event_id>.jpg`` (id of the frame's first event) for frames that raised events.

    Args:
        directory: where to write (created if missing).
        quality: JPEG quality 1–100.
        max_files: keep at most this many snapshots written by this sink (oldest deleted first).

    Raises:
        SinkError: the directory cannot be created.
    """

    kind = "snapshots"

    def __init__(self, directory: str | Path, *, quality: int = DEFAULT_JPEG_QUALITY,
                 max_files: int = DEFAULT_MAX_FILES) -> None:
        super().__init__(f"snapshots:{directory}")
        if not 1 <= quality <= 100 or max_files < 1:
            raise ValueError(f"need 1 <= quality <= 100 and max_files >= 1, got {quality}, {max_files}")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create snapshot directory {self.directory}: {exc.strerror or exc}") from None
        self.quality, self.max_files = quality, max_files
        self._written: deque[Path] = deque()
        self.written = 0

    def emit(self, batch: EventBatch) -> None:
        if not batch.events:
            return
        d = batch.detections
        names = [batch.labels[c] if 0 <= c < len(batch.labels) else str(c) for c in d.class_id.tolist()]
        ids = d.tracker_id.tolist() if d.tracker_id is not None else [None] * len(d)
        captions = [f"{'' if t is None else f'#{t} '}{n} {s:.2f}" for t, n, s in zip(ids, names, d.score.tolist())]
        image = draw_detections(batch.frame.image, d.xyxy, captions)
        path = self.directory / f"{batch.frame.index:06d}_{batch.events[0].event_id}.jpg"
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise SinkError(f"JPEG encoding failed for snapshot {path}")
        try:
            path.write_bytes(data.tobytes())
        except OSError as exc:
            raise SinkError(f"cannot write snapshot {path}: {exc.strerror or exc}") from None
        self.written += 1
        self._written.append(path)
        while len(self._written) > self.max_files:
            self._written.popleft().unlink(missing_ok=True)

    def stats(self) -> dict:
        return {"written": self.written}
