"""Is a face good enough to enrol or verify? Size, sharpness, exposure and pose from landmarks.

All checks run on cheap inputs the pipeline already has: the detector's box and 5 landmarks and
the aligned 112×112 crop. Pose comes from the landmarks alone (no 3-D model), so yaw and pitch
are approximations good to about ±10° near frontal — enough to reject a profile view, not to
measure head pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import FaceError
from edge.face.types import QualityReport

__all__ = ["QualityConfig", "assess", "estimate_pose", "sharpness", "exposure", "reason_texts", "quality_score",
           "REASON_SMALL", "REASON_BLUR", "REASON_DARK", "REASON_BRIGHT", "REASON_CLIPPED",
           "REASON_YAW", "REASON_PITCH", "REASON_ROLL"]

REASON_SMALL = "too_small"
REASON_BLUR = "blurry"
REASON_DARK = "too_dark"
REASON_BRIGHT = "too_bright"
REASON_CLIPPED = "clipped_exposure"
REASON_YAW = "yaw"
REASON_PITCH = "pitch"
REASON_ROLL = "roll"

#: Depth of the nose tip in front of the eyes, as a fraction of the inter-ocular distance
#: (anthropometric average ≈ 0.5). The nose's sideways offset from the eye midpoint, over the
#: (foreshortened) eye distance, is ``ratio · tan(yaw)``.
NOSE_DEPTH_PER_EYE_DISTANCE = 0.5
#: Nose depth over the eye-to-mouth height (≈ 0.35): the vertical analogue, for pitch.
NOSE_DEPTH_PER_FACE_HEIGHT = 0.35
#: Where the nose tip sits between the eye line (0) and the mouth line (1) on a frontal face, as
#: YuNet places the landmarks: the median over the LFW crops (near frontal) is 0.53 and over the
#: deepface portraits 0.59 (the ArcFace template's own proportion is 0.49).
FRONTAL_NOSE_POSITION = 0.55
#: Grey levels at or beyond which a pixel counts as clipped.
DARK_LEVEL, BRIGHT_LEVEL = 8, 247


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality checks (defaults suit a 640×480 door or laptop camera, and
    92×112-class face crops). A device profile's ``[quality]`` table sets them
    (:func:`edge.profile.quality_config`).

    Attributes:
        min_face_px: minimum shorter side of the face box, pixels (YuNet's box of a 92×112
            face is ~45-60 px; SFace and the liveness pair work from 40 px up).
        min_sharpness: minimum variance of the Laplacian of the aligned grey 112×112 crop.
            The deepface portraits score 700–3000; blurring the frame with a Gaussian of
            σ = face width / 60 brings the median to ~50. Webcam faces are softer than
            portraits, hence a threshold well under the sharp range.
        min_brightness: minimum mean grey level of the aligned crop.
        max_brightness: maximum mean grey level.
        max_clipped: maximum fraction of the face region's pixels ≤ 8 or ≥ 247 (the centre of
            the aligned crop, :data:`FACE_REGION`: a dark background is not counted).
        max_yaw: maximum |yaw|, degrees.
        max_pitch: maximum |pitch|, degrees.
        max_roll: maximum |roll|, degrees (alignment removes roll, but a strongly tilted head
            means the landmarks are less reliable).
    """

    min_face_px: float = 40.0
    min_sharpness: float = 80.0
    min_brightness: float = 50.0
    max_brightness: float = 210.0
    max_clipped: float = 0.25
    max_yaw: float = 25.0
    max_pitch: float = 25.0
    max_roll: float = 30.0


