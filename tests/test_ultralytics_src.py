"""export/sources/ultralytics.py: Ultralytics YOLOv8 / YOLO11 ``.yaml`` (random weights) → ONNX + card → edge Detector."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from export.sources.ultralytics import _import_ultralytics  # noqa: E402

try:  # the extra is optional; import it the project's way (offline, settings in a temp dir)
    _import_ultralytics()
except ImportError as e:
    pytest.skip(f"optional ultralytics extra not installed: {e}", allow_module_level=True)

from edge.detect.decoders import decode_ultralytics  # noqa: E402
from edge.detect.detector import create_detector  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from export.sources.ultralytics import export_ultralytics_onnx, load_ultralytics  # noqa: E402

IMGSZ = 640
N_ANCHORS = (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2  # 8400
CONFIGS = ("yolov8n.yaml", "yolo11n.yaml")


@pytest.fixture(scope="module", params=CONFIGS)
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = load_ultralytics(request.param)
    onnx_path, card_path = export_ultralytics_onnx(model, tmp_path_factory.mktemp("ultra"), IMGSZ,
                                                   name=request.param.split(".")[0])
    return model, onnx_path, card_path


def test_onnx_matches_torch(exported):
    model, onnx_path, _ = exported
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert ref.shape == got.shape == (1, 84, N_ANCHORS)
    assert np.abs(ref - got).max() <= 1e-3 * max(1.0, float(np.abs(ref).max()))


def test_card_describes_ultralytics_preprocessing(exported):
    _, onnx_path, card_path = exported
    card = json.loads(card_path.read_text())
    spec = card["inputs"][0]
    assert card["task"] == "object_detection" and card["file"] == onnx_path.name
    assert spec["name"] == "images" and spec["shape"] == [1, 3, IMGSZ, IMGSZ]
    assert (spec["color"], spec["resize"], spec["pad_value"], spec["std"]) == ("RGB", "letterbox", 114, [255.0] * 3)
    assert card["decoding"]["decoder"] == "ultralytics" and card["decoding"]["num_classes"] == 80
    assert card["licence"]["spdx"].startswith("AGPL-3.0") and "copyleft" in card["licence"]["note"]
    assert card["labels"]["file"].endswith("coco_labels_coral.txt")


def test_detector_runs_on_real_image(exported, samples):
    _, _, card_path = exported
    image = load_image(samples / "bus.jpg")
    h, w = image.shape[:2]
    with create_detector(card_path, score_threshold=0.0, max_detections=50) as det:
        dets = det.detect(image)
        assert len(det.labels or ()) == 80
    assert 0 < len(dets.xyxy) <= 50  # random weights: tiny scores (Detect bias prior), all > 0
    assert np.all(dets.xyxy >= 0) and np.all(dets.xyxy[:, [0, 2]] <= w) and np.all(dets.xyxy[:, [1, 3]] <= h)
    assert np.all((dets.class_id >= 0) & (dets.class_id < 80))


def _reference_decode(pred: np.ndarray, thr: float):
    rows = []
    for a in range(pred.shape[2]):
        cx, cy, bw, bh = pred[0, :4, a]
        scores = pred[0, 4:, a]
        c = int(np.argmax(scores))
        if scores[c] > thr:
            rows.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, scores[c], c))
    return np.array(rows, np.float32).reshape(-1, 6)


def test_decoder_agrees_with_reference(exported, samples):
    model, _, _ = exported
    x = np.random.default_rng(1).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).numpy()
    thr = float(np.quantile(pred[0, 4:].max(axis=0), 0.9))  # keep the top ~10 % of anchors
    ref = _reference_decode(pred, thr)
    got = decode_ultralytics(pred, num_classes=80, score_threshold=thr)
    assert len(ref) > 0 and len(got.boxes) == len(ref)
    order = np.lexsort((ref[:, 1], ref[:, 0]))
    got_rows = np.column_stack([got.boxes, got.scores, got.class_ids]).astype(np.float32)
    np.testing.assert_allclose(got_rows[np.lexsort((got_rows[:, 1], got_rows[:, 0]))], ref[order], rtol=1e-5, atol=1e-3)


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_ultralytics(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="shipped with ultralytics"):
        load_ultralytics("yolov99z.yaml")
    with pytest.raises(ValueError, match=r"\.yaml config or a \.pt"):
        load_ultralytics(tmp_path / "model.onnx")


def test_pt_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = load_ultralytics("yolov8n.yaml", nc=3)
    torch.save({"model": model}, tmp_path / "mine.pt")
    loaded = load_ultralytics(tmp_path / "mine.pt")
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        assert loaded(x).shape == (1, 7, 2100)
        assert torch.allclose(loaded(x), model(x))
