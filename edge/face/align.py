"""Similarity alignment of a face to the standard ArcFace 112×112 template from 5 landmarks.

The transform is the least-squares similarity (rotation, uniform scale, translation) of
Umeyama (1991), estimated in closed form from the 5 point pairs — exactly what OpenCV's
``FaceRecognizerSF::alignCrop`` computes (``modules/objdetect/src/face_recognize.cpp``,
``getSimilarityTransformMatrix``) before ``warpAffine`` with bilinear interpolation and a
zero border.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.errors import FaceError

__all__ = ["ARCFACE_112_TEMPLATE", "ALIGNED_SIZE", "similarity_transform", "align_face", "align_faces", "as_bgr",
           "transform_points"]

#: Side of the aligned crop, pixels.
ALIGNED_SIZE = 112
#: The InsightFace/ArcFace 5-point template for a 112×112 crop, in FaceDetectorYN landmark order
#: (right eye, left eye, nose tip, right mouth corner, left mouth corner; "right" = subject's
#: right = image left). Same values as OpenCV's ``alignCrop`` ``dst`` table.
ARCFACE_112_TEMPLATE = np.array(
    [[38.2946, 51.6963],
     [73.5318, 51.5014],
     [56.0252, 71.7366],
     [41.5493, 92.3655],
     [70.7299, 92.2041]], dtype=np.float32)
ARCFACE_112_TEMPLATE.setflags(write=False)


def _check_points(points, what: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (5, 2):
        raise FaceError(f"{what} must be 5×2 (x, y) landmarks, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise FaceError(f"{what} contain non-finite values")
    return p


def similarity_transform(src, dst=ARCFACE_112_TEMPLATE) -> np.ndarray:
    """The 2×3 similarity matrix mapping ``src`` points onto ``dst`` (Umeyama, no reflection).

    Args:
        src: 5×2 source landmarks (image pixels).
        dst: 5×2 destination landmarks (template pixels).

    Returns:
        ``float64`` 2×3 matrix ``M`` with ``dst ≈ M @ [x, y, 1]``.

    Raises:
        FaceError: wrong shapes, or degenerate (coincident) landmarks.
    """
    s = _check_points(src, "source landmarks")
    d = _check_points(dst, "template landmarks")
    mu_s, mu_d = s.mean(0), d.mean(0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc ** 2).sum() / len(s))
    if var_s < 1e-12:
        raise FaceError("degenerate landmarks: all 5 points coincide")
    cov = dc.T @ sc / len(s)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(cov) < 0:  # a reflection: flip the smallest singular direction
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    scale = float((sig * np.diag(fix)).sum() / var_s)
    m = np.empty((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(matrix, points) -> np.ndarray:
    """Apply a 2×3 affine matrix to ``N×2`` points."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    m = np.asarray(matrix, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def align_face(image_bgr: np.ndarray, landmarks5, *, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Warp a face onto the ArcFace template: a ``size×size×3`` BGR crop.

    Args:
        image_bgr: ``uint8`` ``H×W×3`` image (``H×W`` gray is accepted and expanded).
        landmarks5: 5×2 landmarks in FaceDetectorYN order, image pixels.
        size: output side; the template is scaled by ``size / 112``.

    Returns:
        ``uint8`` ``size×size×3`` aligned crop (zero outside the image, as OpenCV).

    Raises:
        FaceError: bad image or landmarks.

    Example:
        >>> crop = align_face(img, faces.keypoints[0])          # doctest: +SKIP
        >>> crop.shape
        (112, 112, 3)                                           # doctest: +SKIP
    """
    img = as_bgr(image_bgr)
    dst = ARCFACE_112_TEMPLATE * (size / ALIGNED_SIZE)
    m = similarity_transform(landmarks5, dst)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def align_faces(image_bgr: np.ndarray, landmarks, *, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Align every face of ``landmarks`` (``N×5×2``) into an ``N×size×size×3`` batch."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (5, 2):
        raise FaceError(f"landmarks must be N×5×2, got shape {lm.shape}")
    if not len(lm):
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align_face(image_bgr, p, size=size) for p in lm])


def as_bgr(image) -> np.ndarray:
    """``image`` as H×W×3 BGR uint8 (gray is expanded); a clear FaceError for anything else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise FaceError(f"image must be a uint8 numpy array, got "
                        f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) == 0:
        raise FaceError(f"image must be H×W×3 BGR or H×W gray, got shape {image.shape}")
    return image
