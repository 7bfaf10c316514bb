"""MediaPipe BlazeFace short range, pure numpy decoding.

Input ``[1,128,128,3]`` float RGB in [-1, 1]. Outputs ``regressors`` ``[1,896,16]`` and
``classificators`` ``[1,896,1]`` (logits). The constants are those of MediaPipe's
``mediapipe/modules/face_detection/face_detection_short_range.pbtxt``
(``SsdAnchorsCalculatorOptions`` and ``TensorsToDetectionsCalculatorOptions``).

Pre-processing (the choice made here, MediaPipe's own): the image is letterboxed to a square —
resized keeping its aspect ratio and padded with black *equally on both sides* — as
``ImageToTensorCalculator`` does with ``keep_aspect_ratio: true``; boxes are mapped back as
``DetectionLetterboxRemovalCalculator`` does. Stretching would squash faces in wide frames.

Keypoints (6, subject's own left/right): right eye, left eye, nose tip, mouth centre,
right ear tragion, left ear tragion.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.errors import EngineError
from edge.types import Detections
from edge.vision.face_detectors import FaceDetector, _detections, check_bgr_image, letterbox, unletterbox
from edge.vision.nms import weighted_nms

__all__ = ["BLAZEFACE_INPUT_SIZE", "BLAZEFACE_STRIDES", "BLAZEFACE_NUM_KEYPOINTS", "BlazeFaceDetector",
           "blazeface_anchors", "decode_blazeface"]

#: Square input side of the short-range model.
BLAZEFACE_INPUT_SIZE = 128
#: One SSD layer per stride; consecutive equal strides share a feature map.
BLAZEFACE_STRIDES: tuple[int, ...] = (8, 16, 16, 16)
#: Anchor centre offset within a cell.
BLAZEFACE_ANCHOR_OFFSET = 0.5
#: Anchors per layer and cell: aspect ratio 1.0 plus the interpolated-scale anchor.
BLAZEFACE_ANCHORS_PER_LAYER = 2
BLAZEFACE_NUM_ANCHORS = 896
BLAZEFACE_NUM_KEYPOINTS = 6
#: Box and keypoint regressions are in input pixels (``x_scale`` … ``h_scale``).
BLAZEFACE_SCALE = 128.0
#: Logits are clipped before the sigmoid (``score_clipping_thresh``).
BLAZEFACE_SCORE_CLIP = 100.0
BLAZEFACE_SCORE_THRESHOLD = 0.5
BLAZEFACE_NMS_THRESHOLD = 0.3


def blazeface_anchors(input_size: int = BLAZEFACE_INPUT_SIZE, strides=BLAZEFACE_STRIDES,
                      offset: float = BLAZEFACE_ANCHOR_OFFSET) -> np.ndarray:
    """MediaPipe SSD anchor centres with ``fixed_anchor_size`` (so every w = h = 1).

    Returns:
        ``float64`` ``A×2`` normalised ``(x_center, y_center)``, in MediaPipe's order: per
        feature map, rows, then columns, then anchors of the cell. 896 for the defaults.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n_per_cell = BLAZEFACE_ANCHORS_PER_LAYER * (j - i)
        fm = int(np.ceil(input_size / strides[i]))
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        cell = np.stack([(xs.ravel() + offset) / fm, (ys.ravel() + offset) / fm], axis=1)
        centres.append(np.repeat(cell, n_per_cell, axis=0))
        i = j
    return np.concatenate(centres)


_ANCHORS = blazeface_anchors()


