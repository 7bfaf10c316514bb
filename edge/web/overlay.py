"""The live view's picture: zones, lines, boxes, labels and track ids drawn on a (shrunk) frame."""

from __future__ import annotations

import cv2
import numpy as np

from edge.detect.sinks.snapshots import draw_detections
from edge.detect.zones import ZoneConfig

__all__ = ["render_overlay", "ZONE_COLOR", "LINE_COLOR"]

#: BGR colours of zone outlines and counting lines (boxes use the snapshot sink's colour).
ZONE_COLOR = (255, 160, 0)
LINE_COLOR = (0, 200, 255)


def _points(points, units: str, size: tuple[int, int], scale: float) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    if units == "relative":
        pts = pts * np.asarray(size, np.float64)
    return np.round(pts * scale).astype(np.int32)


def render_overlay(image: np.ndarray, xyxy: np.ndarray, captions: list[str], zones: ZoneConfig | None,
                   max_width: int | None = None) -> np.ndarray:
    """A BGR picture of ``image`` shrunk to at most ``max_width`` wide, with zones and detections drawn.

    ``xyxy`` and the zones are in the coordinates of ``image``; the input is not modified.
    """
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w) if max_width else 1.0
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                  interpolation=cv2.INTER_AREA)
    out = draw_detections(small, np.asarray(xyxy, np.float64).reshape(-1, 4) * scale, captions)
    if zones is not None:
        for z in zones.zones:
            if z.polygon is None:
                continue
            pts = _points(z.polygon, z.units, (w, h), scale)
            cv2.polylines(out, [pts.reshape(-1, 1, 2)], True, ZONE_COLOR, 2)
            cv2.putText(out, z.name, tuple(int(v) for v in pts[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ZONE_COLOR, 1,
                        cv2.LINE_AA)
        for ln in zones.lines:
            a, b = _points([ln.a, ln.b], ln.units, (w, h), scale)
            cv2.line(out, tuple(int(v) for v in a), tuple(int(v) for v in b), LINE_COLOR, 2)
            cv2.putText(out, ln.name, tuple(int(v) for v in a), cv2.FONT_HERSHEY_SIMPLEX, 0.5, LINE_COLOR, 1,
                        cv2.LINE_AA)
    return out
