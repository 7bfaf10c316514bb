"""Enrolment: keep the K best good, live, mutually different face samples and store them as templates.

A frame is a candidate only if it shows exactly one face that passes the quality checks of
:mod:`edge.face.quality` (size, sharpness, exposure, near-frontal pose, thresholds from the
profile's ``[quality]`` table) and passes liveness. From a finite source (a photo, a folder of
photos, a video file) every frame is read; from a camera, frames are read until K candidates are
found. The candidates are ranked by :func:`~edge.face.quality.quality_score` and taken best
first, skipping any too similar to one already taken (cosine at or above
:attr:`EnrollPolicy.distinct_cosine`: five copies of the same frame would make five identical
templates and no better matching than one). Enrolment is refused only when fewer than
:attr:`EnrollPolicy.min_samples` (the profile's ``unlock.enroll_min``) remain.
Before anything is stored, the samples are matched against every other enrolled user at the
verification threshold; a face that already unlocks someone else is refused unless
``allow_duplicate`` is set (two accounts of one person).

The source can be a camera or a folder of a person's photos (each photo one frame).

Example:
    >>> with open_source("photos/alice/") as frames:                       # doctest: +SKIP
    ...     result = enroll("alice", pipeline, frames, store, threshold=0.42)
    >>> result.record.vectors.shape                                        # doctest: +SKIP
    (5, 128)
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import EnrollmentError, StaleTemplateError, UserExistsError
from edge.face.match import match
from edge.face.types import FaceEmbedding, FaceObservation, MatchResult
from edge.types import Frame
from edge.unlock.store import TemplateRecord, TemplateStore

__all__ = ["EnrollPolicy", "SampleVerdict", "EnrollResult", "collect_samples", "enroll",
           "record_embeddings"]

#: JPEG quality of the face crops kept when the user opts in to storing images.
CROP_JPEG_QUALITY = 90

# Reasons a frame gives no sample (shown by --explain and in the error message).
R_KEPT, R_NO_FACE, R_MANY_FACES, R_LIVENESS, R_NO_LIVENESS, R_SIMILAR = (
    "kept", "no_face", "several_faces", "liveness", "liveness_not_checked", "too_similar")
#: A good sample left out because K better ones were kept.
R_RANKED_OUT = "ranked_out"
R_QUALITY = "quality"


@dataclass(frozen=True)
class EnrollPolicy:
    """How enrolment collects samples.

    Attributes:
        samples: K, the number of samples to keep (the best ones).
        min_samples: the fewest good samples enrolment accepts (``None``: ``samples``).
        distinct_cosine: a new sample must have cosine similarity below this to every kept one.
        require_liveness: every sample must pass liveness (False only with ``--no-liveness``).
        allow_duplicate: store a face that already matches another enrolled user.
        keep_images: also store the aligned face crops (encrypted). Off by default.
        timeout_s: give up after this many seconds (None: when the source ends).
        max_frames: give up after this many frames (None: no limit).
    """

    samples: int = 5
    min_samples: int | None = None
    distinct_cosine: float = 0.98
    require_liveness: bool = True
    allow_duplicate: bool = False
    keep_images: bool = False
    timeout_s: float | None = 60.0
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.min_samples is not None and not 1 <= self.min_samples:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if not -1.0 < self.distinct_cosine <= 1.0:
            raise ValueError(f"distinct_cosine must be in (-1, 1], got {self.distinct_cosine}")


@dataclass(frozen=True)
class SampleVerdict:
    """Why one frame was kept or skipped."""

    index: int
    source: str
    reason: str
    faces: int
    quality_reasons: tuple[str, ...] = ()
    liveness_score: float | None = None
    max_similarity_to_kept: float | None = None
    timings_ms: dict = dataclasses.field(default_factory=dict, compare=False)
    quality_texts: tuple[str, ...] = ()
    quality_score: float | None = None
    liveness_detail: str = ""

    def explain(self) -> str:
        """Why this frame or photo was kept or skipped, in words with figures (``--explain``)."""
        why = {R_KEPT: "kept", R_NO_FACE: "no face", R_MANY_FACES: f"several faces ({self.faces})",
               R_LIVENESS: f"liveness failed ({self.liveness_detail})",
               R_NO_LIVENESS: "liveness not checked", R_RANKED_OUT: "good, but not among the best",
               R_SIMILAR: f"too similar to a kept sample (cosine {self.max_similarity_to_kept or 0:.3f})",
               R_QUALITY: "; ".join(self.quality_texts) or "quality"}.get(self.reason, self.reason)
        score = "" if self.quality_score is None else f" (quality score {self.quality_score:.2f})"
        return f"{self.source}: {why}{score if self.reason in (R_KEPT, R_RANKED_OUT, R_SIMILAR) else ''}"


@dataclass(frozen=True)
class EnrollResult:
    """The stored record and how each frame was judged."""

    record: TemplateRecord
    verdicts: tuple[SampleVerdict, ...]
    duplicate_of: MatchResult | None = None
    replaced: bool = False


def _judge(face: FaceObservation | None, n_faces: int, policy: EnrollPolicy) -> str:
    if n_faces == 0 or face is None:
        return R_NO_FACE
    if n_faces > 1:
        return R_MANY_FACES
    if not face.quality.ok:
        return R_QUALITY
    if policy.require_liveness:
        if face.liveness is None:
            return R_NO_LIVENESS
        if not face.liveness.live:
            return R_LIVENESS
    if face.embedding is None:
        raise EnrollmentError("the face pipeline returned no embedding; enrolment needs one")
    return R_KEPT


def _crop_jpeg(frame: Frame, face: FaceObservation) -> bytes:
    from edge.face.align import align_face

    image = frame.image if frame.image.ndim == 3 else cv2.cvtColor(frame.image, cv2.COLOR_GRAY2BGR)
    ok, buf = cv2.imencode(".jpg", align_face(image, face.landmarks),
                           [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    if not ok:
        raise EnrollmentError("could not encode the face crop as JPEG")
    return buf.tobytes()


def _is_stills(frames) -> bool:
    """Photos (a file, a folder, or a list of uploaded photos): each is its own liveness attempt."""
    from edge.sources import ImageFileSource, ImageFolderSource

    return isinstance(frames, (ImageFileSource, ImageFolderSource, list, tuple))


def _is_finite(frames) -> bool:
    from edge.sources import VideoFileSource

    return _is_stills(frames) or isinstance(frames, VideoFileSource)


def collect_samples(pipeline, frames: Iterable[Frame], policy: EnrollPolicy = EnrollPolicy(), *,
                    clock: Callable[[], float] = time.monotonic
                    ) -> tuple[list[FaceEmbedding], list[bytes], list[SampleVerdict]]:
    """Read the frames and keep the ``policy.samples`` best distinct good ones.

    Each photo of a folder is its own liveness attempt (a still); a camera or video is one.

    Returns:
        ``(embeddings, crops, verdicts)``: crops are JPEG bytes only if ``keep_images``;
        one verdict per frame, in reading order.

    Raises:
        EnrollmentError: fewer than ``policy.min_samples`` good distinct samples before the
            source ended, the timeout or the frame limit; the message counts the reasons
            frames were skipped.
    """
    from edge.face.liveness_modes import begin_attempt, describe
    from edge.face.quality import quality_score, reason_texts

    stills, read_all = _is_stills(frames), _is_finite(frames)
    need = policy.samples if policy.min_samples is None else min(policy.min_samples, policy.samples)
    verdicts: list[SampleVerdict] = []
    candidates: list[tuple[float, int, Frame, FaceObservation]] = []
    start = clock()
    stop_reason = "the source ended"
    if not stills:
        begin_attempt(getattr(pipeline, "liveness", None))
    for frame in frames:
        if stills:
            begin_attempt(getattr(pipeline, "liveness", None), still=True)
        analysis = pipeline.analyze(frame)
        face = analysis.largest
        reason = _judge(face, len(analysis.faces), policy)
        single = face is not None and len(analysis.faces) == 1
        score = quality_score(face.quality, pipeline.quality) if reason == R_KEPT else None
        verdicts.append(SampleVerdict(
            frame.index, str(frame.metadata.get("path", frame.source_id)), reason, len(analysis.faces),
            tuple(face.quality.reasons) if single else (),
            None if face is None or face.liveness is None else float(face.liveness.score), None,
            dict(analysis.timings_ms), tuple(reason_texts(face.quality, pipeline.quality)) if single else (),
            score, describe(face.liveness) if single else ""))
        if reason == R_KEPT:
            candidates.append((score, len(verdicts) - 1, frame, face))
            if not read_all and len(candidates) >= policy.samples:
                break
        if policy.timeout_s is not None and clock() - start > policy.timeout_s:
            stop_reason = f"the {policy.timeout_s:g} s timeout was reached"
            break
        if policy.max_frames is not None and len(verdicts) >= policy.max_frames:
            stop_reason = f"{policy.max_frames} frames were examined"
            break
    kept: list[FaceEmbedding] = []
    crops: list[bytes] = []
    for score, i, frame, face in sorted(candidates, key=lambda c: (-c[0], c[1])):
        best = None
        if kept:
            best = float((np.stack([k.vector for k in kept]) @ face.embedding.vector).max())
        if len(kept) >= policy.samples:
            reason = R_RANKED_OUT
        elif best is not None and best >= policy.distinct_cosine:
            reason = R_SIMILAR
        else:
            reason = R_KEPT
            kept.append(face.embedding)
            if policy.keep_images:
                crops.append(_crop_jpeg(frame, face))
        verdicts[i] = dataclasses.replace(verdicts[i], reason=reason, max_similarity_to_kept=best)
    if len(kept) >= need:
        return kept, crops, verdicts
    counts = Counter(v.reason if v.reason != R_QUALITY else f"quality:{'+'.join(v.quality_reasons)}"
                     for v in verdicts if v.reason != R_KEPT)
    why = ", ".join(f"{k} ×{n}" for k, n in counts.most_common()) or "no frames"
    error = EnrollmentError(f"only {len(kept)} of {policy.samples} good samples (at least {need} needed) "
                            f"before {stop_reason} ({len(verdicts)} frames; skipped: {why})")
    error.verdicts = tuple(verdicts)  # for --explain
    raise error


def record_embeddings(record: TemplateRecord) -> list[FaceEmbedding]:
    """A record's vectors as :class:`FaceEmbedding` objects bound to the record's model."""
    return [FaceEmbedding(v, record.model_id, record.model_sha256) for v in record.vectors]


def _find_duplicate(user: str, samples: list[FaceEmbedding], store: TemplateStore,
                    threshold: float) -> MatchResult | None:
    listing = store.load_all()
    model_id, sha = samples[0].model_id, samples[0].model_sha256
    others = {r.user: record_embeddings(r) for r in listing.records
              if r.user != user and not r.is_stale(model_id, sha)}
    if not others:
        return None
    best: MatchResult | None = None
    for s in samples:
        try:
            result = match(s, others, threshold)
        except StaleTemplateError:  # pragma: no cover - stale records were filtered out above
            continue
        if result.accepted and (best is None or result.similarity > best.similarity):
            best = result
    return best


def enroll(user: str, pipeline, frames: Iterable[Frame], store: TemplateStore, *, threshold: float,
           policy: EnrollPolicy = EnrollPolicy(), replace: bool = False, add: bool = False,
           clock: Callable[[], float] = time.monotonic) -> EnrollResult:
    """Collect samples of ``user`` from ``frames`` and store them.

    Args:
        user: the user name.
        pipeline: a :class:`edge.face.pipeline.FacePipeline` (liveness configured unless
            ``policy.require_liveness`` is False).
        frames: an iterable of :class:`Frame` (an opened source).
        store: the template store.
        threshold: the verification threshold (used to refuse a face of another user).
        policy: sampling policy.
        replace: overwrite an existing enrolment of ``user``.
        add: add the samples to an existing enrolment (same embedder only).

    Raises:
        UserExistsError: ``user`` is enrolled and neither ``replace`` nor ``add`` is set (checked
            before any frame is read).
        EnrollmentError: too few good samples, or the face matches another user.
        StaleEnrollmentError: ``add`` to a record made by another embedder.
    """
    exists = store.exists(user)
    if exists and not (replace or add):
        raise UserExistsError(f"user {user!r} is already enrolled; use --replace to re-enrol "
                              f"or --add to add samples")
    # --replace must work even when the old record is damaged, so it is only read for --add.
    existing = store.load(user) if exists and add else None
    if existing is not None:  # adding to another embedder's templates: StaleEnrollmentError
        store.templates_for(user, pipeline.embedder.model_id, pipeline.embedder.model_sha256)
    embeddings, crops, verdicts = collect_samples(pipeline, frames, policy, clock=clock)
    model_id, sha = embeddings[0].model_id, embeddings[0].model_sha256
    duplicate = _find_duplicate(user, embeddings, store, threshold)
    if duplicate is not None and not policy.allow_duplicate:
        raise EnrollmentError(f"this face already matches enrolled user {duplicate.user!r} "
                              f"(similarity {duplicate.similarity:.3f} >= threshold {duplicate.threshold:.3f}); "
                              f"refusing to enrol it as {user!r} (--allow-duplicate overrides)")
    vectors = np.stack([e.vector for e in embeddings])

    def added_to(current: TemplateRecord | None) -> TemplateRecord:
        # Under the store lock: ``current`` holds every sample written so far, also by
        # enrolments that ran at the same time as this one.
        now = time.time()
        if current is None:
            return TemplateRecord(user, model_id, sha, vectors, tuple(crops), now, now)
        store.templates_for(user, model_id, sha)  # another embedder's templates: StaleEnrollmentError
        return TemplateRecord(user, model_id, sha, np.concatenate([current.vectors, vectors]),
                              current.images + tuple(crops), current.created, now)

    if add:
        record = store.update(user, added_to)
    else:
        now = time.time()
        record = TemplateRecord(user, model_id, sha, vectors, tuple(crops), now, now)
        try:  # a new user enrolled meanwhile by another enrolment is refused, not overwritten
            store.save(record, replace=replace)
        except UserExistsError as e:
            raise UserExistsError(f"user {user!r} was enrolled by another enrolment while this one "
                                  f"ran; nothing was written (use --add to add these samples)") from e
    return EnrollResult(record, tuple(verdicts), duplicate, replaced=exists and not add)
