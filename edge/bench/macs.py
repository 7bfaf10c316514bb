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
        source: ``"onnx-graph"``, ``"tflite-ops"`` or ``"card"``.
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
