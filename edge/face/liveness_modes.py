"""Liveness modes: which anti-spoofing checks an attempt runs, decided from the frames.

=============  ============================================================================
mode           checks
=============  ============================================================================
``auto``       the camera's modality is decided from the first judged frame of the attempt:
               colour → the MiniFASNet pair (:class:`~edge.face.liveness.PassiveLiveness`);
               IR or grayscale → :class:`~edge.face.ir_liveness.IrLiveness` (strobe detected
               from the frames). It stays fixed for the attempt: a source that switches
               modality mid-attempt is refused for the rest of it. With ``camera_ir`` (the
               profile's ``camera.ir``) colour frames are refused.
``rgb``        always the MiniFASNet pair (grayscale frames are expanded to 3 channels: the
               RGB-trained pair scores genuine grayscale faces near 0, so they fail).
``ir``         always the IR checks; colour frames are refused (``NotIrSourceError``).
``challenge``  ``auto``'s check **and** the head-turn challenge (:class:`HeadTurnChallenge`).
``off``        no liveness (a photo unlocks): :func:`build_liveness` returns ``None`` and logs a
               warning.
=============  ============================================================================

The modality is never taken from the device's name. Call :func:`begin_attempt` before each
attempt (verification, or each photo of an enrolment folder): it resets the state.

Example:
    >>> checker = build_liveness("auto", passive=PassiveLiveness.from_dir(d))   # doctest: +SKIP
    >>> begin_attempt(checker)                                                   # doctest: +SKIP
    >>> checker.check(frame, box, landmarks).detail["modality"]                  # doctest: +SKIP
    'ir'
"""

from __future__ import annotations

import logging

import numpy as np

from edge.errors import LivenessError
from edge.face.challenge import HeadTurnChallenge
from edge.face.ir_liveness import KIND_COLOUR, KIND_DARK, IrConfig, IrLiveness, classify_frame
from edge.face.types import LivenessResult

__all__ = ["LIVENESS_MODES", "ModalLiveness", "build_liveness", "begin_attempt", "describe", "needs_models",
           "frame_modality"]

log = logging.getLogger(__name__)

LIVENESS_MODES = ("auto", "rgb", "ir", "challenge", "off")
MODALITY_RGB, MODALITY_IR = "rgb", "ir"
METHOD = "modal"
#: A dark frame decides the modality only when at least this fraction of its pixels is lit.
MIN_LIT_FRACTION = 0.02
OFF_WARNING = ("liveness is OFF: a photo or a video of the user unlocks; never use this in production")


def needs_models(mode: str) -> bool:
    """Whether ``mode`` needs the MiniFASNet pair (only ``ir`` and ``off`` run without it)."""
    return mode in ("auto", "rgb", "challenge")


def frame_modality(image, config: IrConfig = IrConfig()) -> str | None:
    """``"ir"``, ``"rgb"`` or ``None`` (too dark to tell) for one frame.

    A single-channel frame is IR/grayscale. A three-channel frame is judged by
    :func:`~edge.face.ir_liveness.classify_frame`; when that finds it mostly dark (normal under an
    IR emitter, whose light falls off behind the face), its lit pixels alone decide: grey when
    their channels are nearly equal.
    """
    if image.ndim == 2 or image.shape[2] == 1:
        return MODALITY_IR
    kind = classify_frame(image, config).kind
    if kind != KIND_DARK:
        return MODALITY_RGB if kind == KIND_COLOUR else MODALITY_IR
    lit = image.max(axis=2) >= config.dark_level
    if np.count_nonzero(lit) < MIN_LIT_FRACTION * lit.size:
        return None
    px = image[lit].astype(np.int16)
    spread = px.max(axis=1) - px.min(axis=1)
    return MODALITY_IR if float(spread.mean()) <= config.max_mean_spread else MODALITY_RGB


