"""Build what each role needs from a verified release (:mod:`edge.release`), and nothing else.

* :func:`face_pipeline_from_release` — the face detector, the embedder (whose card carries the match
  threshold re-derived for exactly this variant by the export gate) and the liveness pair;
* :func:`detector_from_release` — the object detector's card (decoder settings, labels beside it);
* :func:`classifier_from_release` — the classifier's card with its labels;
* :func:`profile_for_release` — the device profile the release was built for, when it is known here.

A role the release does not carry is an error naming the release and the roles it has: there is no
fall-back to registry models.

Example:
    >>> rel = open_release()                                  # doctest: +SKIP
    >>> pipe = face_pipeline_from_release(rel)                # doctest: +SKIP
    >>> pipe.embedder.model_id                                # doctest: +SKIP
    'sface_2021dec_fp32_fp32'
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.bundle import BundleModel
from edge.errors import BundleError, LivenessError

log = logging.getLogger(__name__)

__all__ = ["role_model", "face_pipeline_from_release", "detector_from_release", "classifier_from_release",
           "profile_for_release", "FACE_ROLES"]

#: The roles a face pipeline takes from a release (liveness may be switched off explicitly).
FACE_ROLES = ("face_detector", "face_embedder", "liveness")


class MissingRoleError(BundleError, KeyError):
    """The release has no model for a role its consumer needs."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def role_model(release, role: str, *, task: str | None = None, name: str | None = None) -> BundleModel:
    """The one model of ``role`` (optionally of ``task`` / named ``name``) in ``release``.

    Raises:
        MissingRoleError: none, or several and no ``name`` to choose (names the release and roles).
    """
    found = [m for m in release.bundle.roles.get(role, ()) if task is None or m.card.task == task]
    if name is not None:
        found = [m for m in found if name in (m.card.name, m.model_path.name, m.model_path.stem, m.card_path.name)]
    if len(found) == 1:
        return found[0]
    what = f"{role!r} model" + (f" of task {task!r}" if task else "") + (f" named {name!r}" if name else "")
    if not found:
        raise MissingRoleError(f"release {release.source} has no {what} (it has: {', '.join(release.roles) or 'none'}); "
                               f"rebuild it with `edge-export build --only ...,{role}`", file=None)
    raise MissingRoleError(f"release {release.source} has several models for {what} "
                           f"({', '.join(m.card.name for m in found)}): choose one by name (--model NAME)", file=None)


def profile_for_release(release, override=None):
    """The :class:`~edge.profile.DeviceProfile` in force: ``override`` (name, path or profile), else
    the packaged profile named by the release's manifest, else ``None`` (then built-in defaults).

    Raises:
        ProfileError: ``override`` names no profile, or a profile file is malformed.
    """
    from edge.profile import DeviceProfile, load_profile, profiles_dir

    if isinstance(override, DeviceProfile):
        return override
    if override is not None:
        p = Path(override)
        if not p.is_file():
            p = profiles_dir() / f"{override}.toml"
        if not p.is_file():
            from edge.errors import ProfileError

            known = ", ".join(sorted(q.stem for q in profiles_dir().glob("*.toml")))
            raise ProfileError(f"profile {override!r} is neither a file nor a known profile ({known})")
        return load_profile(p)
    name = release.profile_name if release is not None else ""
    if name:
        p = profiles_dir() / f"{name}.toml"
        if p.is_file():
            return load_profile(p)
        log.warning("release %s was built for profile %r, which is not installed here: using defaults",
                    release.source, name)
    return None


def face_pipeline_from_release(release, *, threads: int | None = None, profile=None, detect_size=None,
                               quality=None, liveness: bool | None = True, backend: str | None = None):
    """A :class:`~edge.face.pipeline.FacePipeline` made only of the release's models.

    Args:
        release: a verified :class:`edge.release.Release`.
        threads: engine threads per model (``None``: the profile's).
        profile: profile override (name, TOML path or DeviceProfile); default: the release's.
        detect_size: ``(width, height)`` to detect at (``None``: the detector's input size).
        quality: :class:`~edge.face.quality.QualityConfig` (default thresholds when ``None``).
        liveness: ``True`` requires the release's liveness models, ``False`` disables liveness,
            ``None`` uses them when the release has them.
        backend: engine backend (by file suffix when ``None``).

    Raises:
        MissingRoleError: the release has no face detector or embedder.
        LivenessError: ``liveness=True`` and the release has no liveness model.
        ThresholdMissingError: the embedder's card has no threshold at the profile's target FAR.
    """
    from edge.face.embedder import create_embedder
    from edge.face.liveness import PassiveLiveness
    from edge.face.match import threshold_for
    from edge.face.pipeline import DEFAULT_FIT_SIZE, DEFAULT_TARGET_FAR, FacePipeline
    from edge.face.quality import QualityConfig
    from edge.vision.face_detectors import create_face_detector

    from edge.profile_use import engine_options, unlock_policy

    prof = profile_for_release(release, profile)
    eng = engine_options(prof, threads=threads).kwargs()  # threads clamped to the board; providers
    target_far = unlock_policy(prof).target_far if prof is not None else DEFAULT_TARGET_FAR
    det_m = role_model(release, "face_detector")
    emb_m = role_model(release, "face_embedder")
    threshold_for(emb_m.card, target_far)  # a missing threshold fails before any model is loaded
    live_ms = release.bundle.roles.get("liveness", ())
    if liveness and not live_ms:
        raise LivenessError(f"release {release.source} carries no liveness model (roles: {', '.join(release.roles)}); "
                            "rebuild it with the liveness role, or pass --no-liveness (insecure)")
    kw = {"engine_options": eng}
    kind = "yunet" if "yunet" in det_m.card.name else None
    det_opts = {k: float(getattr(det_m.card.thresholds, c)) for k, c in (("score_threshold", "score"),
                                                                         ("nms_threshold", "nms_iou"))
                if getattr(det_m.card.thresholds, c) is not None}
    det = create_face_detector(det_m.model_path, kind=kind, backend=backend, **kw, **det_opts)
    parts = [det]
    try:
        emb = create_embedder(emb_m.card_path, backend=backend, **kw)
        parts.append(emb)
        live = None
        if liveness is not False and live_ms:
            live_kw = {} if prof is None else {"threshold": unlock_policy(prof).liveness_threshold}
            live = PassiveLiveness.from_cards([(m.card, m.model_path) for m in live_ms], backend=backend, **kw,
                                              **live_kw)
    except BaseException:
        for p in parts:
            p.close()
        raise
    log.info("face pipeline from %s: %s + %s + %s", release.describe(), det_m.card.name, emb_m.card.name,
             "+".join(m.card.name for m in live_ms) if live is not None else "no liveness")
    # a YuNet of free input size (bundles built since the tracker) sees whole frames as the fixed
    # 640×640 graph would, and regions around a tracked face at the same scale
    fit_size = DEFAULT_FIT_SIZE if detect_size is None and kind == "yunet" and not det.fixed_input else None
    return FacePipeline(det, emb, live, quality if quality is not None else QualityConfig(),
                        detect_size=detect_size, fit_size=fit_size, target_far=target_far)


def detector_from_release(release, name: str | None = None) -> BundleModel:
    """The release's object detector (role ``detector``, task ``object_detection``)."""
    return role_model(release, "detector", task="object_detection", name=name)


def classifier_from_release(release, name: str | None = None) -> BundleModel:
    """The release's classifier (role ``classifier``, task ``classification``, labels beside it)."""
    return role_model(release, "classifier", task="classification", name=name)