def sharpness(aligned_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (higher = sharper)."""
    grey = aligned_bgr if aligned_bgr.ndim == 2 else cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


#: The face itself within the aligned 112×112 crop (rows, columns): between the temples and
#: from the brows to the chin of the ArcFace template; the corners outside it are background.
FACE_REGION = (slice(24, 104), slice(22, 90))


def exposure(aligned_bgr: np.ndarray) -> tuple[float, float]:
    """``(mean grey level, fraction of clipped pixels)`` of the face region of the aligned crop."""
    grey = aligned_bgr if aligned_bgr.ndim == 2 else cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    if grey.shape[:2] == (112, 112):
        grey = grey[FACE_REGION]
    clipped = np.count_nonzero((grey <= DARK_LEVEL) | (grey >= BRIGHT_LEVEL)) / grey.size
    return float(grey.mean()), float(clipped)


def estimate_pose(landmarks5) -> tuple[float, float, float]:
    """Approximate ``(yaw, pitch, roll)`` in degrees from 5 FaceDetectorYN-order landmarks.

    Roll is the angle of the eye line. Yaw comes from the nose's sideways offset from the eye
    midpoint and pitch from the nose's height between the eye and mouth lines, both measured
    after undoing roll. Positive yaw: the nose points to image right; positive pitch: head down.

    Raises:
        FaceError: landmarks are not 5×2 or the eyes coincide.
    """
    p = np.asarray(landmarks5, np.float64)
    if p.shape != (5, 2):
        raise FaceError(f"landmarks must be 5×2, got shape {p.shape}")
    eye_r, eye_l, nose, mouth_r, mouth_l = p
    d = eye_l - eye_r
    eye_dist = float(np.hypot(*d))
    if eye_dist < 1e-6:
        raise FaceError("degenerate landmarks: the eyes coincide")
    roll = math.degrees(math.atan2(d[1], d[0]))
    c, s = d / eye_dist
    rot = np.array([[c, s], [-s, c]])  # undo roll
    q = (p - p[:2].mean(0)) @ rot.T
    offset = q[2, 0] / eye_dist
    yaw = math.degrees(math.atan2(offset, NOSE_DEPTH_PER_EYE_DISTANCE))
    mouth_y = q[3:, 1].mean()
    if abs(mouth_y) < 1e-6:
        pitch = 90.0
    else:
        rel = q[2, 1] / mouth_y - FRONTAL_NOSE_POSITION
        pitch = math.degrees(math.atan2(rel, NOSE_DEPTH_PER_FACE_HEIGHT))
    return yaw, pitch, roll


def assess(box, landmarks5, aligned_bgr: np.ndarray, config: QualityConfig = QualityConfig()) -> QualityReport:
    """Grade one face.

    Args:
        box: ``(x1, y1, x2, y2)`` face box in frame pixels.
        landmarks5: 5×2 landmarks in frame pixels.
        aligned_bgr: the aligned 112×112 crop of this face.
        config: thresholds.

    Returns:
        A :class:`QualityReport`; ``reasons`` lists every failed check.

    Example:
        >>> q = assess(box, kps, align_face(img, kps))           # doctest: +SKIP
        >>> q.ok, q.reasons
        (False, ('blurry',))                                     # doctest: +SKIP
    """
    b = np.asarray(box, np.float64).reshape(-1)
    if b.shape != (4,):
        raise FaceError(f"box must be (x1, y1, x2, y2), got shape {b.shape}")
    face_px = float(min(b[2] - b[0], b[3] - b[1]))
    sharp = sharpness(aligned_bgr)
    bright, clipped = exposure(aligned_bgr)
    yaw, pitch, roll = estimate_pose(landmarks5)
    checks = (
        (REASON_SMALL, face_px < config.min_face_px),
        (REASON_BLUR, sharp < config.min_sharpness),
        (REASON_DARK, bright < config.min_brightness),
        (REASON_BRIGHT, bright > config.max_brightness),
        (REASON_CLIPPED, clipped > config.max_clipped),
        (REASON_YAW, abs(yaw) > config.max_yaw),
        (REASON_PITCH, abs(pitch) > config.max_pitch),
        (REASON_ROLL, abs(roll) > config.max_roll),
    )
    reasons = tuple(name for name, failed in checks if failed)
    return QualityReport(face_px=face_px, sharpness=sharp, brightness=bright, yaw=yaw, pitch=pitch,
                         ok=not reasons, reasons=reasons, roll=roll, clipped=clipped)


def reason_texts(report: QualityReport, config: QualityConfig = QualityConfig()) -> list[str]:
    """Each failed check of ``report`` as a sentence with its figure and threshold (``--explain``)."""
    c, r = config, report
    texts = {
        REASON_SMALL: f"face too small: {r.face_px:.0f} px < {c.min_face_px:g}",
        REASON_BLUR: f"blurry: sharpness {r.sharpness:.0f} < {c.min_sharpness:g}",
        REASON_DARK: f"too dark: face mean {r.brightness:.0f} < {c.min_brightness:g}",
        REASON_BRIGHT: f"too bright: face mean {r.brightness:.0f} > {c.max_brightness:g}",
        REASON_CLIPPED: f"exposure clipped {100 * r.clipped:.0f} % > {100 * c.max_clipped:.0f} %",
        REASON_YAW: f"turned: yaw {r.yaw:.0f}° > {c.max_yaw:g}°",
        REASON_PITCH: f"tilted: pitch {r.pitch:.0f}° > {c.max_pitch:g}°",
        REASON_ROLL: f"rolled: {r.roll:.0f}° > {c.max_roll:g}°",
    }
    return [texts.get(reason, reason) for reason in r.reasons]


def quality_score(report: QualityReport, config: QualityConfig = QualityConfig()) -> float:
    """A figure to rank usable faces by (higher is better; about 0–5): size and sharpness above
    their minimum (capped), pose near frontal, little clipping."""
    c, r = config, report
    return float(min(r.face_px / c.min_face_px, 3.0) / 3.0 + min(r.sharpness / c.min_sharpness, 5.0) / 5.0
                 + max(0.0, 1.0 - abs(r.yaw) / c.max_yaw) + max(0.0, 1.0 - abs(r.pitch) / c.max_pitch)
                 + max(0.0, 1.0 - r.clipped / c.max_clipped))
