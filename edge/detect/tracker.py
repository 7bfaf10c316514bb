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
The tracks' Kalman states live in stacked arrays, so prediction, correction and bookkeeping run
once per frame for all tracks rather than once per track.

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

__all__ = ["ByteTracker", "TrackerConfig", "KalmanBoxFilter", "kalman_initiate", "kalman_predict", "kalman_update"]

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


_F = np.eye(_STATE)
_F[:_MEAS, _MEAS:] = np.eye(_MEAS)
_DIAG = np.arange(_STATE)
#: ``track_id`` of a track not yet confirmed (``min_hits``).
_UNCONFIRMED = -1


def _xyxy_to_xyah_rows(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return np.stack([b[:, 0] + w / 2, b[:, 1] + h / 2, w / np.maximum(h, 1e-6), h], axis=1)


def _noise_std(h: np.ndarray, position: float, aspect: float, velocity: float | None, aspect_velocity: float) -> np.ndarray:
    """Per-row standard deviations ``N×4`` (measurement) or ``N×8`` (with velocities) for heights ``h``."""
    p = position * h
    cols = [p, p, np.full_like(h, aspect), p]
    if velocity is not None:
        v = velocity * h
        cols += [v, v, np.full_like(h, aspect_velocity), v]
    return np.stack(cols, axis=1)


def kalman_initiate(boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States of new tracks: ``(means N×8, covariances N×8×8)`` for ``N×4`` boxes."""
    z = _xyxy_to_xyah_rows(boxes_xyxy)
    means = np.concatenate([z, np.zeros_like(z)], axis=1)
    h = np.maximum(z[:, 3], MIN_NOISE_HEIGHT)
    std = _noise_std(h, 2 * STD_WEIGHT_POSITION, 1e-2, 10 * STD_WEIGHT_VELOCITY, 1e-5)
    covs = np.zeros((len(z), _STATE, _STATE))
    covs[:, _DIAG, _DIAG] = np.square(std)
    return means, covs


def kalman_predict(means: np.ndarray, covs: np.ndarray, freeze_height_velocity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Advance ``N`` states one frame. ByteTrack zeroes the height velocity of lost tracks."""
    means = means.copy()
    means[np.asarray(freeze_height_velocity, bool), 7] = 0.0
    h = np.maximum(means[:, 3], MIN_NOISE_HEIGHT)
    std = _noise_std(h, STD_WEIGHT_POSITION, 1e-2, STD_WEIGHT_VELOCITY, 1e-5)
    means = means @ _F.T
    covs = _F @ covs @ _F.T
    covs[:, _DIAG, _DIAG] += np.square(std)
    return means, covs


def kalman_update(means: np.ndarray, covs: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct ``N`` states with ``N`` measured boxes."""
    z = _xyxy_to_xyah_rows(boxes_xyxy)
    h = np.maximum(means[:, 3], MIN_NOISE_HEIGHT)
    r = np.square(_noise_std(h, STD_WEIGHT_POSITION, 1e-1, None, 0.0))
    pht = covs[:, :, :_MEAS]                       # P Hᵀ (H selects the first four states)
    s = pht[:, :_MEAS, :].copy()                   # H P Hᵀ + R
    s[:, _DIAG[:_MEAS], _DIAG[:_MEAS]] += r
    gain = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)  # P Hᵀ S⁻¹, N×8×4
    means = means + np.einsum("nij,nj->ni", gain, z - means[:, :_MEAS])
    covs = covs - gain @ s @ gain.transpose(0, 2, 1)
    return means, covs


def _boxes_of(means: np.ndarray) -> np.ndarray:
    h = np.maximum(means[:, 3], 0.0)
    w = means[:, 2] * h
    return np.stack([means[:, 0] - w / 2, means[:, 1] - h / 2, means[:, 0] + w / 2, means[:, 1] + h / 2], 1)


class KalmanBoxFilter:
    """Constant-velocity Kalman filter over (centre x, centre y, aspect, height), one frame per step.

    The same model as ByteTrack's ``KalmanFilterXYAH``: position noise proportional to the box
    height, aspect ratio nearly constant. :class:`ByteTracker` runs the same arithmetic on all
    its tracks at once (:func:`kalman_initiate`, :func:`kalman_predict`, :func:`kalman_update`).
    """

    def __init__(self, box_xyxy: np.ndarray) -> None:
        means, covs = kalman_initiate(np.asarray(box_xyxy, np.float64).reshape(1, 4))
        self.mean, self.cov = means[0], covs[0]

    def predict(self, freeze_height_velocity: bool = False) -> None:
        """Advance one frame. ByteTrack zeroes the height velocity of lost tracks."""
        means, covs = kalman_predict(self.mean[None], self.cov[None], np.array([freeze_height_velocity]))
        self.mean, self.cov = means[0], covs[0]

    def update(self, box_xyxy: np.ndarray) -> None:
        """Correct the state with a measured box."""
        means, covs = kalman_update(self.mean[None], self.cov[None], np.asarray(box_xyxy, np.float64).reshape(1, 4))
        self.mean, self.cov = means[0], covs[0]

    @property
    def box(self) -> np.ndarray:
        """Current box estimate ``(x1, y1, x2, y2)``."""
        return _boxes_of(self.mean[None])[0]


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


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of ``N×4`` and ``M×4`` float64 boxes (:func:`~edge.vision.nms.box_iou` without
    its input checks: the tracker's arrays are already well formed)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class _TrackTable:
    """Every track's state as parallel arrays (row ``i`` is track ``i``), so that prediction,
    correction and bookkeeping run once per frame over all tracks instead of once per track."""

    __slots__ = ("means", "covs", "class_id", "hits", "missed", "track_id", "tracked")

    def __init__(self, means: np.ndarray, covs: np.ndarray, class_id: np.ndarray, track_id: np.ndarray) -> None:
        n = len(means)
        self.means, self.covs = means, covs
        self.class_id = np.asarray(class_id, np.int64)
        self.hits = np.ones(n, np.int64)
        self.missed = np.zeros(n, np.int64)
        self.track_id = np.asarray(track_id, np.int64)  # _UNCONFIRMED until min_hits
        self.tracked = np.ones(n, bool)  # matched in the previous frame

    @classmethod
    def empty(cls) -> "_TrackTable":
        return cls(np.zeros((0, _STATE)), np.zeros((0, _STATE, _STATE)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.means)

    def select(self, rows: np.ndarray) -> "_TrackTable":
        out = _TrackTable.__new__(_TrackTable)
        for name in self.__slots__:
            setattr(out, name, getattr(self, name)[rows])
        return out

    def extend(self, other: "_TrackTable") -> "_TrackTable":
        if not len(other):
            return self
        out = _TrackTable.__new__(_TrackTable)
        for name in self.__slots__:
            setattr(out, name, np.concatenate([getattr(self, name), getattr(other, name)]))
        return out


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
        self._tracks = _TrackTable.empty()
        self._next_id = 1
        self.ended_ids: tuple[int, ...] = ()
        self.frame_count = 0

    def reset(self) -> None:
        """Forget every track (ids keep increasing, so they are never reused)."""
        self._tracks = _TrackTable.empty()
        self.ended_ids = ()
        self.frame_count = 0

    @property
    def active_ids(self) -> tuple[int, ...]:
        """Ids of the confirmed tracks that are not ended (tracked or lost)."""
        ids = self._tracks.track_id
        return tuple(int(i) for i in ids[ids != _UNCONFIRMED])

    def _iou(self, rows: np.ndarray, pred: np.ndarray, track_cls: np.ndarray, boxes: np.ndarray,
             classes: np.ndarray) -> np.ndarray:
        """IoU of the predicted boxes of tracks ``rows`` with ``boxes`` (0 across classes if class-aware)."""
        if not len(rows) or boxes.shape[0] == 0:
            return np.zeros((len(rows), boxes.shape[0]))
        iou = _iou(pred[rows], boxes)
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
        boxes = np.asarray(detections.xyxy, np.float64).reshape(-1, 4)
        scores = np.asarray(detections.score, np.float64)
        classes = np.asarray(detections.class_id, np.int64)
        t = self._tracks
        if len(t):
            t.means, t.covs = kalman_predict(t.means, t.covs, ~t.tracked)
        pred = _boxes_of(t.means)

        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        track_of: dict[int, int] = {}  # detection row -> track row, in association order
        matched = np.zeros(len(t), bool)

        # Stage 1: high-score detections against every track.
        everyone = np.arange(len(t))
        for r, c in _greedy_match(self._iou(everyone, pred, t.class_id, boxes[high], classes[high]), cfg.match_iou):
            track_of[int(high[c])] = r
            matched[r] = True
        unmatched_high = [int(d) for d in high if int(d) not in track_of]

        # Stage 2: low-score detections against tracks that were tracked last frame.
        rest = np.flatnonzero(~matched & t.tracked)
        for r, c in _greedy_match(self._iou(rest, pred, t.class_id, boxes[low], classes[low]), cfg.low_match_iou):
            track_of[int(low[c])] = int(rest[r])
            matched[rest[r]] = True

        row_ids: dict[int, int] = {}  # detection row -> confirmed track id
        if track_of:
            dets = np.fromiter(track_of.keys(), np.int64, len(track_of))
            rows = np.fromiter(track_of.values(), np.int64, len(track_of))
            t.means[rows], t.covs[rows] = kalman_update(t.means[rows], t.covs[rows], boxes[dets])
            t.class_id[rows] = classes[dets]
            t.hits[rows] += 1
            t.missed[rows] = 0
            t.tracked[rows] = True
            for d, r in zip(dets.tolist(), rows.tolist()):
                if t.track_id[r] == _UNCONFIRMED and t.hits[r] >= cfg.min_hits:
                    t.track_id[r] = self._take_id()
                if t.track_id[r] != _UNCONFIRMED:
                    row_ids[d] = int(t.track_id[r])

        lost = ~matched
        t.tracked[lost] = False
        t.missed[lost] += 1
        # Unconfirmed tracks get no second chance: a one-frame blip is forgotten.
        gone = lost & ((t.missed > cfg.max_age) | (t.track_id == _UNCONFIRMED))
        self.ended_ids = tuple(int(i) for i in t.track_id[gone & (t.track_id != _UNCONFIRMED)])
        kept = t.select(np.flatnonzero(~gone))

        new_rows = [d for d in unmatched_high if scores[d] >= cfg.new_track_score]
        if new_rows:
            ids = [self._take_id() if cfg.min_hits <= 1 else _UNCONFIRMED for _ in new_rows]
            kept = kept.extend(_TrackTable(*kalman_initiate(boxes[new_rows]), classes[new_rows], ids))
            row_ids.update((d, i) for d, i in zip(new_rows, ids) if i != _UNCONFIRMED)
        self._tracks = kept

        rows = sorted(row_ids)
        return detections[np.array(rows, np.int64)].replace(tracker_id=np.array([row_ids[r] for r in rows], np.int64))

    def _take_id(self) -> int:
        tid = self._next_id
        self._next_id += 1
        return tid
