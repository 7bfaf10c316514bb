"""Liveness: the MiniFASNet pair (network, export, passive check on the shared samples), IR mode
and the head-turn challenge.

The MiniFASNet ONNX files are exported once per session with torch (skipped cleanly without it).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.errors import FaceError, LivenessError, ModelCardError, ModelIntegrityError, NotIrSourceError
from edge.face.challenge import HeadTurnChallenge
from edge.face.ir_liveness import KIND_COLOUR, KIND_DARK, KIND_IR, IrLiveness, classify_frame
from edge.face.liveness import PassiveLiveness, crop_box, find_liveness_cards, scaled_crop
from edge.imageio import load_image
from edge.types import Frame
from tests._face_fixtures import exported_liveness_dir, face_landmarks_at_yaw

LOGITS_ATOL = 1e-3


@pytest.fixture(scope="module")
def liveness_dir(tmp_path_factory):
    return exported_liveness_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def detector():
    from edge.vision.face_detectors import create_face_detector

    with create_face_detector("yunet", threads=1) as det:
        yield det


def _largest_box(det, img):
    d = det.detect(img)
    assert len(d.score), "no face detected"
    i = int(np.argmax((d.xyxy[:, 2] - d.xyxy[:, 0]) * (d.xyxy[:, 3] - d.xyxy[:, 1])))
    return d.xyxy[i], d.keypoints[i]


# ------------------------------------------------------------------------------- cropping
@pytest.mark.parametrize("shape,box,scale,expected", [
    ((480, 640), (300, 200, 340, 240), 2.0, (280, 180, 360, 260)),      # inside: centred, 2×
    ((480, 640), (0, 0, 40, 40), 2.0, (0, 0, 80, 80)),                  # at the corner: shifted, not clipped
    ((480, 640), (600, 440, 640, 480), 2.0, (559, 399, 639, 479)),      # bottom-right corner
    ((100, 100), (10, 10, 90, 90), 4.0, (0, 0, 99, 99)),                # too big: scale reduced to fit
])
def test_crop_box_follows_the_original_cropimage(shape, box, scale, expected):
    assert crop_box(shape, box, scale) == expected


@pytest.mark.parametrize("box", [(10, 10, 10, 50), (5, 5, 1, 1), (np.nan, 0, 5, 5)])
def test_crop_box_rejects_empty_boxes(box):
    with pytest.raises(FaceError):
        crop_box((100, 100), box, 2.7)


def test_scaled_crop_size():
    img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)
    assert scaled_crop(img, (100, 100, 150, 160), 2.7).shape == (80, 80, 3)


# ------------------------------------------------------------------------------- network + export
@pytest.mark.parametrize("name,se", [("minifasnet_v2_scale2.7", False), ("minifasnet_v1se_scale4.0", True)])
def test_minifasnet_loads_strictly_and_matches_its_onnx(name, se, liveness_dir):
    torch = pytest.importorskip("torch")
    from edge.engines import load_engine
    from edge.registry import resolve
    from export.sources.nets.minifasnet import MINIFASNET_V1SE, MINIFASNET_V2, load_minifasnet, spec_from_state_dict

    path = resolve(name).path
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    spec = spec_from_state_dict(state)
    assert spec == (MINIFASNET_V1SE if se else MINIFASNET_V2)
    net = load_minifasnet(path)  # strict=True inside: a wrong architecture raises
    x = np.random.default_rng(3).uniform(0, 255, (1, 3, 80, 80)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    with load_engine(liveness_dir / f"{name}.onnx", threads=1) as eng:
        got = eng.run({"input": x})["logits"]
    np.testing.assert_allclose(got, ref, atol=LOGITS_ATOL)


def test_strict_loading_refuses_a_wrong_architecture():
    torch = pytest.importorskip("torch")
    from edge.registry import resolve
    from export.sources.nets.minifasnet import MINIFASNET_V2, load_minifasnet

    with pytest.raises(RuntimeError, match="se_module|Missing|Unexpected|size mismatch"):
        load_minifasnet(resolve("minifasnet_v1se_scale4.0").path, spec=MINIFASNET_V2)


def test_exported_cards(liveness_dir):
    found = find_liveness_cards([liveness_dir])
    names = [c.name for c, _ in found]
    assert names == ["minifasnet_v1se_scale4.0", "minifasnet_v2_scale2.7"]
    scales = {c.name: c.face_crop.crop_scale for c, _ in found}
    assert scales == {"minifasnet_v1se_scale4.0": 4.0, "minifasnet_v2_scale2.7": 2.7}
    for card, path in found:
        assert card.task == "liveness" and card.format == "onnx" and path.is_file()
        assert card.inputs[0].color == "BGR" and tuple(card.inputs[0].shape) == (1, 3, 80, 80)


def test_find_cards_checks_the_sha256(liveness_dir, tmp_path):
    import shutil

    for p in liveness_dir.iterdir():
        shutil.copy(p, tmp_path / p.name)
    onnx_file = tmp_path / "minifasnet_v2_scale2.7.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        find_liveness_cards([tmp_path])


# ------------------------------------------------------------------------------- passive check
@pytest.mark.parametrize("image,live", [("image_T1.jpg", True), ("image_T2.jpg", True),
                                        ("image_F1.jpg", False), ("image_F2.jpg", False)])
def test_passive_liveness_on_the_shared_samples(image, live, liveness_dir, data_dir, detector):
    img = load_image(data_dir / "antispoof" / image)  # applies EXIF orientation (T1, F1, F2 carry one)
    assert img.shape[0] > img.shape[1]  # every sample is a portrait once oriented
    box, _ = _largest_box(detector, img)
    checker = PassiveLiveness.from_dir(liveness_dir, threads=1)
    try:
        res = checker.check(img, box)
    finally:
        checker.close()
    assert res.live is live and res.method == "passive"
    assert set(res.detail["models"]) == {"minifasnet_v1se_scale4.0", "minifasnet_v2_scale2.7"}
    probs = np.array(list(res.detail["models"].values()))
    assert res.score == pytest.approx(probs[:, 1].mean(), abs=1e-5)


def test_passive_liveness_errors(tmp_path, liveness_dir):
    with pytest.raises(LivenessError, match="edge-export liveness"):
        PassiveLiveness.from_dir(tmp_path)
    from edge.registry import get_card

    found = find_liveness_cards([liveness_dir])
    engine_card = [(None, get_card("mobilefacenet_128d"))]
    with pytest.raises(ModelCardError, match="not 'liveness'"):
        PassiveLiveness(engine_card)
    with pytest.raises(ValueError, match="threshold"):
        PassiveLiveness.from_cards(found, threshold=1.5)


# ------------------------------------------------------------------------------- IR mode
def _face_gray(data_dir) -> np.ndarray:
    img = load_image(data_dir / "antispoof/image_T1.jpg")
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _jpeg(img) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_classify_frames(data_dir):
    grey = _face_gray(data_dir)
    colour = load_image(data_dir / "antispoof/image_T1.jpg")
    assert classify_frame(grey).kind == KIND_IR
    assert classify_frame(grey[:, :, None]).kind == KIND_IR
    assert classify_frame(_jpeg(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))).kind == KIND_IR  # 3 equal channels
    assert classify_frame(colour).kind == KIND_COLOUR
    assert classify_frame((colour * 0.1).astype(np.uint8)).kind == KIND_COLOUR  # dim colour is still colour
    assert classify_frame((grey * 0.05).astype(np.uint8)).kind == KIND_DARK


def test_ir_required_refuses_a_colour_camera_called_ir(data_dir, detector):
    colour = load_image(data_dir / "antispoof/image_T1.jpg")
    frame = Frame(colour, 0.0, 0, source_id="/dev/video-ir")  # the name says IR, the pixels do not
    box, _ = _largest_box(detector, colour)
    ir = IrLiveness(require_ir=True)
    with pytest.raises(NotIrSourceError, match="colour"):
        ir.check(frame.image, box)
    passthrough = IrLiveness(require_ir=False).check(colour, box)
    assert passthrough.live and passthrough.detail["skipped"] == "not_ir"


def test_ir_accepts_lit_frames_and_skips_dark_ones(data_dir, detector):
    grey = _face_gray(data_dir)
    box, _ = _largest_box(detector, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    ir = IrLiveness(require_ir=True)
    assert ir.check(grey, box).live
    dark = ir.check((grey * 0.05).astype(np.uint8), box)
    assert not dark.live and dark.detail["skipped"] == "dark"


def test_ir_strobe_needs_the_lit_unlit_difference(data_dir, detector):
    grey = _face_gray(data_dir)
    box, _ = _largest_box(detector, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    unlit = (grey * 0.45).astype(np.uint8)  # emitter off: the face is dimmer, the frame not black
    ir = IrLiveness(require_ir=True, strobe=True)
    first = ir.check(grey, box)
    assert not first.live and first.detail["reason"] == "need_previous_frame"
    ir.observe(unlit)  # a frame without a detection still counts as the previous frame
    lit = ir.check(grey, box)
    assert lit.live and lit.detail["face_change"] > 0.5
    steady = IrLiveness(require_ir=True, strobe=True)  # a self-lit replay does not answer the emitter
    steady.check(grey, box)
    res = steady.check(grey.copy(), box)
    assert not res.live and res.detail["reason"] == "no_strobe_response"


# ------------------------------------------------------------------------------- head turn
@pytest.mark.parametrize("direction,yaws,passes", [
    ("either", [0, 5, 10, 20], True),
    ("left", [0, 5, 10, 20], False),     # turned right, left was asked
    ("left", [0, -10, -25], True),
    ("both", [0, 20, 0, -20], True),
    ("both", [0, 20, 25], False),
    ("either", [20, 25, 30], False),     # never frontal first: no start
    ("either", [0, 0, 0, 0], False),     # a photo does not turn
])
def test_head_turn_challenge(direction, yaws, passes):
    ch = HeadTurnChallenge(direction, min_turn_deg=15, max_frontal_deg=8)
    results = [ch.check(None, None, face_landmarks_at_yaw(y)) for y in yaws]
    assert results[-1].live is passes
    assert results[-1].method == "head_turn"
    if passes:
        assert results[-1].score == 1.0
    else:
        assert results[-1].score < 1.0
    ch.reset()
    assert not ch.check(None, None, face_landmarks_at_yaw(0)).live


def test_head_turn_times_out():
    ch = HeadTurnChallenge("either", max_frames=3)
    for yaw in (0, 2, 3, 4):  # frontal start, then three frames without a turn
        assert not ch.check(None, None, face_landmarks_at_yaw(yaw)).live
    late = ch.check(None, None, face_landmarks_at_yaw(25))  # too late: the challenge restarts instead
    assert not late.live and late.detail["state"] == "restarted"
    assert not ch.check(None, None, face_landmarks_at_yaw(0)).live  # a new frontal start
    assert ch.check(None, None, face_landmarks_at_yaw(25)).live


def test_head_turn_rejects_bad_settings():
    with pytest.raises(ValueError, match="direction"):
        HeadTurnChallenge("up")
    with pytest.raises(ValueError, match="max_frontal_deg"):
        HeadTurnChallenge(min_turn_deg=5, max_frontal_deg=10)
