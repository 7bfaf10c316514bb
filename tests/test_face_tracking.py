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


# ---------------------------------------------------------------- a real sequence
@pytest.fixture(scope="module")
def people(data_dir):
    """Six deepface people with two photos each: one moves through the stream, one is enrolled."""
    from _face_fixtures import deepface_identities

    ids = [(who, fs) for who, fs in deepface_identities(data_dir).items() if len(fs) >= 2][:6]
    assert len(ids) == 6
    photo = lambda f: load_image(data_dir / "faces/deepface" / f)  # noqa: E731
    return [who for who, _ in ids], [photo(fs[0]) for _, fs in ids], [photo(fs[1]) for _, fs in ids]


def _decision(face, templates, threshold):
    from edge.face.match import match

    if face is None:
        return None
    r = match(face.embedding, templates, threshold)
    return r.user if r.accepted else "rejected"


def test_tracked_stream_gives_the_full_pipelines_identity_decisions(setup, people):
    """Six real people move across the frame one after the other (gaps between them): each frame's
    decision (which enrolled user, or rejected, or no face) is the one full detection makes."""
    from edge.face.synthetic import moving_face_frames

    pipe, _ = setup
    names, walking, enrolled = people
    templates = {}
    for who, img in zip(names, enrolled):
        face = pipe.analyze(img, max_faces=1, check_liveness=False).largest
        assert face is not None, who
        templates[who] = [face.embedding]
    threshold = pipe.threshold()
    tr = FaceTracker(pipe)
    decisions, regions = [], 0
    for frame, k in moving_face_frames(walking, frames_per_face=12, gap=2):
        got = _decision(tr.analyze(frame, check_liveness=False).largest, templates, threshold)
        ref = _decision(pipe.analyze(frame, max_faces=1, check_liveness=False).largest, templates, threshold)
        assert got == ref, f"frame of person {k}: tracked {got!r}, full detection {ref!r}"
        regions += not tr.last_full
        decisions.append((k, got))
    assert regions >= 40  # most frames were detected in the region only (the point of tracking)
    accepted = [d for k, d in decisions if k is not None]
    assert sum(d == names[k] for (k, d) in decisions if k is not None) >= 0.8 * len(accepted)


def test_face_entering_or_leaving_forces_a_full_search(setup, people):
    from edge.face.synthetic import moving_face_frames

    pipe, _ = setup
    _, walking, _ = people
    tr = FaceTracker(pipe, redetect_every=1000)
    prev = "start"
    for frame, k in moving_face_frames(walking[:4], frames_per_face=6, gap=0):
        tr.analyze(frame, check_liveness=False)
        if k != prev:  # a new person appears elsewhere (the last one left at once)
            assert tr.last_full, f"person {k} entered without a whole-frame search"
        prev = k
    empty = np.full((H, W, 3), 90, np.uint8)
    assert tr.analyze(empty).largest is None and tr.last_full  # left: lost, searched whole


def test_second_larger_face_entering_is_seen_at_once(setup, people):
    """Someone else stepping in beside the followed face: the change outside the region forces a
    whole-frame search on that very frame, and the largest face is the newcomer, as without tracking."""
    pipe, face = setup
    _, walking, _ = people
    tr = FaceTracker(pipe, redetect_every=1000)
    for x in (20, 24, 28):
        tr.analyze(_frame(cv2.resize(face, None, fx=0.6, fy=0.6), x, 40), check_liveness=False)
    assert not tr.last_full
    frame = _frame(cv2.resize(face, None, fx=0.6, fy=0.6), 32, 40)
    big = cv2.resize(walking[1], (300, round(300 * walking[1].shape[0] / walking[1].shape[1])))[:400]
    frame[60:60 + big.shape[0], 320:320 + big.shape[1]] = big[:, :W - 320]
    got = tr.analyze(frame, check_liveness=False).largest
    ref = pipe.analyze(frame, max_faces=1, check_liveness=False).largest
    assert tr.last_full and got is not None and ref is not None
    np.testing.assert_allclose(got.box, ref.box, atol=1e-6)
    assert got.box[0] > 300  # the newcomer on the right, not the followed face


