"""Frozen results that cross the boundary between the face pipeline and its users.

Every array held by these objects is made read-only, so a consumer (the unlock application,
a template store) can keep them without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FaceEmbedding",
    "MatchResult",
    "LivenessResult",
    "QualityReport",
    "FaceObservation",
    "FaceAnalysis",
]

_NORM_TOLERANCE = 1e-3


def _frozen(arr, dtype, shape: tuple | None, what: str) -> np.ndarray:
    a = np.array(arr, dtype=dtype, copy=True)
    if shape is not None and a.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {a.shape}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class FaceEmbedding:
    """An L2-normalised face embedding bound to the model that produced it.

    Attributes:
        vector: ``float32`` 1-D vector of unit L2 norm.
        model_id: the embedder's card name (e.g. ``"sface_2021dec_fp32"``).
        model_sha256: sha256 of the embedder model file (from its card).
    """

    vector: np.ndarray
    model_id: str
    model_sha256: str

    def __post_init__(self) -> None:
        v = np.array(self.vector, dtype=np.float32, copy=True).reshape(-1)
        if v.size == 0 or not np.all(np.isfinite(v)):
            raise ValueError("FaceEmbedding.vector must be a non-empty finite vector")
        norm = float(np.linalg.norm(v))
        if abs(norm - 1.0) > _NORM_TOLERANCE:
            raise ValueError(f"FaceEmbedding.vector must be L2-normalised, norm is {norm:.4f}")
        v.setflags(write=False)
        object.__setattr__(self, "vector", v)
        if not self.model_id:
            raise ValueError("FaceEmbedding.model_id must not be empty")

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    @classmethod
    def from_raw(cls, raw, model_id: str, model_sha256: str) -> "FaceEmbedding":
        """Build an embedding from an unnormalised feature vector.

        Raises:
            ValueError: the vector is zero or not finite.
        """
        v = np.asarray(raw, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("cannot normalise a zero or non-finite feature vector")
        return cls(v / norm, model_id, model_sha256)


@dataclass(frozen=True)
class MatchResult:
    """Outcome of comparing a probe embedding with enrolled templates.

    Attributes:
        similarity: best cosine similarity found (``-1.0`` when there were no templates).
        threshold: cosine threshold the decision used.
        accepted: ``similarity >= threshold``.
        user: the best-matching user, or ``None`` when nothing was compared.
    """

    similarity: float
    threshold: float
    accepted: bool
    user: str | None


@dataclass(frozen=True)
class LivenessResult:
    """Outcome of a liveness check.

    Attributes:
        score: probability-like score in ``[0, 1]``; higher means more likely live.
        live: the decision.
        method: ``"passive"``, ``"ir"``, ``"head_turn"``...
        detail: method-specific figures (per-model scores, reasons).
    """

    score: float
    live: bool
    method: str
    detail: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class QualityReport:
    """Quality of one face sample for enrolment/verification.

    Attributes:
        face_px: the shorter side of the face box in pixels.
        sharpness: variance of the Laplacian of the aligned grey crop.
        brightness: mean grey level of the aligned crop (0..255).
        yaw: approximate yaw from the landmarks, degrees (signed).
        pitch: approximate pitch from the landmarks, degrees (signed).
        ok: all checks passed.
        reasons: names of the failed checks (empty when ``ok``), e.g. ``"too_small"``.
        roll: in-plane rotation of the eye line, degrees (signed).
        clipped: fraction of the aligned crop's pixels that are under- or over-exposed.
    """

    face_px: float
    sharpness: float
    brightness: float
    yaw: float
    pitch: float
    ok: bool
    reasons: tuple[str, ...] = ()
    roll: float = 0.0
    clipped: float = 0.0


@dataclass(frozen=True)
class FaceObservation:
    """One detected face and everything the pipeline computed for it.

    Attributes:
        box: ``float32`` (4,) x1, y1, x2, y2 in frame pixels.
        landmarks: ``float32`` 5×2 (right eye, left eye, nose tip, right and left mouth corner,
            in FaceDetectorYN order; "right" is the subject's right = image left).
        det_score: detector confidence.
        quality: the quality report.
        liveness: liveness result, or ``None`` when no liveness check was configured.
        embedding: the embedding, or ``None`` when not computed.
    """

    box: np.ndarray
    landmarks: np.ndarray
    det_score: float
    quality: QualityReport
    liveness: LivenessResult | None = None
    embedding: FaceEmbedding | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", _frozen(self.box, np.float32, (4,), "FaceObservation.box"))
        object.__setattr__(
            self, "landmarks", _frozen(self.landmarks, np.float32, (5, 2), "FaceObservation.landmarks")
        )

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass(frozen=True)
class FaceAnalysis:
    """All faces found in one frame, largest first, with per-stage timings.

    Attributes:
        faces: observations, largest face first.
        timings_ms: milliseconds per stage (``detect``, ``align``, ``quality``, ``liveness``,
            ``embed``, ``total``).
        frame_shape: shape of the analysed image.
    """

    faces: tuple[FaceObservation, ...]
    timings_ms: dict
    frame_shape: tuple

    @property
    def largest(self) -> FaceObservation | None:
        return self.faces[0] if self.faces else None
