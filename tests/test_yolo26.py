"""YOLO26 (Ultralytics 8.4, NMS-free one-to-one head, output [1, 300, 6]) and the end-to-end decoder.

No trained YOLO26 weights are reachable here: the packaged ``yolo26n.yaml`` gives a random model.
Its weights are re-drawn (He-normal convolutions, jittered batch norms) so that scores differ from
anchor to anchor: with the stock initialisation every anchor scores the same, and the head's
top-300 choice among ties is arbitrary (torch and onnxruntime pick different ones).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from export.sources.ultralytics import _import_ultralytics  # noqa: E402

try:
    _import_ultralytics()
except ImportError as e:
    pytest.skip(f"optional ultralytics extra not installed: {e}", allow_module_level=True)

from edge.cards import load_card  # noqa: E402
from edge.detect.decode_end2end import decode_end2end  # noqa: E402
from edge.detect.detector import create_detector  # noqa: E402
from edge.errors import DetectorOutputError  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.preprocess import prepare  # noqa: E402
from export.sources.ultralytics import export_ultralytics_onnx, load_ultralytics  # noqa: E402

IMGSZ = 320


def _redraw(model) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


@pytest.fixture(scope="module")
def yolo26(tmp_path_factory):
    model = load_ultralytics("yolo26n.yaml")
    _redraw(model)
    onnx_path, card_path = export_ultralytics_onnx(model, tmp_path_factory.mktemp("y26"), IMGSZ, name="yolo26n")
    return model, onnx_path, load_card(card_path)


def test_yolo26_exports_the_nms_free_head_and_matches_torch(yolo26, samples):
    model, onnx_path, card = yolo26
    assert card.decoding.decoder == "ultralytics_end2end" and card.decoding.num_classes == 80
    x, _ = prepare(load_image(samples / "bus.jpg"), card.inputs[0])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert want.shape == got.shape == (1, 300, 6)
    assert len(np.unique(want[0, :, 4])) > 250  # distinct scores
    np.testing.assert_allclose(got[0, :, 4], want[0, :, 4], atol=1e-4)  # same ranking of scores
    # Rows whose scores differ by float rounding may swap places: match each row to a torch row.
    free = list(range(300))
    for row in got[0]:
        hit = next((k for k in free if want[0, k, 5] == row[5] and abs(want[0, k, 4] - row[4]) < 1e-4
                    and np.abs(want[0, k, :4] - row[:4]).max() < 0.05), None)
        assert hit is not None, row
        free.remove(hit)


def test_yolo26_is_decoded_without_nms(yolo26, samples):
    _, onnx_path, card = yolo26
    image = load_image(samples / "bus.jpg")
    x, tf = prepare(image, card.inputs[0])
    raw = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0][0]
    thr = float(np.sort(raw[:, 4])[-40]) - 1e-6  # about 40 rows of the random model
    with create_detector(str(onnx_path), score_threshold=thr, max_detections=300) as det:
        assert det.kind == "ultralytics_end2end"
        d = det.detect(image)
    rows = raw[raw[:, 4] > thr]
    # Every row above the threshold comes back, overlapping same-class boxes included (NMS would drop them).
    assert len(d) == len(rows) > 0
    # Two heavily overlapping boxes of one class both survive (an NMS at IoU 0.7 would drop one).
    with create_detector(str(onnx_path), score_threshold=0.25) as det:
        prepared = det.preprocess(image)
        out = np.zeros((1, 300, 6), np.float32)
        out[0, :2] = [[100, 100, 200, 200, 0.9, 5], [104, 104, 204, 204, 0.8, 5]]
        pair = det.postprocess({"output": out}, prepared)
    assert len(pair) == 2 and pair.class_id.tolist() == [5, 5]
    np.testing.assert_allclose(pair.xyxy[0], tf.to_source(out[0, 0, :4]), atol=1e-4)
    np.testing.assert_allclose(np.sort(d.score)[::-1], np.sort(rows[:, 4])[::-1], atol=1e-6)
    assert sorted(d.class_id.tolist()) == sorted(rows[:, 5].astype(int).tolist())


def test_yolo11_keeps_its_nms_head(tmp_path):
    torch.manual_seed(0)
    model = load_ultralytics("yolo11n.yaml")
    _, card_path = export_ultralytics_onnx(model, tmp_path, IMGSZ, name="yolo11n")
    card = load_card(card_path)
    assert card.decoding.decoder == "ultralytics" and card.outputs[0].shape[1] == 84
    with pytest.raises(ValueError, match="no one-to-one"):
        load_ultralytics("yolo11n.yaml", end2end=True)


def test_decode_end2end_rows_and_errors():
    pred = np.array([[[10, 10, 20, 20, 0.9, 3], [11, 11, 21, 21, 0.8, 3], [0, 0, 5, 5, 0.1, 1]]], np.float32)
    c = decode_end2end(pred, score_threshold=0.25, num_classes=4)
    assert c.class_ids.tolist() == [3, 3] and c.boxes.shape == (2, 4)
    with pytest.raises(DetectorOutputError, match=r"\[1, K, 6\]"):
        decode_end2end(np.zeros((1, 84, 2100), np.float32))
    with pytest.raises(DetectorOutputError, match="outside the card's 2 classes"):
        decode_end2end(pred, num_classes=2)


def test_class_names_of_a_checkpoint_go_into_the_card(tmp_path):
    from edge.registry import load_labels

    torch.manual_seed(0)
    model = load_ultralytics("yolo11n.yaml", nc=3)
    model.names = {0: "apple", 1: "pear", 2: "plum"}
    torch.save({"model": model}, tmp_path / "fruit.pt")
    _, card_path = export_ultralytics_onnx(tmp_path / "fruit.pt", tmp_path / "out", IMGSZ)
    card = load_card(card_path)
    assert load_labels(card, base=card_path.parent) == ["apple", "pear", "plum"]
