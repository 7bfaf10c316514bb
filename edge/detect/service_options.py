"""Options, run summary and frame policy of :class:`edge.detect.service.DetectionService`,
and the JPEG crop attached to events when asked."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import cv2
import numpy as np

from edge.sources.files import ImageFileSource, ImageFolderSource, VideoFileSource

__all__ = ["FRAME_POLICIES", "EVENT_IMAGE_QUALITY", "ServiceOptions", "ServiceSummary", "frame_policy_for",
           "crop_jpeg_b64"]

FRAME_POLICIES = ("auto", "latest", "all")
#: JPEG quality of the crops attached to events with ``event_image``.
EVENT_IMAGE_QUALITY = 80


def frame_policy_for(source) -> str:
    """``all`` for recorded material (files, folders, videos), ``latest`` for live sources."""
    return "all" if isinstance(source, (ImageFileSource, ImageFolderSource, VideoFileSource)) else "latest"


@dataclass(frozen=True)
class ServiceOptions:
    """How the service runs.

    Attributes:
        frame_policy: ``auto`` (see :func:`frame_policy_for`), ``latest`` or ``all``.
        frame_queue: captured frames buffered with the ``all`` policy (``latest`` holds one).
        batch_queue: frame results waiting for the sinks, at most.
        health_port: port of the ``/health`` + ``/metrics`` endpoint; None: no endpoint; 0: any free port.
        health_host: address of that endpoint.
        drain_timeout: seconds each sink may take at shutdown to deliver what it holds.
        event_image: attach a base64 JPEG crop of the box to every event.
        device: device name written into every event (overrides the zone monitor's).
    """

    frame_policy: str = "auto"
    frame_queue: int = 2
    batch_queue: int = 64
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    drain_timeout: float = 5.0
    event_image: bool = False
    device: str = ""

    def __post_init__(self) -> None:
        if self.frame_policy not in FRAME_POLICIES:
            raise ValueError(f"frame_policy must be one of {FRAME_POLICIES}, got {self.frame_policy!r}")
        if self.frame_queue < 1 or self.batch_queue < 1 or self.drain_timeout < 0:
            raise ValueError("frame_queue and batch_queue must be >= 1 and drain_timeout >= 0")


@dataclass(frozen=True)
class ServiceSummary:
    """What a finished run did (also the final ``/metrics``)."""

    frames_captured: int
    frames_processed: int
    frames_dropped: int
    events: int
    stopped_by_request: bool
    metrics: dict


def crop_jpeg_b64(image: np.ndarray, box: tuple[float, float, float, float]) -> str | None:
    h, w = image.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 <= x1 or y2 <= y1:
        return None
    ok, data = cv2.imencode(".jpg", image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, EVENT_IMAGE_QUALITY])
    return base64.b64encode(data.tobytes()).decode("ascii") if ok else None
