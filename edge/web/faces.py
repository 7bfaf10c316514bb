"""The face library behind the page and the API: recognise, enrol, list, rename, remove, attempts.

Everything goes through the face-unlock application (:class:`edge.unlock.app.UnlockApp`): the same
encrypted template store, audit log and models as ``edge unlock``, so a person enrolled on the page
unlocks with PAM and the other way round. Enrolment calls :func:`edge.unlock.enroll.enroll` (quality,
liveness, diversity and duplicate checks included) on the uploaded photos or on frames of the live
source, and is audited like ``edge unlock enroll``. Recognitions are audited too (action
``recognize``), so the recent-attempts view shows them beside the unlock attempts.

The models are loaded on first use and shared; one analysis runs at a time (the pipeline's
engines are not re-entrant on every runtime).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from edge.errors import UnlockError
from edge.types import Frame

__all__ = ["FaceService", "ATTEMPT_ACTIONS"]

log = logging.getLogger(__name__)

#: Audit actions shown as attempts.
ATTEMPT_ACTIONS = ("verify", "recognize")
SOURCE_UPLOAD = "upload"


def _r(x, digits: int = 4):
    return None if x is None else round(float(x), digits)


def _seen(analysis) -> dict:
    """What the pipeline saw in one photo: faces, quality and liveness of the largest face."""
    face = analysis.largest
    out = {"faces": len(analysis.faces)}
    if face is not None:
        out.update(quality_ok=bool(face.quality.ok), quality_reasons=list(face.quality.reasons),
                   live=None if face.liveness is None else bool(face.liveness.live),
                   liveness_score=None if face.liveness is None else _r(face.liveness.score))
    return out


def _analysis_verdict(seen: dict) -> str:
    if seen["faces"] == 0:
        return "no_face"
    if seen["faces"] > 1:
        return "several_faces"
    if not seen.get("quality_ok", True):
        return "quality"
    if seen.get("live") is False:
        return "liveness"
    return "usable"


class _Recording:
    """A pipeline proxy that keeps each analysed frame's result by the frame's ``path`` metadata."""

    def __init__(self, pipeline) -> None:
        self._pipeline = pipeline
        self.seen: dict[str, dict] = {}

    def analyze(self, image, **kw):
        analysis = self._pipeline.analyze(image, **kw)
        if isinstance(image, Frame):
            self.seen[str(image.metadata.get("path", image.index))] = _seen(analysis)
        return analysis

    def __getattr__(self, name):
        return getattr(self._pipeline, name)


class FaceService:
    """Face operations for the web service.

    Args:
        app: the face-unlock application (state paths, models).
        on_recognized: called with ``(user, similarity)`` whenever a face is recognised (Home
            Assistant's "last recognised face").
        samples: K, good samples an enrolment keeps at most.
    """

    def __init__(self, app, *, on_recognized: Callable[[str, float], None] | None = None, samples: int = 5) -> None:
        self.app = app
        self.on_recognized = on_recognized
        self.samples = samples
        self._lock = threading.Lock()

    # -- models ------------------------------------------------------------------------------
    def _pipeline(self):
        return self.app.pipeline()

    def identity(self) -> dict:
        emb = self._pipeline().embedder
        return {"model_id": emb.model_id, "model_sha256": emb.model_sha256}

    def close(self) -> None:
        with self._lock:
            self.app.close()

    # -- recognition -------------------------------------------------------------------------
    def _templates(self, pipeline) -> dict:
        from edge.unlock.enroll import record_embeddings

        emb = pipeline.embedder
        listing = self.app.listing()
        return {r.user: record_embeddings(r) for r in listing.records if not r.is_stale(emb.model_id, emb.model_sha256)}

    def recognize(self, image: np.ndarray, *, client: str = "") -> dict:
        """Every face of ``image`` with its box, best-matching enrolled user (or None) and similarity."""
        from edge.face.match import match

        with self._lock:
            t0 = time.perf_counter()
            pipeline = self._pipeline()
            threshold = pipeline.threshold()
            templates = self._templates(pipeline)
            analysis = pipeline.analyze(image)
            faces = []
            for face in analysis.faces:
                m = match(face.embedding, templates, threshold) if templates and face.embedding is not None else None
                faces.append({"box": [round(float(v), 1) for v in face.box],
                              "user": m.user if m is not None and m.accepted else None,
                              "similarity": _r(m.similarity) if m is not None and m.user is not None else None,
                              "det_score": _r(face.det_score),
                              "live": None if face.liveness is None else bool(face.liveness.live),
                              "liveness_score": None if face.liveness is None else _r(face.liveness.score),
                              "quality_ok": bool(face.quality.ok)})
            elapsed = (time.perf_counter() - t0) * 1e3
        recognised = [f for f in faces if f["user"] is not None]
        self.app.audit("recognize", recognised[0]["user"] if recognised else "",
                       "match" if recognised else ("no_match" if faces else "no_face"), "web",
                       scores=tuple(f["similarity"] for f in faces), models={"embedder": pipeline.embedder.model_id},
                       extra={"faces": len(faces), "threshold": threshold, "client": client,
                              "users": [f["user"] for f in recognised]})
        if recognised and self.on_recognized is not None:
            best = max(recognised, key=lambda f: f["similarity"])
            try:
                self.on_recognized(best["user"], best["similarity"])
            except Exception:  # noqa: BLE001 - a notification failure must not fail the request
                log.exception("on_recognized callback failed")
        return {"faces": faces, "threshold": round(threshold, 4), "enrolled": len(templates),
                "embedder": pipeline.embedder.model_id, "elapsed_ms": round(elapsed, 1)}

    # -- enrolment ---------------------------------------------------------------------------
    def enroll(self, user: str, frames: Iterable[Frame], *, count: int | None, replace: bool = False,
               add: bool = False, allow_duplicate: bool = False, timeout_s: float | None = None,
               source: str = SOURCE_UPLOAD) -> dict:
        """Enrol ``user`` from ``frames`` (uploaded photos, or the live source).

        Returns:
            ``{"user", "templates", "verdicts": [{"photo", "verdict", ...}], ...}``.

        Raises:
            EnrollmentError: too few good samples (``.verdicts`` on the error carries what each
                photo showed), or the face matches another user.
            UserExistsError, ValueError: as :func:`edge.unlock.enroll.enroll`.
        """
        from edge.unlock.enroll import EnrollPolicy, enroll

        k = self.samples if count is None else max(1, min(self.samples, count))
        policy = EnrollPolicy(samples=k, allow_duplicate=allow_duplicate, timeout_s=timeout_s,
                              require_liveness=self.app.options.liveness)
        store = self.app.store(create_key=True)
        store.path_for(user)  # validates the name and creates the key before any model work
        with self._lock:
            pipeline = _Recording(self._pipeline())
            try:
                result = enroll(user, pipeline, frames, store, threshold=pipeline.threshold(), policy=policy,
                                replace=replace, add=add)
            except (UnlockError, ValueError) as e:
                self.app.audit("enroll", user, "error", type(e).__name__, extra={"error": str(e)[:500], "source": source})
                e.verdicts = [{"photo": p, "verdict": _analysis_verdict(s), **s} for p, s in pipeline.seen.items()]
                raise
        verdicts = []
        for v in result.verdicts:
            seen = pipeline.seen.get(v.source, {})
            verdicts.append({**seen, "photo": v.source, "verdict": v.reason, "faces": v.faces,
                             "quality_reasons": list(v.quality_reasons), "liveness_score": _r(v.liveness_score),
                             "max_similarity_to_kept": _r(v.max_similarity_to_kept)})
        kept = {v["photo"] for v in verdicts}
        verdicts += [{"photo": p, "verdict": "not_needed", **s} for p, s in pipeline.seen.items() if p not in kept]
        r = result.record
        self.app.audit("enroll", user, "enrolled", "replaced" if result.replaced else ("added" if add else "new"),
                       models={"embedder": r.model_id},
                       extra={"templates": int(r.vectors.shape[0]), "frames": len(result.verdicts), "source": source,
                              "duplicate_of": None if result.duplicate_of is None else result.duplicate_of.user})
        return {"user": r.user, "templates": int(r.vectors.shape[0]), "model_id": r.model_id, "verdicts": verdicts,
                "duplicate_of": None if result.duplicate_of is None else result.duplicate_of.user}

    # -- library -----------------------------------------------------------------------------
    def users(self) -> dict:
        listing = self.app.listing()
        try:
            current = self.identity()
        except Exception as e:  # noqa: BLE001 - the list is still useful without the models
            log.warning("face models unavailable: %s", e)
            current = None
        users = [{"user": r.user, "templates": int(r.vectors.shape[0]), "model_id": r.model_id,
                  "stale": None if current is None else r.is_stale(current["model_id"], current["model_sha256"]),
                  "created": r.created, "updated": r.updated} for r in listing.records]
        return {"users": users, "embedder": current, "unreadable": [str(p.path.name) for p in listing.problems]}

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            self.app.rename(old, new)

    def remove(self, user: str) -> None:
        with self._lock:
            self.app.remove(user)

    def attempts(self, limit: int = 50) -> list[dict]:
        """The newest ``limit`` verify / recognize entries of the audit log, newest first."""
        from edge.unlock.audit import read_audit

        path = self.app.config.audit_file
        if not path.exists():
            return []
        rows = [e for e in read_audit(path) if e.get("action") in ATTEMPT_ACTIONS]
        keep = ("time", "epoch", "action", "user", "decision", "reason", "scores", "threshold", "client", "source")
        return [{k: e.get(k) for k in keep if k in e} for e in reversed(rows[-limit:])]


def live_frames(frames_hub, seconds: float, *, poll: float = 0.05, clock=time.monotonic) -> Iterator[Frame]:
    """New frames of the live source for ``seconds`` (each frame once), for enrolment at the camera."""
    deadline = clock() + seconds
    last = -1
    while clock() < deadline:
        seq, batch = frames_hub.seq, frames_hub.latest
        if batch is not None and seq != last:
            last = seq
            f = batch.frame
            yield Frame(f.image, f.timestamp, f.index, f.source_id, {"path": f"live frame {f.index}"})
        else:
            time.sleep(poll)
