"""Object detection on the device: decoders, the :class:`Detector`, and (beside it) tracking,
zones, events and sinks.

Importing this package loads numpy and OpenCV only; inference runtimes are imported when a
detector is created.

Example:
    >>> from edge.detect import create_detector
    >>> with create_detector("yolox_nano_416", threads=2) as det:     # doctest: +SKIP
    ...     dets = det.detect(frame.image)
"""

from edge.detect.decoders import Candidates, finalize, make_decoder
from edge.detect.detector import Detector, Prepared, StageTimings, create_detector

__all__ = ["Detector", "Prepared", "StageTimings", "create_detector", "Candidates", "finalize", "make_decoder"]
