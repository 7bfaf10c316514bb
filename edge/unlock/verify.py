"""Verification: decide from a stream of frames whether the enrolled user is in front of the camera.

Each frame is analysed (detect → align → quality → liveness → embed); its largest face *passes*
when it matches the templates at the card's threshold **and** passes liveness. The attempt is
accepted as soon as ``k`` of the last ``n`` frames pass (3 of 5 by default), so a single lucky
frame cannot unlock and one bad frame does not lock the user out. A still image is decided on
its one frame (``still=True``). The attempt is rejected on timeout, or when the source ends.

A rejected frame's reason follows the order of the checks: ``no_face``, then ``quality`` (the
face fails the quality checks of the profile's ``[quality]`` table: it is not matched at all),
then ``liveness`` (a spoof is a spoof whoever it shows), then ``no_match``. The decision's reason
is the most advanced reason any frame reached, so a photo of the right person reads
``liveness``; when no frame got past ``quality`` the decision is ``retry`` (an unusable frame:
too small, blurred, clipped… — ``edge unlock verify`` exits 4 and it does not count towards the
lockout).

Example:
    >>> with open_source("0") as frames:                                         # doctest: +SKIP
    ...     d = verify(pipeline, frames, {"alice": templates}, threshold=0.42)
    >>> d.accepted, d.reason, d.latency_ms()["embed"]                            # doctest: +SKIP
    (True, 'match', 6.1)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edge.face.liveness_modes import begin_attempt, describe
from edge.face.match import match
from edge.face.types import FaceEmbedding
from edge.types import Frame

__all__ = ["VerifyPolicy", "FrameResult", "VerifyDecision", "verify",
           "REASON_MATCH", "REASON_NO_FACE", "REASON_LIVENESS", "REASON_NO_MATCH", "REASON_TIMEOUT",
           "REASON_SOURCE_ENDED", "REASON_QUALITY", "REASON_RETRY"]

REASON_MATCH = "match"
REASON_NO_FACE = "no_face"
REASON_LIVENESS = "liveness"
REASON_NO_MATCH = "no_match"
REASON_TIMEOUT = "timeout"
REASON_SOURCE_ENDED = "source_ended"
REASON_QUALITY = "quality"
#: The decision when faces were seen but none was usable: ask the user to try again.
REASON_RETRY = "retry"
#: Frame reasons in the order the checks run; a decision reports the furthest one reached.
_PROGRESS = (REASON_NO_FACE, REASON_QUALITY, REASON_LIVENESS, REASON_NO_MATCH)


@dataclass(frozen=True)
class VerifyPolicy:
    """Decision rule.

    Attributes:
        k: passing frames needed …
        n: … among the last ``n`` analysed frames.
        timeout_s: give up after this many seconds (measured from the first read).
        require_liveness: frames must pass liveness (False only with ``--no-liveness``).
    """

    k: int = 3
    n: int = 5
    timeout_s: float = 4.0
    require_liveness: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"need 1 <= k <= n, got k={self.k} n={self.n}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class FrameResult:
    """What one frame showed (no image, no embedding: safe to log)."""

    index: int
    faces: int
    passed: bool
    reason: str
    similarity: float | None = None
    best_user: str | None = None
    live: bool | None = None
    liveness_score: float | None = None
    quality_ok: bool | None = None
    quality_reasons: tuple[str, ...] = ()
    timings_ms: dict = field(default_factory=dict, compare=False)
    liveness_detail: str = ""


@dataclass(frozen=True)
class VerifyDecision:
    """The outcome of one verification attempt.

    Attributes:
        accepted: the user is recognised.
        user: the accepted user (or the claimed user on rejection; None if none was claimed).
        reason: ``match`` on acceptance, else ``timeout``, ``no_face``, ``retry`` (only
            unusable faces), ``liveness``, ``no_match``.
        frames: one :class:`FrameResult` per analysed frame.
        threshold: the cosine threshold used.
        k, n: the decision rule.
        elapsed_ms: wall time of the attempt.
        face_seen: at least one frame held a face (only such attempts count towards lockout).
    """

    accepted: bool
    user: str | None
    reason: str
    frames: tuple[FrameResult, ...]
    threshold: float
    k: int
    n: int
    elapsed_ms: float
    liveness_checked: bool = True

    @property
    def face_seen(self) -> bool:
        return any(f.faces > 0 for f in self.frames)

    def scores(self) -> list[float | None]:
        return [f.similarity for f in self.frames]

    def latency_ms(self) -> dict[str, float]:
        """Mean milliseconds per frame for each pipeline stage (plus ``match`` and ``total``)."""
        if not self.frames:
            return {}
        keys: list[str] = []
        for f in self.frames:
            keys += [k for k in f.timings_ms if k not in keys]
        return {k: sum(f.timings_ms.get(k, 0.0) for f in self.frames) / len(self.frames) for k in keys}

    def explain(self) -> str:
        """A human-readable table of per-frame scores and per-stage latency (``--explain``)."""
        lines = [f"decision: {'ACCEPT' if self.accepted else 'REJECT'} ({self.reason}); user={self.user}; "
                 f"rule {self.k} of last {self.n}; threshold {self.threshold:.4f}; "
                 f"{len(self.frames)} frames in {self.elapsed_ms:.0f} ms",
                 " frame faces  similarity  user          liveness   quality        pass  reason"]
        for f in self.frames:
            sim = "-" if f.similarity is None else f"{f.similarity:8.4f}"
            live = "-" if f.liveness_score is None else f"{f.liveness_score:.3f}{'+' if f.live else '-'}"
            qual = "-" if f.quality_ok is None else ("ok" if f.quality_ok else ",".join(f.quality_reasons))
            lines.append(f" {f.index:5d} {f.faces:5d}  {sim:>10}  {str(f.best_user or '-'):12.12s}  "
                         f"{live:9s}  {qual:13.13s}  {'yes' if f.passed else 'no ':4s}  {f.reason}")
            if f.liveness_detail and f.liveness_detail != "-":
                lines.append(f"       liveness {f.liveness_detail}")
        lat = self.latency_ms()
        if lat:
            lines.append("latency per frame (ms): " + "  ".join(f"{k} {v:.1f}" for k, v in lat.items()))
        return "\n".join(lines)


def _judge_frame(frame: Frame, analysis, templates, threshold: float, require_liveness: bool) -> FrameResult:
    face = analysis.largest
    timings = {**analysis.timings_ms, "match": 0.0}
    if face is None:
        return FrameResult(frame.index, 0, False, REASON_NO_FACE, timings_ms=timings)
    live = None if face.liveness is None else bool(face.liveness.live)
    live_score = None if face.liveness is None else float(face.liveness.score)
    common = dict(live=live, liveness_score=live_score, quality_ok=face.quality.ok,
                  quality_reasons=tuple(face.quality.reasons), timings_ms=timings,
                  liveness_detail=describe(face.liveness))
    if not face.quality.ok:  # never match an unusable frame
        return FrameResult(frame.index, len(analysis.faces), False, REASON_QUALITY, **common)
    if face.embedding is None:
        raise ValueError("the face pipeline returned no embedding; verification needs one")
    t0 = time.perf_counter()
    result = match(face.embedding, templates, threshold)
    timings["match"] = (time.perf_counter() - t0) * 1e3
    if require_liveness and live is not True:
        return FrameResult(frame.index, len(analysis.faces), False, REASON_LIVENESS, result.similarity,
                           result.user, **common)
    reason = REASON_MATCH if result.accepted else REASON_NO_MATCH
    return FrameResult(frame.index, len(analysis.faces), result.accepted, reason, result.similarity,
                       result.user, **common)


def verify(pipeline, frames: Iterable[Frame], templates: Mapping[str, Sequence[FaceEmbedding]], *,
           threshold: float, policy: VerifyPolicy = VerifyPolicy(), claimed_user: str | None = None,
           still: bool = False, track: bool = True,
           clock: Callable[[], float] = time.monotonic) -> VerifyDecision:
    """Run one verification attempt.

    Args:
        pipeline: a :class:`edge.face.pipeline.FacePipeline`.
        frames: an iterable of frames (an opened source).
        templates: ``{user: [FaceEmbedding, ...]}`` — the claimed user's only, or every user's
            for identification. All must come from the pipeline's embedder.
        threshold: cosine threshold (from the embedder's card at the target FAR).
        policy: the k-of-n rule, timeout and liveness requirement.
        claimed_user: the user asked for (reported on rejection).
        still: the source is one still image: decide on that frame alone.
        track: on a stream, follow the largest face between frames
            (:class:`~edge.face.tracking.FaceTracker`: detection near the last face, the whole
            frame searched again when it is lost, moves out, someone larger may have entered, or
            periodically). Every frame still gets its own detection, alignment, quality, liveness
            and embedding; only the largest face of a frame is analysed (``FrameResult.faces`` is
            then 0 or 1).
        clock: monotonic seconds (tests inject a fake).

    Raises:
        StaleTemplateError: a template was made by another embedder (never compared).
        LivenessError: liveness is required but the pipeline has no liveness checker.
    """
    from edge.errors import LivenessError

    if policy.require_liveness and getattr(pipeline, "liveness", None) is None:
        raise LivenessError("liveness is required but the face pipeline has no liveness checker: "
                            "pass --liveness-dir (models from `edge-export liveness`) or, knowingly "
                            "insecure, --no-liveness")
    k, n = (1, 1) if still else (policy.k, policy.n)
    begin_attempt(getattr(pipeline, "liveness", None), still=still)  # modality and IR state per attempt
    window: deque[bool] = deque(maxlen=n)
    results: list[FrameResult] = []
    start = clock()
    t_start = time.perf_counter()

    def decide(accepted: bool, reason: str) -> VerifyDecision:
        reached = [r.reason for r in results if r.reason in _PROGRESS]
        if not accepted and reached and max(reached, key=_PROGRESS.index) == REASON_QUALITY:
            reason = REASON_RETRY
        user = results[-1].best_user if accepted else claimed_user
        return VerifyDecision(accepted, user, reason, tuple(results), float(threshold), k, n,
                              (time.perf_counter() - t_start) * 1e3, policy.require_liveness)

    analyze = pipeline.analyze
    if track and not still:
        from edge.face.tracking import FaceTracker

        analyze = FaceTracker(pipeline).analyze  # a new tracker per attempt: nothing carried over
    for frame in frames:
        analysis = analyze(frame)
        result = _judge_frame(frame, analysis, templates, threshold, policy.require_liveness)
        results.append(result)
        window.append(result.passed)
        if sum(window) >= k:
            return decide(True, REASON_MATCH)
        if still:
            break
        if clock() - start > policy.timeout_s:
            return decide(False, REASON_TIMEOUT)
    reached = [r.reason for r in results if r.reason in _PROGRESS]
    return decide(False, max(reached, key=_PROGRESS.index) if reached else REASON_SOURCE_ENDED)
