"""YuNet face detector (libfacedetection / OpenCV ``FaceDetectorYN``), pure numpy decoding.

Input ``input`` float32 ``[1,3,H,W]``, BGR 0–255, H and W multiples of 32. Outputs per stride
``s``: ``cls_s``, ``obj_s`` ``[1,N,1]``, ``bbox_s`` ``[1,N,4]``, ``kps_s`` ``[1,N,10]`` with
``N = (H/s)·(W/s)`` cells in row-major order. Decoding copies OpenCV's
``modules/objdetect/src/face_detect.cpp``.

Pre-processing (the choice made here):

- **dynamic model** (``yunet_s_dynamic.onnx``): no resize. The image is padded with zeros on the
  bottom and right up to a multiple of 32, which is exactly what ``FaceDetectorYN`` does when
  its input size is set to the image size (its standard usage), so outputs match it.
- **fixed model** (``yunet_s_640x640.onnx``): the image is resized *keeping its aspect ratio* to
  fit 640×640 and padded with zeros on the bottom/right (the same padding ``FaceDetectorYN``
  applies), and boxes are scaled back. Stretching to 640×640 would distort faces.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.errors import EngineError
from edge.types import Detections
from edge.vision.face_detectors import (FaceDetector, _detections, check_bgr_image, letterbox,
                                        output_named, unletterbox)
from edge.vision.nms import nms

__all__ = ["YUNET_STRIDES", "YUNET_DIVISOR", "YUNET_NUM_LANDMARKS", "YuNetDetector", "decode_yunet"]

#: Feature-map strides of the three heads.
YUNET_STRIDES: tuple[int, ...] = (8, 16, 32)
#: Input height and width must be multiples of this (``FaceDetectorYN``'s ``padWithDivisor``).
YUNET_DIVISOR = 32
#: Landmarks: right eye, left eye, nose tip, right mouth corner, left mouth corner.
YUNET_NUM_LANDMARKS = 5
#: Defaults of the opencv_zoo YuNet demo (``FaceDetectorYN.create``'s own default score is 0.9).
YUNET_SCORE_THRESHOLD = 0.6
YUNET_NMS_THRESHOLD = 0.3
YUNET_TOP_K = 5000


def _round_up(x: int, d: int = YUNET_DIVISOR) -> int:
    return ((int(x) - 1) // d + 1) * d


def decode_yunet(outputs: dict[str, np.ndarray], input_hw: tuple[int, int], *,
                 score_threshold: float = YUNET_SCORE_THRESHOLD, nms_threshold: float = YUNET_NMS_THRESHOLD,
                 top_k: int = YUNET_TOP_K):
    """Decode YuNet's raw outputs into faces in input-tensor pixels.

    Args:
        outputs: ``{"cls_8": …, "obj_8": …, "bbox_8": …, "kps_8": …, …}`` for every stride.
        input_hw: ``(H, W)`` of the input tensor.
        score_threshold: minimum ``sqrt(cls · obj)``.
        nms_threshold: IoU above which a lower-scoring face is dropped.
        top_k: keep at most this many candidates before NMS (``NMSBoxes``' ``top_k``).

    Returns:
        ``(xyxy N×4, score N, landmarks N×5×2)`` as float64, highest score first.
    """
    h, w = input_hw
    boxes, scores, kps = [], [], []
    for s in YUNET_STRIDES:
        rows, cols = h // s, w // s
        n = rows * cols
        get = lambda k: np.asarray(output_named(outputs, f"{k}_{s}"), np.float64).reshape(n, -1)  # noqa: E731
        try:
            cls, obj, bbox, kp = get("cls")[:, 0], get("obj")[:, 0], get("bbox"), get("kps")
        except ValueError as e:
            raise EngineError(f"YuNet outputs of stride {s} do not have {n} = {rows}×{cols} cells "
                              f"for a {w}×{h} input ({e})") from None
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        idx = np.flatnonzero(score >= score_threshold)
        if not idx.size:
            continue
        grid = np.stack([idx % cols, idx // cols], axis=1).astype(np.float64)
        centre = (grid + bbox[idx, 0:2]) * s
        size = np.exp(bbox[idx, 2:4]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        scores.append(score[idx])
        kps.append((grid[:, None, :] + kp[idx].reshape(-1, YUNET_NUM_LANDMARKS, 2)) * s)
    if not scores:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, YUNET_NUM_LANDMARKS, 2))
    boxes_a, scores_a, kps_a = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
    keep = nms(boxes_a, scores_a, nms_threshold, top_k=top_k)
    return boxes_a[keep], scores_a[keep], kps_a[keep]


class YuNetDetector(FaceDetector):
    """YuNet on any engine; ``detect`` returns faces with 5 landmarks.

    Args:
        engine: an engine loaded from a YuNet ``.onnx`` (fixed or dynamic input).
        score_threshold: minimum score (0.6 as in the opencv_zoo demo).
        nms_threshold: NMS IoU threshold.
        top_k: candidates kept before NMS.
        input_size: ``(width, height)`` to letterbox into, for a dynamic model (rounded up to a
            multiple of 32); ``None`` runs at the image's own size. Must match a fixed model.
        owns_engine: close the engine with the detector.

    Example:
        >>> det = YuNetDetector(load_engine(path))              # doctest: +SKIP
        >>> faces = det.detect(image_bgr)                        # doctest: +SKIP
        >>> faces.keypoints[0, 0]   # right eye (x, y)           # doctest: +SKIP
    """

    num_keypoints = YUNET_NUM_LANDMARKS

    def __init__(self, engine, *, score_threshold: float = YUNET_SCORE_THRESHOLD,
                 nms_threshold: float = YUNET_NMS_THRESHOLD, top_k: int = YUNET_TOP_K,
                 input_size: tuple[int, int] | None = None,
                 owns_engine: bool = False) -> None:
        super().__init__(engine, owns_engine=owns_engine)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        info = engine.inputs[0]
        self.input_name = info.name
        if len(info.shape) != 4 or info.shape[1] not in (3, None):
            raise EngineError(f"YuNet expects an input [1,3,H,W], model input {info.name!r} is {info.shape}")
        fixed = info.shape[2:] if None not in info.shape[2:] else None
        if fixed is not None:
            fixed_wh = (int(fixed[1]), int(fixed[0]))
            if input_size is not None and tuple(input_size) != fixed_wh:
                raise ValueError(f"input_size {tuple(input_size)} differs from the model's fixed input {fixed_wh}")
            self.input_size = fixed_wh
        else:
            self.input_size = None if input_size is None else (_round_up(input_size[0]), _round_up(input_size[1]))
        self.fixed_input = fixed is not None

    def preprocess(self, image_bgr: np.ndarray):
        """Return ``(tensor [1,3,H,W] float32, scale, (pad_x, pad_y))``."""
        img = check_bgr_image(image_bgr)
        h, w = img.shape[:2]
        scale = 1.0
        target = self.input_size or (_round_up(w), _round_up(h))
        if self.input_size is None:  # pad bottom/right with zeros only, like FaceDetectorYN
            pad = (0, 0)
            padded = cv2.copyMakeBorder(img, 0, target[1] - h, 0, target[0] - w, cv2.BORDER_CONSTANT,
                                        value=0) if (w, h) != target else img
        else:
            padded, scale, pad = letterbox(img, target, center=False)
        tensor = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
        return tensor, scale, pad

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Detect faces in a ``uint8`` BGR image; boxes and landmarks in its pixels."""
        tensor, scale, pad = self.preprocess(image_bgr)
        outputs = self.engine.run({self.input_name: tensor})
        xyxy, score, kps = decode_yunet(outputs, tensor.shape[2:], score_threshold=self.score_threshold,
                                        nms_threshold=self.nms_threshold, top_k=self.top_k)
        return _detections(unletterbox(xyxy, scale, pad), score, unletterbox(kps, scale, pad))
