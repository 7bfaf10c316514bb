"""Cosine matching of face embeddings against enrolled templates, with card thresholds.

Thresholds are never invented here: they come from the embedder's model card
(``card.thresholds.cosine_at_far[str(far)]``), derived offline on labelled pairs. A missing
operating point raises :class:`edge.errors.ThresholdMissingError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge.errors import StaleTemplateError, ThresholdMissingError
from edge.face.types import FaceEmbedding, MatchResult

__all__ = ["cosine_similarity", "threshold_for", "available_fars", "check_same_model", "match"]

THRESHOLD_KEY = "cosine_at_far"
NO_MATCH_SIMILARITY = -1.0


def cosine_similarity(a, b) -> float:
    """Cosine similarity of two vectors or :class:`FaceEmbedding` objects.

    Raises:
        StaleTemplateError: both are embeddings but from different models.
        ValueError: the vectors differ in length or one is zero.
    """
    if isinstance(a, FaceEmbedding) and isinstance(b, FaceEmbedding):
        check_same_model(a, b)
    va = np.asarray(a.vector if isinstance(a, FaceEmbedding) else a, np.float32).reshape(-1)
    vb = np.asarray(b.vector if isinstance(b, FaceEmbedding) else b, np.float32).reshape(-1)
    if va.shape != vb.shape:
        raise ValueError(f"cannot compare embeddings of length {va.size} and {vb.size}")
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        raise ValueError("cannot compare a zero vector")
    return float(np.dot(va, vb) / (na * nb))


def _far_key(far: float | str) -> str:
    return str(far) if isinstance(far, str) else repr(float(far))


def available_fars(card) -> tuple[str, ...]:
    """The FAR operating points a card carries thresholds for (as written in the card)."""
    return tuple(card.thresholds.cosine_at_far or {})


def threshold_for(card, target_far: float | str) -> float:
    """The cosine threshold of ``card`` at the false-accept rate ``target_far``.

    Args:
        card: an embedder :class:`edge.cards.ModelCard` with
            ``thresholds.cosine_at_far = {"0.01": t1, "0.001": t2}``.
        target_far: e.g. ``1e-3`` or ``"0.001"``.

    Raises:
        ThresholdMissingError: the card has no threshold for that FAR (never a silent default).
    """
    table = card.thresholds.cosine_at_far
    if not table:
        raise ThresholdMissingError(
            f"model card {card.name!r} carries no thresholds.{THRESHOLD_KEY}; derive them on "
            "labelled pairs (edge eval faces) and add them to the card"
        )
    want = float(target_far)
    for key, value in table.items():
        try:
            if float(key) == want:
                return float(value)
        except ValueError:
            continue
    raise ThresholdMissingError(
        f"model card {card.name!r} has no cosine threshold at FAR {_far_key(target_far)}; "
        f"available: {', '.join(table)}"
    )


def check_same_model(a: FaceEmbedding, b: FaceEmbedding) -> None:
    """Raise :class:`StaleTemplateError` unless ``a`` and ``b`` come from the same model file."""
    if a.model_id != b.model_id or a.model_sha256 != b.model_sha256:
        raise StaleTemplateError(
            f"embedding from {a.model_id} (sha256 {a.model_sha256[:12]}…) cannot be compared with "
            f"a template from {b.model_id} (sha256 {b.model_sha256[:12]}…); re-enrol with the current model"
        )


def match(
    embedding: FaceEmbedding,
    templates: Mapping[str, Sequence[FaceEmbedding]],
    threshold: float,
) -> MatchResult:
    """Best match of ``embedding`` among every user's templates.

    The similarity to a user is the maximum over that user's templates. The decision is
    ``similarity >= threshold``.

    Args:
        embedding: the probe.
        templates: ``{user: [FaceEmbedding, ...]}``.
        threshold: cosine threshold (see :func:`threshold_for`).

    Returns:
        The best user and its similarity; ``user=None`` and similarity ``-1`` when there are no
        templates at all.

    Raises:
        StaleTemplateError: a template was made by a different model (id or sha256) than the
            probe; nothing is compared.
    """
    for user, items in templates.items():
        for t in items:
            if t.model_id != embedding.model_id or t.model_sha256 != embedding.model_sha256:
                raise StaleTemplateError(
                    f"template of user {user!r} was enrolled with {t.model_id} "
                    f"(sha256 {t.model_sha256[:12]}…) but the probe comes from {embedding.model_id} "
                    f"(sha256 {embedding.model_sha256[:12]}…); re-enrol {user!r}"
                )
    best_user, best = None, NO_MATCH_SIMILARITY
    probe = embedding.vector
    for user, items in templates.items():
        if not items:
            continue
        mat = np.stack([t.vector for t in items])
        if mat.shape[1] != probe.shape[0]:
            raise StaleTemplateError(f"template of user {user!r} has dimension {mat.shape[1]}, probe {probe.shape[0]}")
        sim = float(np.max(mat @ probe))
        if sim > best:
            best_user, best = user, sim
    return MatchResult(similarity=best, threshold=float(threshold), accepted=best_user is not None and best >= threshold, user=best_user)
