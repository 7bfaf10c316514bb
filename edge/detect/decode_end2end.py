"""Decoder of NMS-free ("end-to-end") detectors: Ultralytics YOLO26 / YOLOv10 heads. Pure numpy.

The head already picked its best ``K`` (300) detections: the output is ``[1, K, 6]`` with rows
``(x1, y1, x2, y2, score, class_index)`` in model-input pixels, best first. Decoding is a score
threshold and nothing else: no NMS (the one-to-one head was trained not to need it, and running
NMS anyway would change the model's answer). :class:`End2EndDecoder` sets ``nms_free`` so the
:class:`~edge.detect.detector.Detector` skips its NMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.detect.decoders import Candidates
from edge.errors import DetectorOutputError

__all__ = ["decode_end2end", "End2EndDecoder", "END2END_COLUMNS"]

#: Columns of one end-to-end detection row.
END2END_COLUMNS = 6


def decode_end2end(pred: np.ndarray, *, score_threshold: float = 0.0, num_classes: int | None = None) -> Candidates:
    """Rows of a ``[1, K, 6]`` (or ``[K, 6]``) end-to-end output above ``score_threshold``.

    Raises:
        DetectorOutputError: another shape, or a class index outside ``num_classes``.
    """
    a = np.asarray(pred)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[1] != END2END_COLUMNS:
        raise DetectorOutputError(f"end-to-end decoder: expected [1, K, {END2END_COLUMNS}] "
                                  f"(x1, y1, x2, y2, score, class), got {tuple(np.shape(pred))}")
    a = a.astype(np.float32, copy=False)
    keep = a[:, 4] > score_threshold
    rows = a[keep]
    cls = np.rint(rows[:, 5]).astype(np.int32)
    if num_classes is not None and cls.size and (cls.min() < 0 or cls.max() >= num_classes):
        raise DetectorOutputError(f"end-to-end decoder: class index {int(cls.max())} outside the card's "
                                  f"{num_classes} classes")
    return Candidates(np.ascontiguousarray(rows[:, :4]), np.ascontiguousarray(rows[:, 4]), cls)


@dataclass(frozen=True)
class End2EndDecoder:
    """:func:`decode_end2end` bound to a card's output name and class count; no NMS afterwards."""

    num_classes: int | None = None
    multi_label: bool = False  # accepted for a uniform constructor; each row already has one class
    output: str | None = None
    nms_free: bool = True

    def __call__(self, outputs, input_wh, score_threshold) -> Candidates:
        from edge.detect.decoders import _single_output

        pred = _single_output(outputs, self.output, "end-to-end decoder")
        return decode_end2end(pred, score_threshold=score_threshold, num_classes=self.num_classes)
