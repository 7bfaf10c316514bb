"""Alignment against OpenCV's FaceRecognizerSF.alignCrop, embedders against FaceRecognizerSF.feature,
matching and card thresholds.

Tolerances (measured here): our alignment differs from ``alignCrop`` by at most 1 grey level
(bilinear rounding) on every deepface image tried; SFace features through onnxruntime agree with
OpenCV's to cosine 1.0000. OpenCV 5 loads the shared SFace files but cannot run them (their
weights are listed as graph inputs), so the reference is given the same file with those inputs
removed — same weights.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from edge.errors import FaceError, StaleTemplateError, ThresholdMissingError
from edge.face.align import ARCFACE_112_TEMPLATE, align_face, align_faces, similarity_transform, transform_points
from edge.face.embedder import BUILTIN_EMBEDDERS, create_embedder
from edge.face.match import check_same_model, cosine_similarity, match, threshold_for
from edge.face.types import FaceEmbedding
from edge.imageio import load_image
from edge.registry import get_card

ALIGN_MAX_DIFF = 2  # grey levels
ALIGN_MIN_EQUAL = 0.97  # fraction of pixels within 1 level
FEATURE_MIN_COSINE = 0.99
IMAGES = ("img10.jpg", "img15.jpg", "img22.jpg", "img33.jpg")


@pytest.fixture(scope="module")
def yunet_ref(model_dir):
    path = model_dir / "face_detection/yunet_s_640x640.onnx"
    if not path.is_file():
        pytest.skip("YuNet not in the model dir")
    return cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.6, 0.3, 5000)


def _ref_faces(det, img):
    h, w = img.shape[:2]
    det.setInputSize((w, h))
    _, faces = det.detect(img)
    assert faces is not None and len(faces), "reference detector found no face"
    return faces[np.argmax(faces[:, 2] * faces[:, 3])]


def _stripped_sface(model_dir, name, tmp_path):
    from edge.engines.onnx_wire import strip_weight_inputs

    src = model_dir / f"face_embedding/{name}.onnx"
    if not src.is_file():
        pytest.skip(f"{src} missing")
    data, dropped = strip_weight_inputs(src.read_bytes())
    out = tmp_path / f"{name}.onnx"
    out.write_bytes(data)
    return out


# ---------------------------------------------------------------------------------- alignment
def test_template_is_the_arcface_one():
    assert ARCFACE_112_TEMPLATE.shape == (5, 2)
    np.testing.assert_allclose(ARCFACE_112_TEMPLATE[0], [38.2946, 51.6963], atol=1e-4)
    np.testing.assert_allclose(ARCFACE_112_TEMPLATE[4], [70.7299, 92.2041], atol=1e-4)
    assert not ARCFACE_112_TEMPLATE.flags.writeable


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (30, 0.5, 10, -4), (-75, 2.5, 300, 120), (180, 1.2, 5, 5)])
def test_similarity_transform_recovers_a_known_similarity(angle, scale, tx, ty):
    a = math.radians(angle)
    m = np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])
    src = transform_points(np.linalg.inv(np.r_[m, [[0, 0, 1]]])[:2], ARCFACE_112_TEMPLATE)
    est = similarity_transform(src)
    np.testing.assert_allclose(est, m, atol=1e-6)
    np.testing.assert_allclose(transform_points(est, src), ARCFACE_112_TEMPLATE, atol=1e-4)


@pytest.mark.parametrize("image", IMAGES)
def test_align_matches_opencv_aligncrop(image, data_dir, model_dir, tmp_path, yunet_ref):
    img = load_image(data_dir / "faces/deepface" / image)
    face = _ref_faces(yunet_ref, img)
    rec = cv2.FaceRecognizerSF.create(str(_stripped_sface(model_dir, "sface_2021dec_fp32", tmp_path)), "")
    ref = rec.alignCrop(img, face)
    ours = align_face(img, face[4:14].reshape(5, 2))
    assert ours.shape == ref.shape == (112, 112, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= ALIGN_MAX_DIFF
    assert (diff <= 1).mean() >= ALIGN_MIN_EQUAL


@pytest.mark.parametrize("image,landmarks,msg", [
    (np.zeros((10, 10, 3), np.float32), np.zeros((5, 2)), "uint8"),
    (np.zeros((10, 10, 4), np.uint8), ARCFACE_112_TEMPLATE, "H×W×3"),
    (np.zeros((10, 10, 3), np.uint8), np.zeros((4, 2)), "5×2"),
    (np.zeros((10, 10, 3), np.uint8), np.zeros((5, 2)), "coincide"),
    (np.zeros((10, 10, 3), np.uint8), np.full((5, 2), np.nan), "non-finite"),
])
def test_align_rejects_bad_input(image, landmarks, msg):
    with pytest.raises(FaceError, match=msg):
        align_face(image, landmarks)


def test_align_gray_and_batch():
    img = np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)
    lm = ARCFACE_112_TEMPLATE + 40
    one = align_face(img, lm)
    assert one.shape == (112, 112, 3)
    batch = align_faces(img, np.stack([lm, lm]))
    assert batch.shape == (2, 112, 112, 3) and np.array_equal(batch[0], one)
    # identity-like transform: the template placed at +40 px comes out as the image shifted back
    np.testing.assert_array_equal(one[20:60, 20:60, 0], img[60:100, 60:100])


# ---------------------------------------------------------------------------------- embedders
@pytest.mark.parametrize("name", ["sface_2021dec_fp32", "sface_2021dec_int8bq"])
def test_sface_matches_opencv_feature(name, data_dir, model_dir, tmp_path, yunet_ref):
    rec = cv2.FaceRecognizerSF.create(str(_stripped_sface(model_dir, name, tmp_path)), "")
    with create_embedder(name, threads=1) as emb:
        for image in IMAGES[:2]:
            img = load_image(data_dir / "faces/deepface" / image)
            crop = rec.alignCrop(img, _ref_faces(yunet_ref, img))
            ref = rec.feature(crop).reshape(-1)
            e = emb.embed(crop)
            assert isinstance(e, FaceEmbedding)
            assert e.model_id == name and e.model_sha256 == get_card(name).sha256
            assert float(e.vector @ ref / np.linalg.norm(ref)) > FEATURE_MIN_COSINE


@pytest.mark.parametrize("name", BUILTIN_EMBEDDERS)
def test_embedder_batch_equals_singles_and_colour_order_matters(name, data_dir, yunet_ref):
    img = load_image(data_dir / "faces/deepface/img10.jpg")
    crop = align_face(img, _ref_faces(yunet_ref, img)[4:14].reshape(5, 2))
    with create_embedder(name, threads=1) as emb:
        single = emb.embed(crop)
        pair = emb.embed(np.stack([crop, crop[:, ::-1]]))
        assert len(pair) == 2
        np.testing.assert_allclose(pair[0].vector, single.vector, atol=1e-5)
        assert abs(np.linalg.norm(single.vector) - 1) < 1e-5 and not single.vector.flags.writeable
        swapped = emb.embed(np.ascontiguousarray(crop[:, :, ::-1]))
        # feeding the wrong colour order changes the embedding: the card's order is honoured
        assert cosine_similarity(single, swapped) < 0.999


def test_embedder_rejects_bad_crops():
    with create_embedder("mobilefacenet_128d", threads=1) as emb:
        with pytest.raises(FaceError, match="uint8"):
            emb.embed(np.zeros((112, 112, 3), np.float32))
        with pytest.raises(FaceError, match="112"):
            emb.embed(np.zeros((1, 100, 90, 3), np.uint8))


# ---------------------------------------------------------------------------------- matching
def _emb(vec, model="m", sha="a" * 64):
    return FaceEmbedding.from_raw(np.asarray(vec, np.float32), model, sha)


def test_face_embedding_validates():
    with pytest.raises(ValueError, match="L2-normalised"):
        FaceEmbedding(np.array([1.0, 1.0], np.float32), "m", "a" * 64)
    with pytest.raises(ValueError, match="zero"):
        FaceEmbedding.from_raw(np.zeros(4), "m", "a" * 64)
    e = _emb([3, 4])
    np.testing.assert_allclose(e.vector, [0.6, 0.8])


def test_match_picks_the_best_user_and_applies_the_threshold():
    probe = _emb([1, 0, 0])
    templates = {"alice": [_emb([0, 1, 0]), _emb([0.9, 0.1, 0])], "bob": [_emb([0.5, 0.5, 0.5])]}
    r = match(probe, templates, threshold=0.9)
    assert r.user == "alice" and r.accepted and r.similarity == pytest.approx(0.9 / math.hypot(0.9, 0.1), abs=1e-6)
    r2 = match(probe, templates, threshold=0.995)
    assert r2.user == "alice" and not r2.accepted
    none = match(probe, {}, threshold=0.3)
    assert none.user is None and not none.accepted and none.similarity == -1.0


@pytest.mark.parametrize("other", [_emb([1, 0], model="other"), _emb([1, 0], sha="b" * 64)])
def test_match_refuses_templates_of_another_model(other):
    probe = _emb([1, 0])
    with pytest.raises(StaleTemplateError, match="re-enrol"):
        match(probe, {"alice": [probe, other]}, threshold=0.5)
    with pytest.raises(StaleTemplateError):
        check_same_model(probe, other)
    with pytest.raises(StaleTemplateError):
        cosine_similarity(probe, other)


@pytest.mark.parametrize("name", BUILTIN_EMBEDDERS)
def test_builtin_embedders_carry_thresholds(name):
    card = get_card(name)
    t2, t3 = threshold_for(card, 1e-2), threshold_for(card, "0.001")
    assert 0.1 < t2 < t3 < 0.9  # a stricter FAR needs a higher cosine
    assert card.thresholds.derived_on


def test_missing_threshold_is_an_error_not_a_default():
    card = get_card("mobilefacenet_128d")
    with pytest.raises(ThresholdMissingError, match="1e-05|available"):
        threshold_for(card, 1e-5)
    bare = dataclasses.replace(card, thresholds={})
    with pytest.raises(ThresholdMissingError, match="carries no"):
        threshold_for(bare, 1e-3)


# ---------------------------------------------------------------------------------- PRelu rewrite
def test_prelu_rewrite_keeps_the_outputs(tmp_path):
    pytest.importorskip("onnx")
    from edge.face.embedder import create_embedder as ce
    from export.onnx.graph_opt import optimized_embedder

    onnx_path, card_path = optimized_embedder("mobilefacenet_128d", tmp_path)
    again = optimized_embedder("mobilefacenet_128d", tmp_path)  # cached: same files, not rebuilt
    assert again == (onnx_path, card_path)
    x = np.random.default_rng(1).integers(0, 255, (3, 112, 112, 3), np.uint8)
    with ce("mobilefacenet_128d", threads=1) as a, ce(card_path, threads=1) as b:
        assert b.model_id == "mobilefacenet_128d_fastprelu" and b.model_sha256 != a.model_sha256
        assert b.card.thresholds == a.card.thresholds
        for ea, eb in zip(a.embed(x), b.embed(x)):
            np.testing.assert_allclose(ea.vector, eb.vector, atol=1e-5)
    import onnx

    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "PRelu" not in ops and {"Min", "Mul", "Add"} <= ops