def test_fixed_input_detector_is_never_given_a_region(setup):
    """A detector that resizes to 640x640 itself (the fixed graph) would enlarge a region to it:
    always the whole frame."""
    from edge.face.pipeline import FacePipeline
    from edge.vision.face_detectors import create_face_detector

    pipe, face = setup
    with create_face_detector("yunet", threads=1) as det:
        tr = FaceTracker(FacePipeline(det, pipe.embedder))
        assert not tr.uses_regions
        for x in (100, 104):
            assert tr.analyze(_frame(face, x, 100), check_liveness=False).largest is not None
            assert tr.last_full
    with create_face_detector("yunet", threads=1) as det, pytest.raises(ValueError, match="fit_size"):
        FacePipeline(det, pipe.embedder, fit_size=(640, 640))


def test_default_pipeline_tracks_at_the_whole_frames_scale(setup):
    """create_pipeline()'s default fits frames as the 640x640 graph: the fit is the pipeline's, so
    a region is detected at the whole frame's scale and the tracker can follow a face — for a
    640x480 frame (scale 1) and for a small frame the fit enlarges (scale 2)."""
    _, face = setup
    with create_pipeline(threads=1, liveness=False) as default:
        tr = FaceTracker(default, redetect_every=100)
        assert tr.uses_regions
        for size, scale in (((W, H), 1), ((W // 2, H // 2), 0.5)):
            tr.reset()
            for i, x in enumerate((60, 66, 72, 80)):
                f = cv2.resize(_frame(face, x, 100), size, interpolation=cv2.INTER_AREA) if scale != 1 else \
                    _frame(face, x, 100)
                got, ref = tr.analyze(f, check_liveness=False).largest, default.analyze(f, max_faces=1).largest
                assert got is not None and ref is not None
                assert tr.last_full == (i == 0)  # searched whole only at the start
                side = ref.box[3] - ref.box[1]
                np.testing.assert_allclose(got.box, ref.box, atol=0.06 * side)
                assert float(got.embedding.vector @ ref.embedding.vector) > 0.7


def test_default_detects_as_the_640_graph_without_its_padding(data_dir):
    """create_pipeline()'s YuNet runs the dynamic graph fitted as the 640x640 graph fits a frame:
    the same faces (a portrait photo shrunk, a 640x480 frame as it is, a small one enlarged)."""
    from edge.vision.face_detectors import create_face_detector

    img = load_image(data_dir / "faces/deepface/img10.jpg")
    frames = [img, cv2.resize(img, (640, 480)), cv2.resize(img, (200, 150))]
    with create_pipeline(threads=1, liveness=False) as p, create_face_detector("yunet", threads=1) as fixed:
        assert p.fit_size == (640, 640) and not p.detector.fixed_input
        for f in frames:
            got, ref = p.detect(f), fixed.detect(f)
            assert len(got.scores) == len(ref.score) >= 1
            # the fixed graph's padding is zeros in its input but not inside the network: boxes
            # agree to a small fraction of a pixel, not bit for bit
            np.testing.assert_allclose(got.boxes, ref.xyxy, atol=0.5)
            np.testing.assert_allclose(got.landmarks, ref.keypoints, atol=0.5)


def test_a_releases_face_detector_is_followed_too(setup, release_build):
    """A device with a release runs its TFLite YuNet: edge-export build frees its height and width
    (export.tflite.resizable), so verify's tracker searches a region with it, at the frame's scale."""
    from edge.release import open_release
    from edge.roles import face_pipeline_from_release

    _, face = setup
    rel = open_release(release_build["dir"], release_build["pub"])
    with face_pipeline_from_release(rel, threads=1, liveness=False) as pipe:
        assert pipe.detector.engine.backend == "litert" and not pipe.detector.fixed_input
        assert pipe.fit_size == (640, 640)
        tr = FaceTracker(pipe, redetect_every=100)
        assert tr.uses_regions
        for i, x in enumerate((60, 66, 72, 80)):
            f = _frame(face, x, 100)
            got, ref = tr.analyze(f, check_liveness=False).largest, pipe.analyze(f, max_faces=1).largest
            assert got is not None and ref is not None
            assert tr.last_full == (i == 0)
            side = ref.box[3] - ref.box[1]
            np.testing.assert_allclose(got.box, ref.box, atol=0.06 * side)
            assert float(got.embedding.vector @ ref.embedding.vector) > 0.9
