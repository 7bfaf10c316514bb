"""Active liveness challenge: a head turn, detected from the 5 landmarks over frames.

The subject starts facing the camera and turns the head; yaw is estimated from the landmarks
(:func:`edge.face.quality.estimate_pose`). A printed photo or a still on a screen cannot turn
(tilting a photo changes roll and foreshortens it, but moves the nose only with the eyes).

A **blink** challenge is not offered: the 5 landmarks of YuNet / BlazeFace give each eye as one
point, so the eye opening (eye aspect ratio) cannot be measured. It needs a landmark model with
eyelid points (e.g. 68-point or MediaPipe Face Mesh), which the project does not ship.
"""

from __future__ import annotations

from edge.face.quality import estimate_pose
from edge.face.types import LivenessResult

__all__ = ["HeadTurnChallenge", "DIRECTIONS"]

#: ``"left"``/``"right"``: the nose turns towards the image's left/right (negative/positive yaw).
DIRECTIONS = ("either", "left", "right", "both")
METHOD_HEAD_TURN = "head_turn"


class HeadTurnChallenge:
    """Pass when the head turns from frontal to at least ``min_turn_deg`` of yaw.

    Args:
        direction: ``"either"``, ``"left"``, ``"right"`` or ``"both"`` (left and right, any order).
        min_turn_deg: |yaw| that counts as turned.
        max_frontal_deg: |yaw| that counts as frontal (the challenge starts there).
        max_frames: frames allowed after the frontal start before the challenge restarts.

    :meth:`check` returns the state so far: ``live`` once the turn is complete, ``score`` the
    progress in [0, 1]. Call :meth:`reset` between attempts.

    Example:
        >>> ch = HeadTurnChallenge("either")                            # doctest: +SKIP
        >>> for face in faces_over_frames:                              # doctest: +SKIP
        ...     if ch.check(None, face.box, face.landmarks).live: break
    """

    def __init__(self, direction: str = "either", *, min_turn_deg: float = 15.0, max_frontal_deg: float = 8.0,
                 max_frames: int = 60) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if not 0 <= max_frontal_deg < min_turn_deg:
            raise ValueError(f"need 0 <= max_frontal_deg < min_turn_deg, got {max_frontal_deg}, {min_turn_deg}")
        self.direction = direction
        self.min_turn = float(min_turn_deg)
        self.max_frontal = float(max_frontal_deg)
        self.max_frames = int(max_frames)
        self.reset()

    def reset(self) -> None:
        self._started = False
        self._frames = 0
        self._seen: set[str] = set()
        self._done = False

    def _needed(self) -> set[str]:
        return {"left", "right"} if self.direction == "both" else ({self.direction} if self.direction != "either" else set())

    def check(self, image, box_xyxy, landmarks) -> LivenessResult:
        """Feed one frame's landmarks (``image`` and ``box_xyxy`` are unused)."""
        yaw, _, _ = estimate_pose(landmarks)
        if not self._done:
            if not self._started or self._frames >= self.max_frames:
                restarted = self._started
                self.reset()
                if abs(yaw) <= self.max_frontal:
                    self._started = True
                return self._result(yaw, "restarted" if restarted else "waiting_for_frontal")
            self._frames += 1
            if abs(yaw) >= self.min_turn:
                self._seen.add("right" if yaw > 0 else "left")
            needed = self._needed()
            self._done = bool(self._seen) if not needed else needed <= self._seen
        return self._result(yaw, "done" if self._done else "turn_head")

    def _result(self, yaw: float, state: str) -> LivenessResult:
        if self._done:
            score = 1.0
        else:  # half for a frontal start, just under half more for the directions seen so far
            needed = self._needed()
            frac = len(self._seen & needed) / len(needed) if needed else 0.0
            score = 0.5 * self._started + 0.49 * frac
        return LivenessResult(score=float(score), live=self._done, method=METHOD_HEAD_TURN,
                              detail={"yaw": round(yaw, 2), "state": state, "seen": sorted(self._seen)})
