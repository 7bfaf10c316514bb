"""Multi-object tracking by IoU and a constant-velocity Kalman filter (the ByteTrack family).

Each frame, every known track predicts where its box is now. Detections are then associated in
two stages, as in ByteTrack (Zhang et al., ECCV 2022):

1. detections scoring at least ``high_score`` against every track (tracked or recently lost);
2. the remaining low-score detections (``low_score`` ≤ score < ``high_score``) against the
   tracks still unmatched that were tracked in the previous frame — a partly occluded object
   whose score dipped keeps its id instead of being dropped.

Unmatched high-score detections scoring at least ``new_track_score`` start new tracks. A track
that finds no detection is *lost*; it keeps predicting and can be picked up again for
``max_age`` frames, after which it *ends* (its id is reported once in :attr:`ByteTracker.ended_ids`
and never reused). Association is class-aware by default: a box only continues a track of its
own class.

Matching is greedy on IoU (best pair first), which for the handful of objects an edge camera
sees gives the same pairs as an optimal assignment at a fraction of the cost and with no SciPy.

Example:
    >>> import numpy as np
    >>> from edge.types import Detections
    >>> tracker = ByteTracker()
    >>> d = Detections(np.array([[10, 10, 50, 90]]), np.array([0.9]), np.array([0]))
    >>> tracker.update(d).tracker_id.tolist()
    [1]
    >>> d.tracker_id is None          # the caller's object is never modified
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.types import Detections
from edge.vision.nms import box_iou

__all__ = ["ByteTracker", "TrackerConfig", "KalmanBoxFilter"]

#: Kalman noise, relative to the box height, as in SORT/DeepSORT/ByteTrack (``KalmanFilterXYAH``).
STD_WEIGHT_POSITION = 1.0 / 20
STD_WEIGHT_VELOCITY = 1.0 / 160
#: Floor on box height used for the noise terms, so a degenerate box cannot make them zero.
MIN_NOISE_HEIGHT = 1.0
_STATE = 8  # cx, cy, aspect (w/h), h and their velocities
_MEAS = 4


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds.

    Attributes:
        high_score: detections at or above this take part in the first association.
        low_score: detections below this are ignored; between the two they can only continue a
            track in the second association.
        new_track_score: an unmatched detection needs this score to start a track.
        match_iou: minimum IoU between a predicted track box and a detection (first stage).
        low_match_iou: minimum IoU in the second (low-score) stage.
        max_age: frames a lost track is kept before it ends.
        min_hits: detections a new track needs before it is reported (1 = at once).
        class_aware: only associate a detection with a track of the same class.
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.5
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    max_age: int = 30
    min_hits: int = 1
    class_aware: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got low_score={self.low_score}, "
                             f"high_score={self.high_score}")
        if not 0.0 <= self.new_track_score <= 1.0:
            raise ValueError(f"new_track_score must be in [0, 1], got {self.new_track_score}")
        for name in ("match_iou", "low_match_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.max_age < 0 or self.min_hits < 1:
            raise ValueError(f"need max_age >= 0 and min_hits >= 1, got max_age={self.max_age}, "
                             f"min_hits={self.min_hits}")


def _xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] + w / 2, b[1] + h / 2, w / max(h, 1e-6), h], np.float64)


def _xyah_to_xyxy(m: np.ndarray) -> np.ndarray:
    h = max(m[3], 0.0)
    w = m[2] * h
    return np.array([m[0] - w / 2, m[1] - h / 2, m[0] + w / 2, m[1] + h / 2], np.float64)


class KalmanBoxFilter:
    """Constant-velocity Kalman filter over (centre x, centre y, aspect, height), one frame per step.

    The same model as ByteTrack's ``KalmanFilterXYAH``: position noise proportional to the box
    height, aspect ratio nearly constant.
    """

    _F = np.eye(_STATE)
    _F[:_MEAS, _MEAS:] = np.eye(_MEAS)
    _H = np.eye(_MEAS, _STATE)

    def __init__(self, box_xyxy: np.ndarray) -> None:
        z = _xyxy_to_xyah(box_xyxy)
        self.mean = np.concatenate([z, np.zeros(_MEAS)])
        h = max(z[3], MIN_NOISE_HEIGHT)
        std = [2 * STD_WEIGHT_POSITION * h, 2 * STD_WEIGHT_POSITION * h, 1e-2, 2 * STD_WEIGHT_POSITION * h,
               10 * STD_WEIGHT_VELOCITY * h, 10 * STD_WEIGHT_VELOCITY * h, 1e-5, 10 * STD_WEIGHT_VELOCITY * h]
        self.cov = np.diag(np.square(std))

    def predict(self, freeze_height_velocity: bool = False) -> None:
        """Advance one frame. ByteTrack zeroes the height velocity of lost tracks."""
        if freeze_height_velocity:
            self.mean[7] = 0.0
        h = max(self.mean[3], MIN_NOISE_HEIGHT)
        q = np.square([STD_WEIGHT_POSITION * h, STD_WEIGHT_POSITION * h, 1e-2, STD_WEIGHT_POSITION * h,
                       STD_WEIGHT_VELOCITY * h, STD_WEIGHT_VELOCITY * h, 1e-5, STD_WEIGHT_VELOCITY * h])
        self.mean = self._F @ self.mean
        self.cov = self._F @ self.cov @ self._F.T + np.diag(q)

    def update(self, box_xyxy: np.ndarray) -> None:
        """Correct the state with a measured box."""
        z = _xyxy_to_xyah(box_xyxy)
        h = max(self.mean[3], MIN_NOISE_HEIGHT)
        r = np.diag(np.square([STD_WEIGHT_POSITION * h, STD_WEIGHT_POSITION * h, 1e-1, STD_WEIGHT_POSITION * h]))
        s = self._H @ self.cov @ self._H.T + r
        gain = np.linalg.solve(s, (self.cov @ self._H.T).T).T
        self.mean = self.mean + gain @ (z - self._H @ self.mean)
        self.cov = self.cov - gain @ s @ gain.T

    @property
    def box(self) -> np.ndarray:
        """Current box estimate ``(x1, y1, x2, y2)``."""
        return _xyah_to_xyxy(self.mean)

    @classmethod
    def predict_many(cls, filters: list["KalmanBoxFilter"], freeze_height_velocity: np.ndarray) -> np.ndarray:
        """:meth:`predict` for many filters at once (the same arithmetic, batched).

        Args:
            filters: the filters to advance.
            freeze_height_velocity: boolean per filter, see :meth:`predict`.

        Returns:
            ``N×4`` predicted boxes ``(x1, y1, x2, y2)``.
        """
        if not filters:
            return np.zeros((0, 4))
        means = np.stack([f.mean for f in filters])
        covs = np.stack([f.cov for f in filters])
        means[np.asarray(freeze_height_velocity, bool), 7] = 0.0
        h = np.maximum(means[:, 3], MIN_NOISE_HEIGHT)
        std = np.stack([STD_WEIGHT_POSITION * h, STD_WEIGHT_POSITION * h, np.full_like(h, 1e-2),
                        STD_WEIGHT_POSITION * h, STD_WEIGHT_VELOCITY * h, STD_WEIGHT_VELOCITY * h,
                        np.full_like(h, 1e-5), STD_WEIGHT_VELOCITY * h], axis=1)
        means = means @ cls._F.T
        covs = cls._F @ covs @ cls._F.T
        covs[:, np.arange(_STATE), np.arange(_STATE)] += np.square(std)
        for f, m, c in zip(filters, means, covs):
            f.mean, f.cov = m, c
        hh = np.maximum(means[:, 3], 0.0)
        ww = means[:, 2] * hh
        return np.stack([means[:, 0] - ww / 2, means[:, 1] - hh / 2, means[:, 0] + ww / 2, means[:, 1] + hh / 2], 1)


class _Track:
    __slots__ = ("kf", "class_id", "hits", "missed", "track_id", "tracked")

    def __init__(self, box: np.ndarray, class_id: int) -> None:
        self.kf = KalmanBoxFilter(box)
        self.class_id = class_id
        self.hits = 1
        self.missed = 0
        self.track_id: int | None = None  # assigned when the track is confirmed (min_hits)
        self.tracked = True  # matched in the previous frame


def _greedy_match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken best IoU first; each row and column at most once."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= min_iou)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r, used_c, pairs = set(), set(), []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


class ByteTracker:
    """Stable ids for the detections of consecutive frames.

    Args:
        config: thresholds, see :class:`TrackerConfig`.

    Attributes:
        ended_ids: ids of the tracks that ended during the last :meth:`update` (lost for more
            than ``max_age`` frames); each id is reported here exactly once.
        frame_count: frames seen since creation or :meth:`reset`.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self.ended_ids: tuple[int, ...] = ()
        self.frame_count = 0

    def reset(self) -> None:
        """Forget every track (ids keep increasing, so they are never reused)."""
        self._tracks = []
        self.ended_ids = ()
        self.frame_count = 0

    @property
    def active_ids(self) -> tuple[int, ...]:
        """Ids of the confirmed tracks that are not ended (tracked or lost)."""
        return tuple(t.track_id for t in self._tracks if t.track_id is not None)

    def _iou(self, rows: list[int], pred: np.ndarray, track_cls: np.ndarray, boxes: np.ndarray,
             classes: np.ndarray) -> np.ndarray:
        """IoU of the predicted boxes of tracks ``rows`` with ``boxes`` (0 across classes if class-aware)."""
        if not rows or boxes.shape[0] == 0:
            return np.zeros((len(rows), boxes.shape[0]))
        iou = box_iou(pred[rows], boxes)
        if self.config.class_aware:
            iou = np.where(track_cls[rows][:, None] == classes[None, :], iou, 0.0)
        return iou

    def update(self, detections: Detections) -> Detections:
        """Associate one frame's detections with the tracks.

        Args:
            detections: this frame's boxes (source pixels), scores and classes. Not modified.

        Returns:
            A new :class:`Detections` holding the detections that belong to confirmed tracks, in
            their input order, with ``tracker_id`` set. Detections below ``low_score``, and
            unconfirmed or unmatched ones, are left out.
        """
        cfg = self.config
        self.frame_count += 1
        boxes = np.asarray(detections.xyxy, np.float64)
        scores = np.asarray(detections.score, np.float64)
        classes = np.asarray(detections.class_id, np.int64)
        pool = self._tracks
        pred = KalmanBoxFilter.predict_many([t.kf for t in pool], np.array([not t.tracked for t in pool], bool))
        track_cls = np.array([t.class_id for t in pool], np.int64)

        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        assigned: dict[int, _Track] = {}  # detection row -> track

        # Stage 1: high-score detections against every track.
        everyone = list(range(len(pool)))
        pairs = _greedy_match(self._iou(everyone, pred, track_cls, boxes[high], classes[high]), cfg.match_iou)
        matched_tracks = set()
        for r, c in pairs:
            assigned[int(high[c])] = pool[r]
            matched_tracks.add(r)
        unmatched_high = [int(high[c]) for c in range(len(high)) if int(high[c]) not in assigned]

        # Stage 2: low-score detections against tracks that were tracked last frame.
        rest = [i for i, t in enumerate(pool) if i not in matched_tracks and t.tracked]
        for r, c in _greedy_match(self._iou(rest, pred, track_cls, boxes[low], classes[low]), cfg.low_match_iou):
            assigned[int(low[c])] = pool[rest[r]]

        matched = set()
        for row, track in assigned.items():
            track.kf.update(boxes[row])
            track.class_id = int(classes[row])
            track.hits += 1
            track.missed = 0
            track.tracked = True
            matched.add(id(track))
            if track.track_id is None and track.hits >= cfg.min_hits:
                track.track_id = self._take_id()

        ended, kept = [], []
        for t in self._tracks:
            if id(t) in matched:
                kept.append(t)
                continue
            t.tracked = False
            t.missed += 1
            if t.missed > cfg.max_age or t.track_id is None:
                # Unconfirmed tracks get no second chance: a one-frame blip is forgotten.
                if t.track_id is not None:
                    ended.append(t.track_id)
                continue
            kept.append(t)

        for row in unmatched_high:
            if scores[row] >= cfg.new_track_score:
                track = _Track(boxes[row], int(classes[row]))
                if cfg.min_hits <= 1:
                    track.track_id = self._take_id()
                assigned[row] = track
                kept.append(track)
        self._tracks = kept
        self.ended_ids = tuple(ended)

        rows = sorted(r for r, t in assigned.items() if t.track_id is not None)
        ids = np.array([assigned[r].track_id for r in rows], np.int64)
        return detections[np.array(rows, np.int64)].replace(tracker_id=ids)

    def _take_id(self) -> int:
        tid = self._next_id
        self._next_id += 1
        return tid
