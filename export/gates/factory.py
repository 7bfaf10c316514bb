"""The gate of each role: one place that knows every gate class (one module per role in
:mod:`export.gates`, their base class in :mod:`export.gates.base`)."""

from __future__ import annotations

from pathlib import Path

from edge.cards import ModelCard
from export.gates.base import Gate, GateLimits
from export.gates.classifier import ClassifierGate
from export.gates.detector import DetectorGate
from export.gates.face_detector import FaceDetectorGate
from export.gates.face_embedder import FaceEmbedderGate
from export.gates.liveness import LivenessGate
from export.gates.roles import Role


def make_gate(role: Role | str, float_path: str | Path, card: ModelCard, limits: GateLimits = GateLimits(),
              **kwargs) -> Gate:
    """The gate for ``role`` (see :class:`Gate` for the keyword arguments).

    Raises:
        ValueError: unknown role.
    """
    classes: dict[Role, type[Gate]] = {Role.CLASSIFIER: ClassifierGate, Role.DETECTOR: DetectorGate,
                                       Role.FACE_DETECTOR: FaceDetectorGate, Role.FACE_EMBEDDER: FaceEmbedderGate,
                                       Role.LIVENESS: LivenessGate}
    return classes[Role(role)](float_path, card, limits, **kwargs)
