"""The gate of each role: one place that knows every gate class (base and classifier/detector
gates in :mod:`export.gates`, face gates in :mod:`export.gates_face`)."""

from __future__ import annotations

from pathlib import Path

from edge.cards import ModelCard
from export.gates import ClassifierGate, DetectorGate, Gate, GateLimits
from export.gates_face import FaceDetectorGate, FaceEmbedderGate, LivenessGate
from export.roles import Role


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
