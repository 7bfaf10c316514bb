import numpy as np
import pytest

from edge.types import Detections, Frame


def test_frame_is_frozen_and_validates():
    f = Frame(np.zeros((4, 6, 3), np.uint8), 1.5, 3, "cam0")
    assert (f.width, f.height, f.is_gray) == (6, 4, False)
    with pytest.raises(AttributeError):
        f.index = 4  # type: ignore[misc]


@pytest.mark.parametrize("image, match", [
    (np.zeros((4, 6, 3), np.float32), "uint8"),
    (np.zeros((4, 6, 4), np.uint8), "H×W×3"),
    (np.zeros((0, 6, 3), np.uint8), "empty"),
    ([[0]], "numpy array"),
])
def test_frame_rejects_bad_images(image, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Frame(image, 0.0, 0, "x")


def test_detections_copy_and_are_read_only():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    d = Detections(boxes, [0.9, 0.5], [0, 3])
    boxes[0, 0] = 99  # the caller's array changes; the Detections does not
    assert d.xyxy[0, 0] == 0
    with pytest.raises(ValueError):
        d.xyxy[0, 0] = 1
    assert len(d) == 2 and d.class_id.dtype == np.int32


def test_detections_select_and_replace_do_not_mutate():
    d = Detections([[0, 0, 1, 1], [1, 1, 2, 2]], [0.2, 0.8], [0, 0])
    top = d[d.score > 0.5]
    assert len(top) == 1 and top.score[0] == pytest.approx(0.8)
    tracked = d.replace(tracker_id=[7, 8])
    assert d.tracker_id is None and list(tracked.tracker_id) == [7, 8]
    assert len(Detections.empty()) == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(xyxy=np.zeros((2, 3)), score=[0, 0], class_id=[0, 0]), r"xyxy must have shape N×4, got \(2, 3\)"),
    (dict(xyxy=np.zeros((2, 4)), score=[0], class_id=[0, 0]), "score has 1 rows, xyxy has 2"),
    (dict(xyxy=np.zeros((1, 4)), score=[0], class_id=[0], keypoints=np.zeros((1, 5))), "N×K×2"),
    (dict(xyxy=np.zeros((1, 4)), score=[0], class_id=[0], tracker_id=[1, 2]), "tracker_id has 2 rows"),
])
def test_detections_shape_errors_name_the_shape(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Detections(**kwargs)
