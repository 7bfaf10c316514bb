"""Liveness modes (auto|rgb|ir|challenge|off) on real faces: colour samples, the grayscale LFW
crops, and IR-like sequences made from the deepface photos (tests/_ir_frames.py).

The full counts are printed by benchmarks/liveness_modes.py; these tests assert the decisions on
a representative subset.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from edge.errors import LivenessError, NotIrSourceError
from edge.face.ir_liveness import IrLiveness
from edge.face.liveness import PassiveLiveness
from edge.face.liveness_modes import begin_attempt, build_liveness, describe, frame_modality
from edge.face.pipeline import FacePipeline
from edge.imageio import load_image
from tests._face_fixtures import exported_liveness_dir
from tests._ir_frames import attempt, ir_sequence

#: Photos of the deepface set the IR sequences are made from (varied people, pose and light).
IR_PHOTOS = ("img1.jpg", "img10.jpg", "img22.jpg")
LFW_CROPS = 6


@pytest.fixture(scope="module")
def passive(tmp_path_factory):
    live = PassiveLiveness.from_dir(exported_liveness_dir(tmp_path_factory), threads=1)
    yield live
    live.close()


@pytest.fixture(scope="module")
def detector():
    from edge.vision.face_detectors import create_face_detector

    with create_face_detector("yunet", threads=1) as det:
        yield det


@pytest.fixture(scope="module")
def make_pipe(detector, passive):
    def make(mode: str, **kw) -> FacePipeline:
        checker = build_liveness(mode, passive=passive, **kw)
        return FacePipeline(detector, None, checker)
    return make


@pytest.fixture(scope="module")
def lfw_frames(data_dir):
    out = []
    for p in sorted((data_dir / "faces/lfw100_aligned").rglob("*.jpg"))[:LFW_CROPS]:
        big = cv2.resize(load_image(p, gray=True), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        frame = np.full((480, 640), 110, np.uint8)
        frame[140:340, 220:420] = big
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def photos(data_dir):
    return [load_image(data_dir / "faces/deepface" / name) for name in IR_PHOTOS]


def test_auto_passes_grayscale_faces_the_rgb_pair_rejects(make_pipe, lfw_frames):
    auto, rgb = make_pipe("auto"), make_pipe("rgb")
    for frame in lfw_frames:
        ok, (res,) = attempt(auto, [frame])
        assert ok and res.detail["modality"] == "ir", describe(res)
        assert not attempt(rgb, [frame])[0]  # the issue: RGB-trained models on grey faces


@pytest.mark.parametrize("name,live", [("image_T1.jpg", True), ("image_T2.jpg", True),
                                       ("image_F1.jpg", False), ("image_F2.jpg", False)])
def test_auto_on_colour_uses_the_pair_and_rejects_the_spoofs(make_pipe, data_dir, name, live):
    ok, (res,) = attempt(make_pipe("auto"), [load_image(data_dir / "antispoof" / name)])
    assert ok == live
    assert res.detail["modality"] == "rgb" and "passive" in res.detail


@pytest.mark.parametrize("strobe", [False, True])
def test_simulated_ir_genuine_faces_pass_and_replays_do_not(make_pipe, photos, strobe):
    auto = make_pipe("auto")
    for i, photo in enumerate(photos):
        ok, res = attempt(auto, ir_sequence(photo, "live", frames=8, strobe=strobe, seed=i))
        assert ok, [describe(r) for r in res]
        assert any(r is not None and r.detail["ir"].get("strobe") is strobe for r in res)
        for spoof in ("phone_replay", "self_lit_replay"):
            ok, res = attempt(auto, ir_sequence(photo, spoof, frames=8, strobe=strobe, seed=i))
            assert not ok, (spoof, [describe(r) for r in res])


def test_a_printed_photo_passes_the_ir_checks_but_not_the_challenge(make_pipe, photos):
    seq = ir_sequence(photos[0], "printed_photo", frames=8, strobe=True)
    assert attempt(make_pipe("auto"), seq)[0]  # documented: IR liveness does not stop a print
    ok, res = attempt(make_pipe("challenge"), seq)
    last = [r for r in res if r is not None][-1]
    assert not ok and last.detail["head_turn"]["state"] in ("turn_head", "waiting_for_live_frame")


def test_challenge_passes_a_live_ir_face_that_turns(make_pipe, photos):
    from tests._face_fixtures import face_landmarks_at_yaw

    pipe = make_pipe("challenge")
    checker = pipe.liveness
    frames = ir_sequence(photos[0], "live", frames=4, seed=3)
    det = pipe.detector.detect(cv2.cvtColor(frames[0], cv2.COLOR_GRAY2BGR))
    box = det.xyxy[0]
    begin_attempt(checker)
    results = [checker.check(f, box, face_landmarks_at_yaw(yaw)) for f, yaw in zip(frames, (0, 0, 10, 25))]
    assert results[-1].live and results[-1].detail["head_turn"]["state"] == "done"


def test_the_modality_is_fixed_per_attempt(make_pipe, lfw_frames, data_dir):
    colour = load_image(data_dir / "antispoof/image_T1.jpg")
    pipe = make_pipe("auto")
    begin_attempt(pipe.liveness)
    pipe.analyze(lfw_frames[0], embed=False)
    switched = pipe.analyze(colour, embed=False).largest.liveness
    assert not switched.live and switched.detail["reason"] == "modality_changed"
    assert not pipe.analyze(lfw_frames[1], embed=False).largest.liveness.live  # refused for the rest
    begin_attempt(pipe.liveness, still=True)  # a new attempt decides afresh
    res = pipe.analyze(colour, embed=False).largest.liveness
    assert res.live and res.detail["modality"] == "rgb"


def test_ir_mode_and_an_ir_camera_refuse_colour_frames(make_pipe, data_dir):
    colour = load_image(data_dir / "antispoof/image_T1.jpg")
    for pipe in (make_pipe("ir"), make_pipe("auto", camera_ir=True)):
        begin_attempt(pipe.liveness)
        with pytest.raises(NotIrSourceError, match="colour"):
            pipe.analyze(colour, embed=False)


def test_off_warns_and_modes_are_checked(caplog, passive):
    with caplog.at_level(logging.WARNING):
        assert build_liveness("off") is None
    assert "liveness is OFF" in caplog.text
    with pytest.raises(ValueError, match="auto, rgb, ir, challenge, off"):
        build_liveness("infrared")
    with pytest.raises(LivenessError, match="--liveness-dir"):
        build_liveness("auto")
    assert build_liveness("ir").passive is None  # IR-only needs no models


def test_dark_background_is_fine_dark_face_is_skipped(photos):
    frame = ir_sequence(photos[1], "live", frames=1)[0]
    box = (240, 160, 400, 330)
    dark_bg = frame.copy()
    dark_bg[:, :200] = dark_bg[:, 440:] = 0  # most of the frame black: normal behind the face
    res = IrLiveness(strobe=False).check(dark_bg, box)
    assert res.live and res.detail["face_dark_fraction"] < 0.6
    dark_face = (frame * 0.05).astype(np.uint8)
    res = IrLiveness(strobe=False).check(dark_face, box)
    assert not res.live and res.detail["skipped"] == "dark"


def test_frame_modality(photos, lfw_frames, data_dir):
    assert frame_modality(lfw_frames[0]) == "ir"
    assert frame_modality(cv2.cvtColor(lfw_frames[0], cv2.COLOR_GRAY2BGR)) == "ir"
    assert frame_modality(load_image(data_dir / "antispoof/image_T1.jpg")) == "rgb"
    dim_ir = cv2.cvtColor(ir_sequence(photos[0], "live", frames=2, strobe=True)[1], cv2.COLOR_GRAY2BGR)
    assert frame_modality(dim_ir) in ("ir", None)  # an unlit frame never reads as colour
    assert frame_modality(np.zeros((48, 64, 3), np.uint8)) is None
