"""The multiply-accumulate count of one model, whoever counted it (ONNX graph, TFLite ops, card)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of one model.

    Attributes:
        total: MACs of one inference (batch as in the graph).
        by_precision: MACs per compute precision (``fp32`` / ``fp16`` / ``int8``).
        by_op: MACs per op type.
        uncounted: ops that should carry MACs but whose shapes could not be resolved.
        source: ``"card"`` (counted at export time), ``"card-scaled"`` (the card's figure scaled
            to another input size), ``"tflite-ops"``, ``"onnx-stated-shapes"`` (a bare ONNX file:
            a lower bound); ``"onnx-graph"`` in reports made before MAC counts moved to the cards.
    """

    total: int
    by_precision: dict = field(default_factory=dict)
    by_op: dict = field(default_factory=dict)
    uncounted: tuple = ()
    source: str = "onnx-graph"

    @property
    def precision(self) -> str:
        """The precision that carries most MACs."""
        if not self.by_precision:
            return "fp32"
        return max(self.by_precision.items(), key=lambda kv: kv[1])[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["uncounted"] = list(self.uncounted)
        d["precision"] = self.precision
        return d
