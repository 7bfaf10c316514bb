"""Detection decoders (pure numpy) and the Detector on the real shared models."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from edge.cards import ModelCard
from edge.detect.decoders import (Candidates, TfliteSsdDecoder, decode_tflite_ssd, decode_ultralytics,
                                  decode_yolox, finalize, make_decoder, yolox_grid)
from edge.errors import DetectorOutputError, ModelCardError
from edge.preprocess import Transform
from edge.registry import get_card
from edge.vision.nms import box_iou

N_YOLOX_416 = 52 * 52 + 26 * 26 + 13 * 13  # 3549 anchors for strides 8, 16, 32


def _yolox_row(n_classes: int, dx, dy, log_w, log_h, obj, cls_id, cls_p) -> np.ndarray:
    row = np.zeros(5 + n_classes, np.float32)
    row[:5] = [dx, dy, log_w, log_h, obj]
    row[5 + cls_id] = cls_p
    return row


# --- YOLOX ------------------------------------------------------------------------------------


def test_yolox_grid_order_follows_megvii():
    grid, stride = yolox_grid((416, 416))
    assert grid.shape == (N_YOLOX_416, 2) and stride.shape == (N_YOLOX_416,)
    # stride 8 level, row-major with x fastest; then stride 16 starts at 2704
    assert grid[:3].tolist() == [[0, 0], [1, 0], [2, 0]] and grid[52].tolist() == [0, 1]
    assert stride[2703] == 8 and stride[2704] == 16 and grid[2704].tolist() == [0, 0]
    assert stride[-1] == 32 and grid[-1].tolist() == [12, 12]
    assert not grid.flags.writeable


# (case, anchor index, row, expected xyxy, expected score, expected class)
YOLOX_CASES = [
    # stride 8, cell x=3 y=5: centre ((0.5+3)*8, (0.25+5)*8) = (28, 42), size (2*8, 4*8)
    ("stride8", 5 * 52 + 3, (0.5, 0.25, math.log(2), math.log(4), 0.9, 7, 0.8), [20, 26, 36, 58], 0.72, 7),
    # stride 32, last cell x=12 y=12: centre (12*32, 12*32) = (384, 384), size (32, 32)
    ("stride32_last", N_YOLOX_416 - 1, (0.0, 0.0, 0.0, 0.0, 0.5, 0, 0.6), [368, 368, 400, 400], 0.3, 0),
    # stride 16, cell x=1 y=2 (index 2704 + 2*26 + 1): centre (24, 40), size (16, 16)
    ("stride16", 2704 + 2 * 26 + 1, (0.5, 0.5, 0.0, 0.0, 1.0, 79, 0.5), [16, 32, 32, 48], 0.5, 79),
]


@pytest.mark.parametrize("index, row, xyxy, score, cls", [c[1:] for c in YOLOX_CASES], ids=[c[0] for c in YOLOX_CASES])
def test_decode_yolox_single_anchor(index, row, xyxy, score, cls):
    pred = np.zeros((1, N_YOLOX_416, 85), np.float32)
    pred[0, index] = _yolox_row(80, *row)
    c = decode_yolox(pred, (416, 416), score_threshold=0.1)
    assert len(c.scores) == 1
    np.testing.assert_allclose(c.boxes[0], xyxy, atol=1e-4)
    assert c.scores[0] == pytest.approx(score, rel=1e-5) and c.class_ids[0] == cls
    assert c.boxes.dtype == np.float32 and c.class_ids.dtype == np.int32


@pytest.mark.parametrize("threshold, multi_label, want", [
    (0.5, False, [(0.72, 3)]),  # obj .9 · .8 only; the .5 class (0.45) is below
    (0.4, False, [(0.72, 3)]),  # single label keeps only the best class of the anchor
    (0.4, True, [(0.72, 3), (0.45, 4)]),
    (0.8, True, []),
])
def test_decode_yolox_threshold_and_multi_label(threshold, multi_label, want):
    pred = np.zeros((N_YOLOX_416, 85), np.float32)  # no batch axis is accepted too
    pred[10, :5] = [0, 0, 0, 0, 0.9]
    pred[10, 5 + 3], pred[10, 5 + 4] = 0.8, 0.5
    c = decode_yolox(pred, (416, 416), score_threshold=threshold, multi_label=multi_label)
    got = sorted(zip(np.round(c.scores, 5).tolist(), c.class_ids.tolist()), reverse=True)
    assert got == [(pytest.approx(s, abs=1e-5), k) for s, k in want]


@pytest.mark.parametrize("shape, size, match", [
    ((1, 3548, 85), (416, 416), "does not fit a 416×416 input"),
    ((1, N_YOLOX_416, 85), (320, 320), "does not fit a 320×320 input"),
    ((2, N_YOLOX_416, 85), (416, 416), "batch size 1"),
    ((N_YOLOX_416,), (416, 416), "expected a 3-d output"),
])
def test_decode_yolox_rejects_wrong_shapes(shape, size, match):
    with pytest.raises(DetectorOutputError, match=match):
        decode_yolox(np.zeros(shape, np.float32), size)


def _naive_yolox(pred, size, strides, thr):
    """Megvii's demo_postprocess + a per-row loop, written the plain way: the reference."""
    out = []
    i = 0
    for s in strides:
        for gy in range(size[1] // s):
            for gx in range(size[0] // s):
                r = pred[i]
                i += 1
                k = int(np.argmax(r[5:]))
                score = float(r[4] * r[5 + k])
                if score <= thr:
                    continue
                cx, cy = (r[0] + gx) * s, (r[1] + gy) * s
                w, h = math.exp(r[2]) * s, math.exp(r[3]) * s
                out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, k))
    return out


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.9])
def test_decode_yolox_matches_plain_loop_on_random_head(threshold):
    rng = np.random.default_rng(0)
    pred = rng.random((N_YOLOX_416, 85), dtype=np.float32)
    pred[:, 2:4] = rng.normal(0, 1, (N_YOLOX_416, 2))
    # Edge rows for the objectness pre-filter: a certain class with objectness just above the
    # threshold is kept; one just below it is not.
    pred[7, 4], pred[7, 5:] = np.nextafter(np.float32(threshold), np.float32(1)), 0.0
    pred[7, 5 + 3] = 1.0
    pred[8, 4], pred[8, 5:] = np.nextafter(np.float32(threshold), np.float32(0)), 1.0
    ref = _naive_yolox(pred, (416, 416), (8, 16, 32), threshold)
    c = decode_yolox(pred[None], (416, 416), score_threshold=threshold)
    assert len(ref) == len(c.scores) > 10
    edge_row = [r for r in ref[:9] if r[5] == 3 and r[4] == pytest.approx(float(pred[7, 4]))]
    assert len(edge_row) == 1 and float(c.scores[ref.index(edge_row[0])]) > threshold
    np.testing.assert_allclose(c.boxes, np.array([r[:4] for r in ref]), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(c.scores, [r[4] for r in ref], rtol=1e-5)
    assert c.class_ids.tolist() == [r[5] for r in ref]


# --- Ultralytics ------------------------------------------------------------------------------


def _ultra_head(n_classes=80, n=8400):
    head = np.zeros((4 + n_classes, n), np.float32)
    head[:4, 5] = [100, 50, 20, 40]  # cx, cy, w, h in input pixels
    head[4 + 2, 5] = 0.9
    head[4 + 1, 5] = 0.3
    head[:4, 7000] = [300, 300, 10, 10]
    head[4 + 79, 7000] = 0.4
    return head


@pytest.mark.parametrize("layout, num_classes", [("channels_first", 80), ("channels_first", None),
                                                 ("channels_last", 80), ("channels_last", None)])
def test_decode_ultralytics_layouts(layout, num_classes):
    head = _ultra_head()
    pred = head[None] if layout == "channels_first" else head.T[None]
    c = decode_ultralytics(pred, num_classes=num_classes, score_threshold=0.25)
    order = np.argsort(-c.scores)
    np.testing.assert_allclose(c.boxes[order], [[90, 30, 110, 70], [295, 295, 305, 305]])
    np.testing.assert_allclose(c.scores[order], [0.9, 0.4])
    assert c.class_ids[order].tolist() == [2, 79]


def test_decode_ultralytics_multi_label_and_errors():
    c = decode_ultralytics(_ultra_head()[None], score_threshold=0.25, multi_label=True)
    assert sorted(c.class_ids.tolist()) == [1, 2, 79]
    with pytest.raises(DetectorOutputError, match="no axis of 4 \\+ 3 classes"):
        decode_ultralytics(_ultra_head()[None], num_classes=3)
    with pytest.raises(DetectorOutputError, match="no class scores"):
        decode_ultralytics(np.zeros((1, 4, 100), np.float32))


# --- TFLite SSD -------------------------------------------------------------------------------


def _ssd_outputs():
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = [0.1, 0.2, 0.5, 0.6]  # ymin, xmin, ymax, xmax
    boxes[0, 1] = [0.0, 0.0, 1.0, 1.0]
    boxes[0, 2] = [0.3, 0.3, 0.4, 0.4]  # beyond count: padding
    classes = np.array([[0, 12, 5, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    scores = np.array([[0.9, 0.6, 0.95, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    return boxes, classes, scores, np.array([2], np.float32)


@pytest.mark.parametrize("threshold, want_n", [(0.5, 2), (0.7, 1), (0.95, 0)])
def test_decode_tflite_ssd(threshold, want_n):
    c = decode_tflite_ssd(*_ssd_outputs(), input_wh=(300, 200), score_threshold=threshold)
    assert len(c.scores) == want_n
    if want_n:
        np.testing.assert_allclose(c.boxes[0], [60, 20, 180, 100])  # x = 0.2·300, y = 0.1·200
        assert c.class_ids[0] == 0
    if want_n == 2:
        np.testing.assert_allclose(c.boxes[1], [0, 0, 300, 200])
        assert c.class_ids[1] == 12


def test_tflite_ssd_outputs_picked_by_shape_when_names_differ():
    b, k, s, n = _ssd_outputs()
    outputs = {"scores": s, "n": n, "cls": k, "b": b}  # scrambled order, unknown names
    c = TfliteSsdDecoder(("x", "y", "z", "w"))(outputs, (300, 300), 0.5)
    assert c.class_ids.tolist() == [0, 12] and c.scores.tolist() == pytest.approx([0.9, 0.6])
    with pytest.raises(DetectorOutputError, match="cannot identify"):
        TfliteSsdDecoder()({"a": b, "b": b}, (300, 300), 0.5)


# --- finalize: class filter, class-aware NMS, max detections, mapping back ---------------------


def _cands():
    boxes = np.array([[0, 0, 100, 100], [5, 5, 100, 100], [0, 0, 100, 100], [200, 200, 300, 300],
                      [400, 0, 500, 60]], np.float32)
    return Candidates(boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32), np.array([0, 0, 1, 0, 2], np.int32))


@pytest.mark.parametrize("kwargs, want_scores", [
    (dict(nms_iou=0.5), [0.9, 0.7, 0.6, 0.5]),  # box 1 suppressed by box 0; class 1 survives box 0
    (dict(nms_iou=None), [0.9, 0.8, 0.7, 0.6, 0.5]),
    (dict(nms_iou=0.5, max_detections=2), [0.9, 0.7]),
    (dict(nms_iou=0.5, keep_classes=np.array([0])), [0.9, 0.6]),
    (dict(nms_iou=0.5, keep_classes=np.array([1, 2])), [0.7, 0.5]),
    (dict(nms_iou=0.5, keep_classes=np.array([7])), []),
])
def test_finalize_filters_and_suppresses(kwargs, want_scores):
    d = finalize(_cands(), Transform(), None, **kwargs)
    assert d.score.tolist() == pytest.approx(want_scores)


def test_finalize_maps_back_through_letterbox_and_clips():
    # Source 1000×500 letterboxed to 416 (scale 0.416, top-left): model (0, 0, 208, 104) → (0, 0, 500, 250).
    tf = Transform(0.416, 0.416, 0, 0)
    c = Candidates(np.array([[0, 0, 208, 104], [-10, 100, 420, 300]], np.float32),
                   np.array([0.9, 0.8], np.float32), np.array([3, 4], np.int32))
    d = finalize(c, tf, (1000, 500), nms_iou=0.45)
    np.testing.assert_allclose(d.xyxy[0], [0, 0, 500, 250], atol=1e-3)
    np.testing.assert_allclose(d.xyxy[1], [0, 100 / 0.416, 1000, 500], atol=1e-3)  # clipped
    assert d.class_id.tolist() == [3, 4]
    assert len(finalize(Candidates.empty(), tf, (10, 10), nms_iou=0.5)) == 0


# --- make_decoder from cards -------------------------------------------------------------------


def _card_with(extra: dict) -> ModelCard:
    data = get_card("yolox_nano_416").to_dict()
    data["decoding"] = extra
    return ModelCard.from_dict(data)


@pytest.mark.parametrize("extra, want", [
    ({"decoder": "yolox", "strides": [8, 16, 32]}, "YoloxDecoder"),
    ({"decoder": "ultralytics", "num_classes": 80}, "UltralyticsDecoder"),
    ({"decoder": "tflite_ssd"}, "TfliteSsdDecoder"),
    ({"decoder": "yolov5"}, ModelCardError),
    ({}, ModelCardError),
    ({"decoder": "yolox", "strides": [8, "x"]}, ModelCardError),
    ({"decoder": "ultralytics", "num_classes": 0}, ModelCardError),
])
def test_make_decoder_from_card(extra, want):
    if isinstance(want, type):
        with pytest.raises(want, match="decoding"):
            make_decoder(_card_with(extra))
    else:
        assert type(make_decoder(_card_with(extra))).__name__ == want


# --- the Detector on the shared models ----------------------------------------------------------


@pytest.fixture(scope="module")
def bus(samples):
    from edge.imageio import load_image

    return load_image(samples / "bus.jpg")


@pytest.fixture(scope="module")
def yolox(model_dir):
    from edge.detect.detector import create_detector

    with create_detector("yolox_nano_416", threads=2) as det:
        yield det


def test_yolox_detector_on_bus(yolox, bus):
    d = yolox.detect(bus)
    names = [yolox.labels[c] for c in d.class_id]
    assert names[0] == "bus" and names.count("person") >= 3
    assert len(yolox.labels) == 80 and "n/a" not in yolox.labels
    # boxes in source pixels (bus.jpg is 810×1080): the bus spans most of the width
    assert d.xyxy[0, 2] - d.xyxy[0, 0] > 0.8 * bus.shape[1]
    assert (d.xyxy[:, 2] <= bus.shape[1]).all() and (d.xyxy[:, 3] <= bus.shape[0]).all()
    assert np.all(d.score[:-1] >= d.score[1:]) and d.score.min() > yolox.score_threshold
    t = yolox.timings
    assert t.inference > 0 and t.preprocess > 0 and t.decode > 0 and t["inference"] == t.inference


def test_yolox_detector_equals_plain_decoding_of_the_same_output(yolox, bus):
    """Detector = prepare + engine + the plain loop decoder + greedy NMS, box for box."""
    from edge.preprocess import prepare

    d = yolox.detect(bus)
    x, tf = prepare(bus, yolox.spec)
    raw = yolox.engine.run({yolox.input_name: x})["output"][0]
    ref = _naive_yolox(raw, (416, 416), (8, 16, 32), yolox.score_threshold)
    ref.sort(key=lambda r: -r[4])
    kept = []
    for r in ref:  # plain class-aware NMS
        if all(k[5] != r[5] or box_iou(np.array([k[:4]]), np.array([r[:4]]))[0, 0] <= yolox.nms_iou for k in kept):
            kept.append(r)
    assert len(kept) == len(d)
    want = np.clip(tf.to_source(np.array([k[:4] for k in kept])), 0, [bus.shape[1], bus.shape[0]] * 2)
    np.testing.assert_allclose(d.xyxy, want, atol=1e-2)
    assert d.class_id.tolist() == [k[5] for k in kept]


@pytest.mark.parametrize("classes, want", [(["person"], {"person"}), ([5], {"bus"}), (["bus", 0], {"bus", "person"}),
                                           (["5"], {"bus"})])
def test_class_filter_by_name_or_id(model_dir, bus, classes, want):
    from edge.detect.detector import Detector

    from edge.engines import load_engine
    from edge.registry import resolve_model

    card = get_card("yolox_nano_416")
    with load_engine(resolve_model(card), threads=2) as eng:
        d = Detector(eng, card, classes=classes).detect(bus)
        assert {Detector(eng, card).label(c) for c in d.class_id} == want


@pytest.mark.parametrize("classes, match", [(["persn"], "did you mean 'person'"), ([80], "out of range"),
                                            ([1.5], "must be ints")])
def test_class_filter_rejects_unknown(model_dir, classes, match):
    from edge.detect.detector import Detector

    from edge.engines import load_engine
    from edge.registry import resolve_model

    card = get_card("yolox_nano_416")
    with load_engine(resolve_model(card), threads=2) as eng:
        with pytest.raises(ValueError, match=match):
            Detector(eng, card, classes=classes)


def test_ssd_detector_agrees_with_yolox_on_the_bus(yolox, bus):
    from edge.detect.detector import create_detector

    with create_detector("ssd_mobilenet_v1_coco_quant", threads=2) as ssd:
        assert ssd.backend == "litert" and len(ssd.labels) == 90  # coral list with "n/a" gaps
        d = ssd.detect(bus)
        assert d.score.min() > 0.5  # the card's threshold
        names = [ssd.labels[c] for c in d.class_id]
    assert "bus" in names and "person" in names
    y = yolox.detect(bus)
    iou = box_iou(d.xyxy[names.index("bus")][None], y.xyxy[:1])[0, 0]
    assert iou > 0.8


def test_create_detector_from_model_file_with_sidecar_card(model_dir, tmp_path, bus):
    from edge.detect.detector import create_detector

    card = get_card("yolox_nano_416")
    onnx = tmp_path / "my_yolox.onnx"
    shutil.copy(model_dir / card.file, onnx)
    shutil.copy(model_dir / card.labels.file, tmp_path / "coco_labels_coral.txt")
    data = card.to_dict()
    data.update(name="my_yolox", file="my_yolox.onnx", thresholds={"score": 0.8, "nms_iou": 0.3})
    (tmp_path / "my_yolox.json").write_text(json.dumps(data))
    for ref in (onnx, tmp_path / "my_yolox.json"):
        with create_detector(ref, threads=1) as det:
            assert det.name == "my_yolox" and det.score_threshold == 0.8 and det.nms_iou == 0.3
            assert len(det.detect(bus)) >= 1


@pytest.mark.parametrize("name, exc, match", [
    ("mobilenet_v2_1.0_224_quant", ModelCardError, "not an object detector"),
    ("yolox_nano", KeyError, "did you mean"),
])
def test_create_detector_rejects(model_dir, name, exc, match):
    from edge.detect.detector import create_detector

    with pytest.raises(exc, match=match):
        create_detector(name)


def test_detector_rejects_bad_images(yolox):
    with pytest.raises(ValueError, match="uint8"):
        yolox.detect(np.zeros((10, 10, 3), np.float32))
    assert len(yolox.detect(np.zeros((64, 48), np.uint8))) == 0  # gray accepted, nothing found


# --- fast preprocessing is bit-identical to edge.preprocess.prepare -----------------------------


def _spec(**kw):
    from edge.cards import InputSpec

    base = dict(name="x", shape=(1, 3, 96, 128), layout="NCHW", dtype="float32", color="BGR")
    base.update(kw)
    return InputSpec(**base)


FAST_PREPARE_SPECS = [
    ("yolox_card", get_card("yolox_nano_416").inputs[0]),
    ("ssd_card_uint8_rgb_nhwc", get_card("ssd_mobilenet_v1_coco_quant").inputs[0]),
    ("float_rgb_nhwc_mean_std", _spec(shape=(1, 96, 128, 3), layout="NHWC", color="RGB",
                                      mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4), resize="letterbox",
                                      pad_value=114)),
    ("float_bgr_center_crop", _spec(resize="center_crop", resize_shorter=110, mean=(1, 2, 3), std=(2, 2, 2))),
    ("ultralytics_like", _spec(shape=(1, 3, 64, 64), color="RGB", std=(255, 255, 255), resize="letterbox",
                               pad_value=114)),
    ("gray", _spec(shape=(1, 1, 96, 128), color="GRAY")),
    ("uint8_scaled", _spec(dtype="uint8", mean=(127.5,) * 3, std=(1.0,) * 3)),
]


@pytest.mark.parametrize("spec", [s for _, s in FAST_PREPARE_SPECS], ids=[n for n, _ in FAST_PREPARE_SPECS])
@pytest.mark.parametrize("hw", [(1080, 810), (37, 500), (96, 128)])
def test_prepare_equals_a_plain_reference(bus, spec, hw):
    """edge.preprocess.prepare's one-copy conversion equals the obvious step-by-step version."""
    import cv2

    from edge.preprocess import prepare, resize_image

    def reference(img, spec):
        if spec.color == "GRAY":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif spec.color == "RGB":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img, tf = resize_image(img, spec.size, spec.resize, pad_value=spec.pad_value,
                               resize_shorter=spec.resize_shorter, interpolation=spec.interpolation)
        if img.ndim == 2:
            img = img[:, :, None]
        c = img.shape[2]
        x = (img.astype(np.float32) - np.float32(spec.mean)[:c]) / np.float32(spec.std)[:c]
        x = x.astype(spec.dtype)
        if spec.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None]), tf

    image = cv2.resize(bus, (hw[1], hw[0]))
    want, tf_want = reference(image, spec)
    got, tf_got = prepare(image, spec)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    assert tf_got == tf_want


# --- an Ultralytics-style head end to end, through a tiny ONNX graph ----------------------------


def _constant_head_onnx(path, head: np.ndarray, input_shape=(1, 3, 64, 64)) -> None:
    """An ONNX model whose output is ``head`` whatever the image (plus 0 · mean(image))."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["head", "z"], ["output0"])]
    graph = helper.make_graph(
        nodes, "const_head",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head.shape))],
        [numpy_helper.from_array(head.astype(np.float32), "head"),
         numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_ultralytics_card_end_to_end_maps_boxes_through_centred_letterbox(tmp_path):
    from edge.detect.detector import Detector
    from edge.engines import load_engine
    from edge.registry import sha256_file

    n_anchors = 8 * 8 + 4 * 4 + 2 * 2  # strides 8/16/32 on 64×64
    head = np.zeros((1, 4 + 3, n_anchors), np.float32)
    head[0, :4, 10] = [32, 32, 16, 8]  # cx, cy, w, h in input pixels
    head[0, 4 + 2, 10] = 0.9
    head[0, :4, 11] = [33, 32, 16, 8]  # a duplicate of the same class: NMS drops it
    head[0, 4 + 2, 11] = 0.8
    head[0, :4, 40] = [10, 30, 4, 4]
    head[0, 4 + 0, 40] = 0.3
    path = tmp_path / "tiny_yolo.onnx"
    _constant_head_onnx(path, head)
    card = ModelCard.from_dict({
        "name": "tiny_yolo", "task": "object_detection", "format": "onnx", "file": path.name,
        "sha256": sha256_file(path), "licence": {"spdx": "MIT"}, "source": {},
        "inputs": [{"name": "images", "shape": [1, 3, 64, 64], "color": "RGB", "std": [255, 255, 255],
                    "resize": "letterbox", "pad_value": 114}],
        "outputs": [{"name": "output0", "shape": [1, 7, n_anchors]}],
        "extra": {"decoder": "ultralytics", "num_classes": 3}, "thresholds": {"score": 0.25, "nms_iou": 0.5}})
    image = np.zeros((64, 128, 3), np.uint8)  # 128 wide: scale 0.5, padded 16 px top and bottom
    with load_engine(path, threads=1) as eng:
        d = Detector(eng, card, labels=["a", "b", "c"]).detect(image)
    assert d.class_id.tolist() == [2, 0]
    np.testing.assert_allclose(d.score, [0.9, 0.3], rtol=1e-6)
    # (24, 28, 40, 36) in the 64×64 input → x / 0.5, (y − 16) / 0.5 in the source
    np.testing.assert_allclose(d.xyxy[0], [48, 24, 80, 40], atol=1e-4)
    np.testing.assert_allclose(d.xyxy[1], [16, 24, 24, 32], atol=1e-4)  # (8, 28, 12, 32) in the input
