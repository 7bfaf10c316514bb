"""The face-unlock application: guards, lockout, store, pipeline and audit wired together.

:class:`UnlockApp` is what ``edge unlock`` runs. Every verification goes through the same steps:

1. policy guards (SSH session, lid closed) — refused before any capture;
2. lockout check — a locked-out user is refused before any capture;
3. the user's templates, which must come from the configured embedder (else *stale*);
4. frames from the source through the pipeline, decided k of n (:func:`edge.unlock.verify.verify`);
5. the lockout counter updated and one audit line written. If the audit line cannot be written
   the error propagates: the caller must then treat the attempt as failed (fail closed).

Library code only: errors are typed (:mod:`edge.errors`); :mod:`edge.cli.unlock_cmd` turns them
into messages and exit codes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import KeyFileError, LockedOutError, LockoutStateError, ProfileError, UnknownUserError, UnlockRefused
from edge.unlock.audit import AuditEvent, AuditLog
from edge.unlock.config import UnlockConfig
from edge.unlock.enroll import EnrollPolicy, EnrollResult, enroll, record_embeddings
from edge.unlock.guards import check_guards
from edge.unlock.keys import FileKeyProvider, KeyProvider
from edge.unlock.lockout import LockoutTracker, LockStatus
from edge.unlock.store import StoreListing, TemplateStore
from edge.unlock.verify import REASON_RETRY, VerifyDecision, VerifyPolicy, verify

__all__ = ["PipelineOptions", "UnlockApp", "VerifyOutcome", "ANY_USER", "resolve_profile"]

log = logging.getLogger(__name__)

#: Lockout key of identification attempts (``edge unlock verify`` without a user).
ANY_USER = "*"
#: Most per-frame values written to one audit line (the latest frames are kept).
AUDIT_MAX_FRAMES = 32


def resolve_profile(name_or_path: str | Path | None) -> Path | None:
    """A profile TOML path from a path or a bundled profile name (``rpi4``, ``x86_dev`` …).

    Raises:
        ProfileError: neither a file nor a known profile name.
    """
    if name_or_path is None:
        return None
    p = Path(name_or_path)
    if p.is_file():
        return p
    from edge.profile import profiles_dir

    named = profiles_dir() / f"{name_or_path}.toml"
    if named.is_file():
        return named
    known = ", ".join(sorted(q.stem for q in profiles_dir().glob("*.toml")))
    raise ProfileError(f"profile {name_or_path!r} is neither a file nor a known profile ({known})")


@dataclass(frozen=True)
class PipelineOptions:
    """Which models the face pipeline uses.

    Attributes:
        detector, embedder: names for :func:`edge.face.pipeline.create_pipeline`.
        release: a verified release (:func:`edge.release.open_release`): all models come from it.
        liveness_dir: the liveness models (``edge-export liveness --out DIR``).
        profile: device profile name or TOML path (target FAR, liveness threshold, threads).
        threads: inference threads per model (None: the profile's).
        liveness: False disables liveness (``--no-liveness``, the same as ``liveness_mode="off"``):
            insecure, logged and audited.
        liveness_mode: ``auto``, ``rgb``, ``ir``, ``challenge`` or ``off``
            (:mod:`edge.face.liveness_modes`); None: the profile's ``unlock.liveness``, else ``auto``.
    """

    detector: str = "yunet"
    embedder: str = "sface_2021dec_fp32"
    liveness_dir: Path | None = None
    profile: str | None = None
    threads: int | None = 1
    liveness: bool = True
    release: object | None = None  # a verified edge.release.Release: then every model comes from it
    liveness_mode: str | None = None

    def __post_init__(self) -> None:
        from edge.face.liveness_modes import LIVENESS_MODES

        if self.liveness_mode is not None and self.liveness_mode not in LIVENESS_MODES:
            raise ValueError(f"--liveness must be one of {', '.join(LIVENESS_MODES)}, got {self.liveness_mode!r}")
        if self.liveness_mode == "off" or not self.liveness:
            object.__setattr__(self, "liveness", False)
            object.__setattr__(self, "liveness_mode", "off")

    def _profile(self):
        from edge.profile import load_profile

        path = resolve_profile(self.profile)
        return None if path is None else load_profile(path)

    def resolved_mode(self) -> tuple[str, bool]:
        """``(liveness mode, camera declared IR)`` from the options, else the profile, else ``auto``."""
        prof = self._profile()
        mode = self.liveness_mode or (prof.unlock.liveness if prof is not None else "auto")
        return mode, bool(prof is not None and prof.camera.ir)

    def build(self):
        """Load the models (sha256-checked by the registry) into a FacePipeline."""
        from edge.face.liveness_modes import build_liveness, needs_models
        from edge.face.pipeline import create_pipeline

        mode, camera_ir = self.resolved_mode()
        if mode == "off":
            log.warning("liveness is DISABLED (--liveness off / --no-liveness): a photo of the user can unlock; "
                        "never use this in production")
        # the MiniFASNet pair: required for colour frames, unused by the IR-only and off modes
        pair = True if needs_models(mode) and not camera_ir else (None if needs_models(mode) else False)
        if self.release is not None:
            from edge.roles import face_pipeline_from_release

            pipe = face_pipeline_from_release(self.release, threads=self.threads, profile=self.profile,
                                              liveness=pair)
        else:
            pipe = create_pipeline(detector=self.detector, embedder=self.embedder,
                                   liveness_dir=self.liveness_dir, threads=self.threads,
                                   profile=resolve_profile(self.profile), liveness=pair)
        try:
            from edge.profile import quality_config

            pipe.quality = quality_config(self._profile())  # the same checks for enrolment and verification
            pipe.liveness = build_liveness(mode, passive=pipe.liveness, camera_ir=camera_ir)
        except Exception:
            pipe.close()
            raise
        return pipe


@dataclass(frozen=True)
class VerifyOutcome:
    """A verification decision with the lockout state after it."""

    decision: VerifyDecision
    lock: LockStatus | None
    load_ms: float = 0.0


def _model_ids(pipeline) -> dict[str, str]:
    emb = pipeline.embedder
    ids = {"embedder": emb.model_id, "embedder_sha256": emb.model_sha256,
           "detector": type(pipeline.detector).__name__}
    names = []
    for m in getattr(pipeline.liveness, "models", None) or []:
        card = m[1] if isinstance(m, tuple) and len(m) > 1 else getattr(m, "card", None)
        if getattr(card, "name", None):
            names.append(card.name)
    ids["liveness"] = "+".join(names) if names else ("none" if pipeline.liveness is None else
                                                      type(pipeline.liveness).__name__)
    return ids


@dataclass
class UnlockApp:
    """One ``edge unlock`` session.

    Args:
        config: state locations and guard switches.
        options: pipeline models.
        keys: the key provider (default: the key file of ``config``).
        env: environment for the SSH check (default ``os.environ``).
        clock: epoch seconds for lockout and audit (tests inject one).
    """

    config: UnlockConfig
    options: PipelineOptions = field(default_factory=PipelineOptions)
    keys: KeyProvider | None = None
    env: Mapping[str, str] | None = None
    clock: Callable[[], float] = time.time
    _pipeline: object = field(default=None, init=False, repr=False)
    _load_ms: float = field(default=0.0, init=False, repr=False)

    # -- parts -------------------------------------------------------------------------------
    def store(self, *, create_key: bool = False) -> TemplateStore:
        """The template store; ``create_key`` makes a key only for a store that holds no record
        (a missing key of an enrolled store is an error, never a second key beside it)."""
        if create_key and self.keys is None and not Path(self.config.key_file).exists():
            records = TemplateStore(self.config.store_dir, FileKeyProvider(self.config.key_file)).record_files()
            if records:
                raise KeyFileError(f"key file {self.config.key_file} not found, but the template store "
                                   f"{self.config.store_dir} holds {len(records)} records made with a key: "
                                   f"restore that key or point --key / EDGE_UNLOCK_KEY at it")
        keys = self.keys or FileKeyProvider(self.config.key_file, create=create_key)
        return TemplateStore(self.config.store_dir, keys)

    @property
    def audit_log(self) -> AuditLog:
        return AuditLog(self.config.audit_file, clock=self.clock)

    def camera_mode(self) -> dict:
        """The profile's camera mode (size, fps, FOURCC), applied where the source is a camera."""
        from edge.profile_use import camera_settings

        prof = self.options._profile()
        return camera_settings(prof).settings() if prof is not None else {}

    def policy(self):
        """The profile's unlock policy (:func:`edge.profile_use.unlock_policy`): k of n, lockout, enrolment."""
        from edge.profile_use import unlock_policy

        return unlock_policy(self.options._profile())

    @property
    def lockout(self) -> LockoutTracker:
        """Failures counted per user; the profile's ``unlock.max_failures`` and ``unlock.lockout_s``."""
        return LockoutTracker(self.config.state_dir, self.policy().lockout_policy(), clock=self.clock)

    def pipeline(self):
        if self._pipeline is None:
            t0 = time.perf_counter()
            self._pipeline = self.options.build()
            self._load_ms = (time.perf_counter() - t0) * 1e3
        return self._pipeline

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    def _flags(self) -> dict:
        return {} if self.options.liveness else {"insecure": ["no_liveness"]}

    def audit(self, action: str, user: str, decision: str, reason: str = "", **kw) -> None:
        extra = {**self._flags(), **kw.pop("extra", {})}
        self.audit_log.append(AuditEvent(action, user, decision, reason, extra=extra, **kw))

    # -- verification ------------------------------------------------------------------------
    def _templates(self, user: str | None, pipeline) -> dict:
        store = self.store()
        emb = pipeline.embedder
        if user is not None:
            return {user: record_embeddings(store.templates_for(user, emb.model_id, emb.model_sha256))}
        listing = store.load_all()
        usable = {r.user: record_embeddings(r) for r in listing.records
                  if not r.is_stale(emb.model_id, emb.model_sha256)}
        for r in listing.records:
            if r.user not in usable:
                log.warning("templates of %r are stale (made by %s): re-enrol", r.user, r.model_id)
        if not usable:
            raise UnknownUserError(f"no usable enrolment in {self.config.store_dir} for {emb.model_id}")
        return usable

    def verify(self, user: str | None, source: str, policy: VerifyPolicy = VerifyPolicy(), *,
               env: Mapping[str, str] | None = None, pid: int | None = None,
               audit_extra: Mapping[str, object] | None = None) -> VerifyOutcome:
        """Run one attempt and record it (lockout and audit).

        ``env`` and ``pid`` are what the SSH guard inspects (default: this app's environment and
        process; the warm service passes its client's); ``audit_extra`` goes into every audit
        line of the attempt.

        Raises:
            UnlockRefused: SSH session or lid closed.
            LockedOutError: too many recent failures.
            UnknownUserError: ``user`` is not enrolled.
            StaleEnrollmentError: the user's templates come from another embedder.
            EdgeError subclasses / OSError: models, key, store, source or audit failures.
        """
        from edge.sources import ImageFileSource, open_source

        name, key = user or "", user or ANY_USER
        policy = dataclasses.replace(policy, require_liveness=self.options.liveness)

        def audit(*a, extra: Mapping | None = None, **kw) -> None:
            self.audit(*a, extra={**(audit_extra or {}), **(extra or {})}, **kw)
        if env is None:
            env = os.environ if self.env is None else self.env
        try:
            check_guards(refuse_ssh=self.config.refuse_ssh, refuse_lid_closed=self.config.refuse_lid_closed,
                         env=env, proc_dir=self.config.proc_dir, pid=pid)
            reservation = self.lockout.begin_attempt(key)
        except UnlockRefused as e:
            audit("verify", name, "refused", str(e))
            raise
        except LockedOutError as e:
            audit("verify", name, "locked_out", str(e), extra={"locked_until": e.until})
            raise
        try:
            pipeline = self.pipeline()
            templates = self._templates(user, pipeline)
            with open_source(source, camera=self.camera_mode()) as frames:
                decision = verify(pipeline, frames, templates, threshold=pipeline.threshold(), policy=policy,
                                  claimed_user=user, still=isinstance(frames, ImageFileSource))
        except UnknownUserError as e:
            self.lockout.release(reservation)
            audit("verify", name, "reject", "not_enrolled", extra={"error": str(e)})
            raise
        except Exception as e:
            self.lockout.release(reservation)
            audit("verify", name, "error", type(e).__name__, extra={"error": str(e)[:500]})
            raise
        lock = None
        if decision.accepted:
            self.lockout.record_success(key)
        elif decision.face_seen and decision.reason != REASON_RETRY:  # counted when it started: the count stands
            lock = reservation.status
        else:  # nobody there, or no usable frame ("retry"): not an attempt
            self.lockout.release(reservation)
        recent = decision.frames[-AUDIT_MAX_FRAMES:]
        audit(
            "verify", decision.user or name, "accept" if decision.accepted else "reject", decision.reason,
            scores=tuple(f.similarity for f in recent),
            liveness=[{"score": f.liveness_score, "live": f.live} for f in recent],
            models=_model_ids(pipeline),
            extra={"threshold": decision.threshold, "k": decision.k, "n": decision.n,
                   "frames": len(decision.frames), "elapsed_ms": round(decision.elapsed_ms, 1),
                   "source": source, "claimed_user": name,
                   **({} if lock is None else {"failures": lock.failures, "locked_until": lock.locked_until})})
        return VerifyOutcome(decision, lock, self._load_ms)

    # -- enrolment and administration --------------------------------------------------------
    def enroll(self, user: str, source: str, policy: EnrollPolicy = EnrollPolicy(), *,
               replace: bool = False, add: bool = False) -> EnrollResult:
        """Enrol ``user`` from ``source`` and audit it (see :func:`edge.unlock.enroll.enroll`)."""
        from edge.sources import open_source

        store = self.store(create_key=True)
        store.path_for(user)  # creates the key (and validates the name) before loading models
        policy = dataclasses.replace(policy, require_liveness=self.options.liveness)
        try:
            pipeline = self.pipeline()
            with open_source(source, camera=self.camera_mode()) as frames:
                result = enroll(user, pipeline, frames, store, threshold=pipeline.threshold(),
                                policy=policy, replace=replace, add=add)
        except Exception as e:
            self.audit("enroll", user, "error", type(e).__name__, extra={"error": str(e)[:500]})
            raise
        self.audit("enroll", user, "enrolled", "replaced" if result.replaced else ("added" if add else "new"),
                   models=_model_ids(pipeline),
                   extra={"templates": int(result.record.vectors.shape[0]), "frames": len(result.verdicts),
                          "images_stored": len(result.record.images), "source": source,
                          "duplicate_of": None if result.duplicate_of is None else result.duplicate_of.user})
        return result

    def listing(self) -> StoreListing:
        return self.store().load_all()

    def remove(self, user: str) -> None:
        self.store().remove(user)
        try:
            self.lockout.record_success(user)
        except LockoutStateError:  # a corrupt state stays (closed) until `edge unlock reset`
            pass
        self.audit("remove", user, "removed")

    def rename(self, old: str, new: str) -> None:
        self.store().rename(old, new)
        self.audit("rename", new, "renamed", extra={"from": old})
