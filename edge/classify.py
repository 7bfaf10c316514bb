"""Image classification with a model card: preprocess, run, top-k. Pure numpy post-processing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.numeric import softmax
from edge.card_match import check_card_matches
from edge.cards import ModelCard
from edge.engines.base import Engine
from edge.preprocess import prepare


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    score: float


def top_k(scores: np.ndarray, k: int = 5, labels: list[str] | None = None, *, is_probability: bool = True) -> list[Prediction]:
    """The ``k`` best classes of a 1-D score vector (logits are softmaxed unless ``is_probability``)."""
    s = np.asarray(scores, np.float32).reshape(-1)
    p = s if is_probability else softmax(s)
    idx = np.argsort(-p, kind="stable")[:k]
    return [Prediction(int(i), labels[i] if labels is not None and i < len(labels) else str(int(i)), float(p[i]))
            for i in idx]


class Classifier:
    """Run a classification card on BGR images.

    Example:
        >>> clf = Classifier(engine, card, labels)            # doctest: +SKIP
        >>> clf.classify(image)[0].label
        'Egyptian cat'
    """

    def __init__(self, engine: Engine, card: ModelCard, labels: list[str] | None = None) -> None:
        if card.task != "classification":
            raise ValueError(f"card {card.name!r} is a {card.task} model, not a classifier")
        check_card_matches(card, engine)
        self.engine, self.card, self.labels = engine, card, labels
        self.spec = card.inputs[0]
        out_meaning = card.outputs[0].meaning.lower() if card.outputs else ""
        self._probabilities = "softmax" in out_meaning or "probabilit" in out_meaning

    def classify(self, image_bgr: np.ndarray, k: int = 5) -> list[Prediction]:
        x, _ = prepare(image_bgr, self.spec)
        out = self.engine.run({self.engine.inputs[0].name: x})
        scores = out[self.engine.outputs[0].name][0]
        return top_k(scores, k, self.labels, is_probability=self._probabilities)
