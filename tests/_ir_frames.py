"""IR-like frame sequences made from real face photos, for the IR liveness tests and benchmark.

An IR camera with its emitter beside the lens sees a grey image (skin reflects near-infrared
evenly, colour is gone), bright where the emitter's light lands on something near and dark
further away (light falls off with distance), with sensor noise. A strobing emitter lights
alternate frames; the unlit frames keep only a little ambient light.

The photo is placed in a wider "room" (a smooth texture, further from the emitter than the
face); the emitter lights both. Spoofs:

* ``phone_replay``: a phone or monitor shows the face; screens emit no near-infrared, so the
  face is nearly black (ambient only), with the emitter's reflection on the glass.
* ``self_lit_replay``: a display that does light its face (emits near-infrared): under a
  strobing emitter the face stays steady while the room follows the strobe; under a constant
  emitter the display's backlight PWM beats with the frame rate (:data:`PWM_BEAT`).
* ``ir_video_replay``: such a display replaying a video recorded with a strobing IR camera, on
  a camera with a constant emitter: screen and face go lit/unlit like a strobe. The IR checks
  cannot tell it from a strobing emitter (it is listed as not stopped).
* ``printed_photo``: a print held up to the camera: lit by the emitter like a face, flat
  (lower contrast), so it answers the strobe: the IR checks do not stop it (the head-turn
  challenge does).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ir_sequence", "attempt", "KINDS", "CANVAS"]

#: (width, height) of the simulated IR frames.
CANVAS = (640, 480)
#: The photo's longer side in the frame.
PHOTO_SIDE = 360
LIT_GAIN, UNLIT_GAIN = 1.0, 0.12
ROOM_LEVEL = 45.0
KINDS = ("live", "phone_replay", "self_lit_replay", "printed_photo", "ir_video_replay")
#: Backlight of a display whose PWM beats with the camera's frame rate (relative brightness).
PWM_BEAT = (1.0, 0.6, 0.85, 0.55)


def _room(rng: np.random.Generator) -> np.ndarray:
    w, h = CANVAS
    coarse = rng.uniform(0.4, 1.0, (6, 8)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * ROOM_LEVEL


def _falloff() -> np.ndarray:
    """The emitter's light on the scene: strongest at the centre, about a quarter at the corners."""
    w, h = CANVAS
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2
    return 1.25 / (1.0 + 1.5 * r2)


def _photo_grey(photo_bgr: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    grey = photo_bgr if photo_bgr.ndim == 2 else cv2.cvtColor(photo_bgr, cv2.COLOR_BGR2GRAY)
    scale = PHOTO_SIDE / max(grey.shape)
    grey = cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA).astype(np.float32)
    grey = 255.0 * (grey / 255.0) ** 0.8  # skin is bright and even under near-infrared
    w, h = CANVAS
    y0, x0 = (h - grey.shape[0]) // 2, (w - grey.shape[1]) // 2
    return grey, (slice(y0, y0 + grey.shape[0]), slice(x0, x0 + grey.shape[1]))


def _frame(room, photo, where, photo_gain, room_gain, falloff, rng, noise, shift=(0, 0)) -> np.ndarray:
    scene = room * room_gain
    scene[where] = photo * photo_gain
    if shift != (0, 0):
        scene = np.roll(scene, shift, axis=(0, 1))
    out = scene * falloff + rng.normal(0.0, noise, scene.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def ir_sequence(photo_bgr: np.ndarray, kind: str = "live", *, frames: int = 6, strobe: bool = False,
                seed: int = 0, noise: float = 3.0) -> list[np.ndarray]:
    """``frames`` single-channel IR-like frames of ``photo_bgr`` shown as ``kind`` (see module doc).

    With ``strobe`` the emitter lights even frames only. A live face moves a pixel or two and
    its brightness varies by ~2 % between frames.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng(seed)
    room, fall = _room(rng), _falloff()
    photo, where = _photo_grey(photo_bgr)
    if kind == "printed_photo":  # ink and paper under NIR: flat, lower contrast
        photo = 0.5 * photo + 0.5 * float(photo.mean())
    out = []
    for i in range(frames):
        lit = not strobe or i % 2 == 0
        gain = LIT_GAIN if lit else UNLIT_GAIN
        jitter = 1.0 + rng.uniform(-0.02, 0.02)
        shift = (int(rng.integers(-2, 3)), int(rng.integers(-2, 3)))
        if kind in ("live", "printed_photo"):
            frame = _frame(room, photo, where, gain * jitter, gain, fall, rng, noise, shift)
        elif kind == "phone_replay":  # the screen emits no NIR: ambient only, plus a glint on the glass
            frame = _frame(room, photo, where, UNLIT_GAIN * 0.5, gain, fall, rng, noise)
            if lit:
                cv2.circle(frame, (CANVAS[0] // 2 + 40, CANVAS[1] // 2 - 60), 14, 250, -1)
        elif kind == "self_lit_replay":  # ignores the emitter (strobing camera) or flickers (steady one)
            face_gain = LIT_GAIN * jitter if strobe else PWM_BEAT[i % len(PWM_BEAT)]
            frame = _frame(room, photo, where, face_gain, gain, fall, rng, noise)
        else:  # a recording of a strobing camera: the screen alternates whatever this emitter does
            frame = _frame(room, photo, where, LIT_GAIN if i % 2 == 0 else UNLIT_GAIN, gain, fall, rng, noise)
        out.append(frame)
    return out


def attempt(pipe, frames: list[np.ndarray], k: int = 3, n: int = 5) -> tuple[bool, list]:
    """One liveness attempt through ``pipe`` (a FacePipeline), decided as ``edge unlock verify``
    does: a still on its one frame, a sequence when ``k`` of the last ``n`` frames are live.

    Returns:
        ``(accepted, [LivenessResult or None per frame])``.
    """
    from edge.face.liveness_modes import begin_attempt

    still = len(frames) == 1
    begin_attempt(pipe.liveness, still=still)
    window: list[bool] = []
    results = []
    for f in frames:
        face = pipe.analyze(f, embed=False).largest
        live = face is not None and face.liveness is not None and face.liveness.live
        results.append(None if face is None else face.liveness)
        window = (window + [live])[-n:]
        if sum(window) >= (1 if still else k):
            return True, results
    return False, results