class ModalLiveness:
    """The per-attempt checker of one liveness mode (see the module doc).

    Args:
        mode: ``auto``, ``rgb``, ``ir`` or ``challenge``.
        passive: the MiniFASNet pair (needed unless ``mode == "ir"``).
        ir: the IR checker (default: ``IrLiveness(require_ir=True, strobe="auto")``).
        challenge: the head-turn challenge for ``mode == "challenge"`` (default: either way).
        camera_ir: the camera is declared infrared: colour frames are refused in ``auto``.
    """

    def __init__(self, mode: str, *, passive=None, ir: IrLiveness | None = None,
                 challenge: HeadTurnChallenge | None = None, camera_ir: bool = False) -> None:
        if mode not in LIVENESS_MODES or mode == "off":
            raise ValueError(f"liveness mode must be one of auto, rgb, ir, challenge, got {mode!r}")
        if passive is None and needs_models(mode) and not camera_ir:
            raise LivenessError(f"liveness mode {mode!r} needs the MiniFASNet pair for colour frames: "
                                "pass --liveness-dir DIR (models from `edge-export liveness`)")
        self.mode = mode
        self.passive = passive
        self.ir = ir if ir is not None else IrLiveness(require_ir=True, strobe="auto")
        self.challenge = (challenge or HeadTurnChallenge()) if mode == "challenge" else None
        self.camera_ir = bool(camera_ir)
        self.reset()

    @property
    def models(self):
        """The passive pair's models (for reports of which models ran)."""
        return getattr(self.passive, "models", None) or []

    def reset(self, *, still: bool = False) -> None:
        """Start a new attempt: modality undecided, IR and challenge state cleared."""
        self.modality: str | None = {"rgb": MODALITY_RGB, "ir": MODALITY_IR}.get(self.mode)
        self.decided_at: int | None = None
        self.switched = False
        self._seen = 0
        self._last = None
        self.ir.reset(still=still)
        if self.challenge is not None:
            self.challenge.reset()

    def observe(self, image) -> None:
        """Every frame of the attempt (also those without a face): decides the modality."""
        if self._last is image:
            return
        self._last = image
        self._seen += 1
        if self.mode == MODALITY_RGB:
            return
        modality = frame_modality(image, self.ir.config)
        if modality is None:
            return  # a dark frame of unknown kind decides nothing
        if modality == MODALITY_RGB and (self.mode == "ir" or self.camera_ir):
            self.ir.observe(image)  # raises NotIrSourceError naming the figures
        if self.modality is None:
            self.modality, self.decided_at = modality, self._seen - 1
        elif modality != self.modality:
            self.switched = True
        if self.modality == MODALITY_IR and not self.switched:
            self.ir.observe(image)

    def check(self, image, box_xyxy, landmarks=None) -> LivenessResult:
        if self._last is not image:  # used without the pipeline, which observes every frame first
            self.observe(image)
        base = {"mode": self.mode, "modality": self.modality, "decided_at_frame": self.decided_at}
        if self.switched:
            return LivenessResult(0.0, False, METHOD, {**base, "reason": "modality_changed"})
        if self.modality is None:
            return LivenessResult(0.0, False, METHOD, {**base, "skipped": "dark"})
        inner = (self.passive if self.modality == MODALITY_RGB else self.ir).check(image, box_xyxy, landmarks)
        results = [inner]
        if self.challenge is not None and inner.live:  # only frames the base check accepts can turn
            results.append(self.challenge.check(image, box_xyxy, landmarks))
        elif self.challenge is not None:
            results.append(LivenessResult(0.0, False, "head_turn", {"state": "waiting_for_live_frame"}))
        detail = {**base, **{r.method: {"score": round(r.score, 4), "live": r.live, **r.detail} for r in results}}
        return LivenessResult(min(r.score for r in results), all(r.live for r in results),
                              "+".join(r.method for r in results), detail)

    def close(self) -> None:
        close = getattr(self.passive, "close", None)
        if close is not None:
            close()


def build_liveness(mode: str, *, passive=None, camera_ir: bool = False, strobe="auto",
                   challenge_direction: str = "either") -> ModalLiveness | None:
    """The checker of ``mode`` (``None`` for ``off``, with a warning logged).

    Args:
        mode: one of :data:`LIVENESS_MODES`.
        passive: a :class:`~edge.face.liveness.PassiveLiveness` (closed with the checker).
        camera_ir: the profile declares an IR camera (``auto`` then refuses colour frames).
        strobe: the IR checker's strobe setting (``True``, ``False`` or ``"auto"``).
        challenge_direction: the head turn asked for in ``challenge`` mode.

    Raises:
        ValueError: an unknown mode.
        LivenessError: a mode that needs the MiniFASNet pair without it.
    """
    if mode not in LIVENESS_MODES:
        raise ValueError(f"liveness mode must be one of {', '.join(LIVENESS_MODES)}, got {mode!r}")
    if mode == "off":
        log.warning(OFF_WARNING)
        if passive is not None:
            passive.close()
        return None
    return ModalLiveness(mode, passive=passive, camera_ir=camera_ir,
                         ir=IrLiveness(require_ir=True, strobe=strobe),
                         challenge=HeadTurnChallenge(challenge_direction) if mode == "challenge" else None)


def begin_attempt(checker, *, still: bool = False) -> None:
    """Reset ``checker`` (any liveness checker, or None) for a new attempt."""
    reset = getattr(checker, "reset", None)
    if reset is None:
        return
    try:
        reset(still=still)
    except TypeError:  # checkers without temporal state take no arguments
        reset()


def _figures(d: dict) -> str:
    keys = ("face_level", "face_change", "surround_change", "strobe", "box_jump", "yaw", "state")
    parts = [f"{k} {d[k]}" for k in keys if k in d]
    if "models" in d:
        parts += [f"{name} {p[1]:.3f}" for name, p in d["models"].items()]
    why = d.get("reason") or d.get("skipped")
    return ", ".join(parts + ([f"({why})"] if why else []))


def describe(result: LivenessResult | None) -> str:
    """One line with the modality decided and each check's figures (``--explain``)."""
    if result is None:
        return "-"
    d = result.detail
    if "modality" not in d:
        return f"{result.method}: {_figures(d)}"
    head = f"{d['mode']}→{d['modality'] or 'undecided'}"
    checks = [f"{k}: {_figures(v)}" for k, v in d.items() if isinstance(v, dict)]
    why = d.get("reason") or d.get("skipped")
    return "; ".join([head] + checks + ([f"({why})"] if why else []))
