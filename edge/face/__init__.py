"""Face recognition on the device: detect → align → quality → liveness → embed → match.

Public entry points:

* :func:`edge.face.pipeline.create_pipeline` / :class:`edge.face.pipeline.FacePipeline`
* :mod:`edge.face.types` — the frozen results (:class:`FaceEmbedding`, :class:`MatchResult`, ...)
* :mod:`edge.face.match` — cosine matching and card thresholds
"""

from edge.face.types import (
    FaceAnalysis,
    FaceEmbedding,
    FaceObservation,
    LivenessResult,
    MatchResult,
    QualityReport,
)

__all__ = [
    "FaceAnalysis",
    "FaceEmbedding",
    "FaceObservation",
    "LivenessResult",
    "MatchResult",
    "QualityReport",
]
