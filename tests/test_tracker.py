"""ByteTracker: stable ids through misses, crossings and score dips; the caller's data untouched."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detect.tracker import ByteTracker, KalmanBoxFilter, TrackerConfig, kalman_initiate, kalman_predict, kalman_update
from edge.types import Detections

BOX_W, BOX_H = 40.0, 80.0


def dets(rows) -> Detections:
    """rows: (cx, cy, score, class_id) per object."""
    if not rows:
        return Detections.empty()
    a = np.array(rows, np.float64)
    xyxy = np.stack([a[:, 0] - BOX_W / 2, a[:, 1] - BOX_H / 2, a[:, 0] + BOX_W / 2, a[:, 1] + BOX_H / 2], 1)
    return Detections(xyxy, a[:, 2], a[:, 3].astype(int))


def ids_by_x(out: Detections) -> dict[int, float]:
    return {int(t): float((b[0] + b[2]) / 2) for t, b in zip(out.tracker_id, out.xyxy)}


@pytest.mark.parametrize("speed, missed_frames", [
    (5.0, [3]),            # one missed frame
    (12.0, [4, 5, 6]),     # several in a row, fast mover
    (0.0, [2, 7]),         # standing still, two separate misses
])
def test_moving_box_keeps_its_id_through_missed_frames(speed, missed_frames):
    tracker = ByteTracker()
    seen = set()
    for i in range(12):
        frame = [] if i in missed_frames else [(100 + speed * i, 200, 0.9, 0)]
        out = tracker.update(dets(frame))
        if i in missed_frames:
            assert len(out) == 0
        else:
            assert len(out) == 1
            seen.add(int(out.tracker_id[0]))
    assert seen == {1}


@pytest.mark.parametrize("dy", [0.0, 20.0, 40.0])
def test_two_crossing_objects_keep_distinct_ids(dy):
    # A moves right, B moves left; they overlap for several frames around the crossing.
    tracker = ByteTracker()
    first = None
    for i in range(30):
        a = (100 + 10 * i, 200, 0.9, 0)
        b = (390 - 10 * i, 200 + dy, 0.85, 0)
        out = tracker.update(dets([a, b]))
        assert len(out) == 2
        tid = {round(x): t for t, x in ids_by_x(out).items()}
        by_obj = (tid[round(a[0])], tid[round(b[0])]) if a[0] != b[0] else None
        if by_obj is None:  # exactly on top of each other: the ids must still be two
            assert len(set(out.tracker_id.tolist())) == 2
            continue
        if first is None:
            first = by_obj
        assert by_obj == first, f"ids swapped at frame {i}: {by_obj} != {first}"
    assert first[0] != first[1]


def test_low_score_detection_continues_a_track_but_does_not_start_one():
    tracker = ByteTracker(TrackerConfig(high_score=0.5, low_score=0.1, new_track_score=0.5))
    assert tracker.update(dets([(100, 100, 0.9, 0)])).tracker_id.tolist() == [1]
    # The tracked object's score dips to 0.3 (occluded); a new object appears at 0.3 too.
    out = tracker.update(dets([(104, 100, 0.3, 0), (400, 100, 0.3, 0)]))
    assert out.tracker_id.tolist() == [1]
    assert out.score.tolist() == pytest.approx([0.3])
    # Below low_score nothing is associated: the track is lost, not matched.
    assert len(tracker.update(dets([(108, 100, 0.05, 0)]))) == 0
    assert tracker.update(dets([(112, 100, 0.9, 0)])).tracker_id.tolist() == [1]


def test_track_ends_after_max_age_once_and_ids_are_not_reused():
    tracker = ByteTracker(TrackerConfig(max_age=3))
    tracker.update(dets([(100, 100, 0.9, 0)]))
    ended = []
    for _ in range(6):
        tracker.update(dets([]))
        ended.extend(tracker.ended_ids)
    assert ended == [1]
    assert tracker.active_ids == ()
    assert tracker.update(dets([(100, 100, 0.9, 0)])).tracker_id.tolist() == [2]


def test_class_aware_association():
    tracker = ByteTracker()
    tracker.update(dets([(100, 100, 0.9, 0)]))
    out = tracker.update(dets([(101, 100, 0.9, 2)]))  # same place, other class: a new object
    assert out.tracker_id.tolist() == [2]
    blind = ByteTracker(TrackerConfig(class_aware=False))
    blind.update(dets([(100, 100, 0.9, 0)]))
    assert blind.update(dets([(101, 100, 0.9, 2)])).tracker_id.tolist() == [1]


def test_min_hits_delays_reporting():
    tracker = ByteTracker(TrackerConfig(min_hits=2))
    assert len(tracker.update(dets([(100, 100, 0.9, 0)]))) == 0
    assert tracker.update(dets([(103, 100, 0.9, 0)])).tracker_id.tolist() == [1]


def test_update_never_modifies_the_callers_detections():
    d = dets([(100, 100, 0.9, 0), (300, 100, 0.05, 1), (500, 100, 0.8, 2)])
    before = (d.xyxy.copy(), d.score.copy(), d.class_id.copy())
    out = ByteTracker().update(d)
    assert d.tracker_id is None
    for a, b in zip(before, (d.xyxy, d.score, d.class_id)):
        np.testing.assert_array_equal(a, b)
    assert out is not d
    # Output keeps input order and drops the detection below low_score.
    assert out.class_id.tolist() == [0, 2]
    np.testing.assert_array_equal(out.xyxy, d.xyxy[[0, 2]])


def test_empty_frames_and_reset():
    tracker = ByteTracker()
    out = tracker.update(Detections.empty())
    assert len(out) == 0 and out.tracker_id is not None
    tracker.update(dets([(100, 100, 0.9, 0)]))
    tracker.reset()
    assert tracker.active_ids == ()
    assert tracker.update(dets([(100, 100, 0.9, 0)])).tracker_id.tolist() == [2]


def test_kalman_filter_learns_constant_velocity():
    kf = KalmanBoxFilter(np.array([0, 0, 40, 80.0]))
    for i in range(1, 10):
        kf.predict()
        kf.update(np.array([10 * i, 0, 10 * i + 40, 80.0]))
    kf.predict()
    assert kf.box == pytest.approx([100, 0, 140, 80], abs=2.0)


def test_batched_kalman_steps_equal_one_filter_per_box():
    # The tracker runs every track through one batched call; each row must evolve exactly as a
    # filter of its own (a transposed gain or a shared covariance would mix rows).
    rng = np.random.default_rng(1)
    boxes = np.array([[0, 0, 40, 80], [100, 50, 130, 170], [300, 300, 310, 305.0]])
    singles = [KalmanBoxFilter(b) for b in boxes]
    means, covs = kalman_initiate(boxes)
    freeze = np.array([False, True, False])
    for step in range(5):
        means, covs = kalman_predict(means, covs, freeze)
        measured = boxes + step * 7 + rng.normal(0, 2, boxes.shape)
        means, covs = kalman_update(means, covs, measured)
        for f, fz, z in zip(singles, freeze, measured):
            f.predict(bool(fz))
            f.update(z)
    np.testing.assert_allclose(means, [f.mean for f in singles], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(covs, [f.cov for f in singles], rtol=1e-12, atol=1e-9)
    assert not np.allclose(means[0], means[1])


@pytest.mark.parametrize("kwargs", [
    {"low_score": 0.6, "high_score": 0.5},
    {"high_score": 1.5},
    {"match_iou": 0.0},
    {"min_hits": 0},
    {"max_age": -1},
])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)
