"""FaceTracker: detection near the last face gives the full pipeline's result, and the whole
frame is searched again when the face jumps away, leaves, or a period has passed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.errors import FaceError
from edge.face.pipeline import create_pipeline
from edge.face.tracking import FaceTracker
from edge.imageio import load_image

W, H = 640, 480


def _frame(face, x, y):
    canvas = np.full((H, W, 3), 90, np.uint8)
    canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
    return canvas


@pytest.fixture(scope="module")
def setup(data_dir):
    img = load_image(data_dir / "faces/deepface/img10.jpg")
    s = 260 / max(img.shape[:2])
    face = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    with create_pipeline(threads=1, liveness=False, detect_size=(320, 240), prefer_optimized=False) as p:
        yield p, face


def test_tracked_frames_equal_full_pipeline(setup):
    pipe, face = setup
    tr = FaceTracker(pipe, redetect_every=100)
    for i, x in enumerate((100, 110, 122, 130, 141)):  # small steps: found in the region each time
        f = _frame(face, x, 120)
        got, ref = tr.analyze(f).largest, pipe.analyze(f, max_faces=1).largest
        assert got is not None and ref is not None
        # the region is cut on the detector's grid at the frame's scale, but YuNet's receptive field
        # sees the cut: boxes agree to a few % of the face size, embeddings stay the same person
        size = ref.box[3] - ref.box[1]
        np.testing.assert_allclose(got.box, ref.box, atol=0.06 * size)
        assert float(got.embedding.vector @ ref.embedding.vector) > 0.7  # card threshold 0.40
    assert tr.full_detections == 1  # only the first frame was searched whole


def test_redetects_when_face_jumps_or_leaves(setup):
    pipe, face = setup
    tr = FaceTracker(pipe, redetect_every=100)
    tr.analyze(_frame(face, 40, 40))
    far = tr.analyze(_frame(face, W - face.shape[1] - 20, H - face.shape[0] - 20)).largest
    assert far is not None and far.box[0] > W / 2  # found at its new place by a whole-frame search
    assert tr.full_detections == 2
    empty = np.full((H, W, 3), 90, np.uint8)
    assert tr.analyze(empty).largest is None  # left: no stale face is reported
    assert tr.analyze(_frame(face, 200, 100)).largest is not None
    assert tr.full_detections == 4


def test_periodic_full_search_and_bad_args(setup):
    pipe, face = setup
    tr = FaceTracker(pipe, redetect_every=2)
    for _ in range(5):
        tr.analyze(_frame(face, 100, 100))
    assert tr.full_detections == 2  # frames 1 and 4
    with pytest.raises(ValueError, match="redetect_every"):
        FaceTracker(pipe, redetect_every=0)
    with pytest.raises(FaceError, match="roi"):
        pipe.analyze(_frame(face, 0, 0), roi=(700, 500, 900, 700))
