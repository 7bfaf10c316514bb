"""Ultra-Light-Fast-Generic-Face-Detector-1MB (RFB-320), pure numpy post-processing.

Input ``[1,3,240,320]`` RGB, ``(x − 127) / 128``. Outputs ``scores`` ``[1,4420,2]`` (already
softmaxed, column 1 = face) and ``boxes`` ``[1,4420,4]`` (already decoded, normalised
``x1,y1,x2,y2``). As in the upstream ``run_video_face_detect_onnx.py``, the image is resized to
320×240 without keeping its aspect ratio (the priors assume the full frame), boxes are scaled
back, and hard NMS runs on the 200 best candidates.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.errors import EngineError
from edge.types import Detections
from edge.vision.face_detectors import FaceDetector, _detections, check_bgr_image, output_named
from edge.vision.nms import nms

__all__ = ["ULFD_INPUT_SIZE", "UlfdDetector", "decode_ulfd"]

#: ``(width, height)`` of the RFB-320 input.
ULFD_INPUT_SIZE = (320, 240)
ULFD_MEAN = 127.0
ULFD_STD = 128.0
#: Column of the face class in ``scores``.
ULFD_FACE_COLUMN = 1
ULFD_SCORE_THRESHOLD = 0.7
ULFD_NMS_THRESHOLD = 0.3
#: Upstream ``hard_nms(candidate_size=200)``.
ULFD_CANDIDATES = 200


def decode_ulfd(scores: np.ndarray, boxes: np.ndarray, image_wh: tuple[int, int], *,
                score_threshold: float = ULFD_SCORE_THRESHOLD, nms_threshold: float = ULFD_NMS_THRESHOLD,
                top_k: int = ULFD_CANDIDATES):
    """Threshold, scale to ``image_wh`` pixels and NMS.

    Returns:
        ``(xyxy N×4, score N)`` float64, highest score first.
    """
    s = np.asarray(scores, np.float64).reshape(-1, 2)[:, ULFD_FACE_COLUMN]
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if s.shape[0] != b.shape[0]:
        raise EngineError(f"ULFD outputs disagree: {s.shape[0]} scores, {b.shape[0]} boxes")
    idx = np.flatnonzero(s > score_threshold)
    b = b[idx] * np.array([image_wh[0], image_wh[1]] * 2, np.float64)
    keep = nms(b, s[idx], nms_threshold, top_k=top_k)
    return b[keep], s[idx][keep]


class UlfdDetector(FaceDetector):
    """ULFD RFB-320: boxes only (``keypoints`` is ``None``).

    Args:
        engine: an engine loaded from ``ulfd_rfb_320.onnx``.
        score_threshold: minimum face probability (0.7 upstream).
        nms_threshold: NMS IoU (0.3 upstream).
        owns_engine: close the engine with the detector.
    """

    def __init__(self, engine, *, score_threshold: float = ULFD_SCORE_THRESHOLD,
                 nms_threshold: float = ULFD_NMS_THRESHOLD, owns_engine: bool = False) -> None:
        super().__init__(engine, owns_engine=owns_engine)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        info = engine.inputs[0]
        want = (1, 3, ULFD_INPUT_SIZE[1], ULFD_INPUT_SIZE[0])
        if tuple(info.shape) != want:
            raise EngineError(f"ULFD RFB-320 expects input {want}, model input {info.name!r} is {info.shape}")
        self.input_name = info.name

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        img = check_bgr_image(image_bgr)
        rgb = cv2.cvtColor(cv2.resize(img, ULFD_INPUT_SIZE), cv2.COLOR_BGR2RGB)
        x = (rgb.astype(np.float32) - ULFD_MEAN) / ULFD_STD
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Detect faces in a ``uint8`` BGR image; boxes in its pixels."""
        h, w = check_bgr_image(image_bgr).shape[:2]
        out = self.engine.run({self.input_name: self.preprocess(image_bgr)})
        xyxy, score = decode_ulfd(output_named(out, "scores"), output_named(out, "boxes"), (w, h),
                                  score_threshold=self.score_threshold, nms_threshold=self.nms_threshold)
        return _detections(xyxy, score, None)