def decode_blazeface(regressors: np.ndarray, logits: np.ndarray, *, anchors: np.ndarray = _ANCHORS,
                     score_threshold: float = BLAZEFACE_SCORE_THRESHOLD,
                     nms_threshold: float = BLAZEFACE_NMS_THRESHOLD):
    """Decode raw BlazeFace outputs into faces in normalised [0, 1] input coordinates.

    Args:
        regressors: ``[1,A,16]`` (x_center, y_center, w, h, then 6 × (x, y)), in 128-px units
            relative to the anchor centre.
        logits: ``[1,A,1]`` face logits.
        anchors: ``A×2`` anchor centres from :func:`blazeface_anchors`.
        score_threshold: minimum sigmoid score.
        nms_threshold: IoU for weighted NMS.

    Returns:
        ``(xyxy N×4, score N, keypoints N×6×2)`` float64, normalised to the input tensor.
    """
    a = anchors.shape[0]
    reg = np.asarray(regressors, np.float64).reshape(-1, 4 + 2 * BLAZEFACE_NUM_KEYPOINTS)
    raw = np.asarray(logits, np.float64).reshape(-1)
    if reg.shape[0] != a or raw.shape[0] != a:
        raise EngineError(f"BlazeFace outputs have {reg.shape[0]} boxes and {raw.shape[0]} scores, "
                          f"expected {a} (one per anchor)")
    score = 1.0 / (1.0 + np.exp(-np.clip(raw, -BLAZEFACE_SCORE_CLIP, BLAZEFACE_SCORE_CLIP)))
    idx = np.flatnonzero(score >= score_threshold)
    reg, score, anc = reg[idx] / BLAZEFACE_SCALE, score[idx], anchors[idx]
    centre = reg[:, 0:2] + anc  # anchor w = h = 1 (fixed_anchor_size)
    size = reg[:, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    kps = reg[:, 4:].reshape(-1, BLAZEFACE_NUM_KEYPOINTS, 2) + anc[:, None, :]
    boxes, score, kps, _ = weighted_nms(boxes, score, nms_threshold, keypoints=kps)
    return boxes, score, kps.reshape(-1, BLAZEFACE_NUM_KEYPOINTS, 2)


class BlazeFaceDetector(FaceDetector):
    """BlazeFace short range (faces within ~2 m of a selfie camera) with 6 keypoints.

    Args:
        engine: an engine loaded from ``blazeface_short_range.tflite``.
        score_threshold: minimum score (MediaPipe's ``min_score_thresh`` 0.5).
        nms_threshold: IoU for weighted NMS (0.3).
        owns_engine: close the engine with the detector.

    Example:
        >>> det = BlazeFaceDetector(load_engine(path))          # doctest: +SKIP
        >>> faces = det.detect(image_bgr)                        # doctest: +SKIP
    """

    num_keypoints = BLAZEFACE_NUM_KEYPOINTS

    def __init__(self, engine, *, score_threshold: float = BLAZEFACE_SCORE_THRESHOLD,
                 nms_threshold: float = BLAZEFACE_NMS_THRESHOLD, owns_engine: bool = False) -> None:
        super().__init__(engine, owns_engine=owns_engine)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        info = engine.inputs[0]
        want = (1, BLAZEFACE_INPUT_SIZE, BLAZEFACE_INPUT_SIZE, 3)
        if tuple(info.shape) != want:
            raise EngineError(f"BlazeFace short range expects input {want}, model input {info.name!r} is {info.shape}")
        self.input_name = info.name
        # Outputs are told apart by their last dimension (names differ between exports).
        by_last = {o.shape[-1]: o.name for o in engine.outputs}
        try:
            self._reg_name = by_last[4 + 2 * BLAZEFACE_NUM_KEYPOINTS]
            self._cls_name = by_last[1]
        except KeyError:
            raise EngineError(f"BlazeFace needs outputs […,16] and […,1], model has "
                              f"{[(o.name, o.shape) for o in engine.outputs]}") from None

    def preprocess(self, image_bgr: np.ndarray):
        """Return ``(tensor [1,128,128,3] float32 in [-1,1] RGB, scale, (pad_x, pad_y))``."""
        img = check_bgr_image(image_bgr)
        side = BLAZEFACE_INPUT_SIZE
        boxed, scale, pad = letterbox(img, (side, side), center=True)
        rgb = cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB)
        tensor = (rgb.astype(np.float32) / 127.5 - 1.0)[None]
        return tensor, scale, pad

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Detect faces in a ``uint8`` BGR image; boxes and keypoints in its pixels."""
        tensor, scale, pad = self.preprocess(image_bgr)
        out = self.engine.run({self.input_name: tensor})
        xyxy, score, kps = decode_blazeface(out[self._reg_name], out[self._cls_name],
                                            score_threshold=self.score_threshold,
                                            nms_threshold=self.nms_threshold)
        side = float(BLAZEFACE_INPUT_SIZE)
        return _detections(unletterbox(xyxy * side, scale, pad), score, unletterbox(kps * side, scale, pad))
