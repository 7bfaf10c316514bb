"""A converted face detector made resizable (export.tflite.resizable), so the device's tracker can
search a region around the face with the release's own TFLite detector.

Real YuNet weights, converted here; the freed graph is compared with the converter's fixed graph
at its own size (bit-exact) and with the ONNX source at other sizes; its int8 variant finds the
same face in a region as the float ONNX does.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

from edge.engines import load_engine  # noqa: E402
from edge.engines.litert import SHAPE_CACHE  # noqa: E402
from edge.errors import EngineError  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.registry import resolve  # noqa: E402
from edge.vision.face_detectors import create_face_detector  # noqa: E402
from edge.vision.nms import box_iou  # noqa: E402
from export.gates.roles import face_detector_input  # noqa: E402
from export.onnx.from_torch import ExportError  # noqa: E402
from export.tflite.convert import calibrate_tflite, onnx_to_tflite, quantize_tflite, torch_to_tflite  # noqa: E402
from export.tflite.flatbuffer import list_ops  # noqa: E402
from export.tflite.resizable import check_resizable, is_resizable, make_resizable, write_resizable  # noqa: E402
from export.variants import TOL_FP32, get_target  # noqa: E402

#: Photos the int8 variant is calibrated on (not the ones it is checked on).
CALIBRATION = ("group_t1.jpg", "zidane.jpg", "bus.jpg", "pets.jpg")


@pytest.fixture(scope="module")
def yunet(tmp_path_factory, samples):
    """YuNet converted once: the converter's fixed fp32 graph, its freed copy, and a freed full-integer int8."""
    ref = resolve("yunet_s_640x640")
    out = tmp_path_factory.mktemp("yunet_resizable")
    fixed = onnx_to_tflite(ref.path, out / "fixed_fp32.tflite", model_name="yunet")
    free = out / "free_fp32.tflite"
    shutil.copyfile(fixed, free)
    write_resizable(free, "yunet")
    feeds = [{"input": face_detector_input(load_image(samples / f), ref.card)} for f in CALIBRATION]
    qsvs = calibrate_tflite(fixed, feeds, model_name="yunet")
    int8 = quantize_tflite(fixed, out / "free_int8.tflite", "tflite_int8", qsvs=qsvs, model_name="yunet")
    write_resizable(int8, "yunet")
    return ref, fixed, free, int8


def _feed(samples, ref, name="face.jpg"):
    return {"input": face_detector_input(load_image(samples / name), ref.card)}


def test_the_converters_fixed_graph_cannot_run_at_another_size(yunet):
    from ai_edge_litert.interpreter import Interpreter

    _, fixed, _, _ = yunet
    assert not is_resizable(fixed)
    it = Interpreter(model_path=str(fixed))
    d = it.get_input_details()[0]
    with pytest.raises(Exception):  # noqa: B017 - the runtime's own error (XNNPACK reshape) is the point
        it.resize_tensor_input(d["index"], [1, 3, 288, 384])
        it.allocate_tensors()
        it.set_tensor(d["index"], np.zeros((1, 3, 288, 384), np.float32))
        it.invoke()
    with load_engine(fixed, backend="litert", threads=1) as eng, pytest.raises(EngineError, match="expects shape"):
        eng.run({"input": np.zeros((1, 3, 288, 384), np.float32)})


def test_freed_graph_is_the_same_at_its_size_and_agrees_with_onnx_at_others(yunet, samples):
    ref, fixed, free, _ = yunet
    assert is_resizable(free)
    ops = [o.op for o in list_ops(free)]
    assert "RESIZE_NEAREST_NEIGHBOR" not in ops and ops.count("DEPTH_TO_SPACE") == 2
    feed = _feed(samples, ref)
    with load_engine(fixed, backend="litert", threads=1) as a, load_engine(free, backend="litert", threads=1) as b:
        assert b.inputs[0].shape == (1, 3, None, None)
        want, got = a.run(feed), b.run(feed)
    assert all(np.array_equal(want[k], got[k]) for k in want)
    for size in (None, (480, 640), (160, 224)):
        ag = check_resizable(free, ref.path, feed, TOL_FP32, size=size)
        assert ag.passed, (size, ag)


def test_freed_int8_finds_the_face_in_a_region_as_the_float_model_does(yunet, samples):
    """What the tracker asks of the release's detector: a region around the face, at the frame's scale."""
    ref, _, _, int8 = yunet
    img = load_image(samples / "face.jpg")
    h, w = img.shape[:2]
    scale = min(640 / w, 640 / h)
    small = __import__("cv2").resize(img, (round(w * scale), round(h * scale)))
    with create_face_detector(ref.path, kind="yunet", threads=1) as whole:
        face = whole.detect(small).xyxy[0]
    fx0, fy0, fx1, fy1 = face
    pad = max(fx1 - fx0, fy1 - fy0)
    x0, y0 = int(max(0, fx0 - pad)) // 32 * 32, int(max(0, fy0 - pad)) // 32 * 32
    region = small[y0:int(min(small.shape[0], fy1 + pad)), x0:int(min(small.shape[1], fx1 + pad))]
    assert region.shape[0] < small.shape[0] or region.shape[1] < small.shape[1], "a region, not the frame"
    dyn = resolve("yunet_s_dynamic").path
    with create_face_detector(dyn, kind="yunet", threads=1) as onnx_det, \
            create_face_detector(int8, kind="yunet", backend="litert", threads=1) as lite:
        assert not lite.fixed_input
        want, got = onnx_det.detect(region), lite.detect(region)
    assert len(want) >= 1 and len(got) == len(want)
    iou = box_iou(np.asarray(want.xyxy[:1], np.float32), np.asarray(got.xyxy, np.float32)).max()
    assert iou >= 0.85, iou
    ag = check_resizable(int8, ref.path, _feed(samples, ref), get_target("tflite_int8").tolerance)
    assert ag.output is not None


def test_a_graph_tied_to_its_size_is_refused_and_left_as_it_was(tmp_path):
    torch = pytest.importorskip("torch")

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 8 * 8, 2)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    path = torch_to_tflite(Head().eval(), [np.zeros((1, 3, 8, 8), np.float32)], tmp_path / "head.tflite",
                           input_names=["input"], output_names=["logits"])
    before = path.read_bytes()
    with pytest.raises(ExportError, match="cannot be made resizable"):
        make_resizable(before, "head")
    with pytest.raises(ExportError, match="head"):
        write_resizable(path, "head")
    assert path.read_bytes() == before


def test_litert_engine_keeps_an_interpreter_per_input_shape(yunet, samples):
    ref, _, free, _ = yunet
    x = _feed(samples, ref)["input"]
    sizes = [(640, 640), (288, 384), (160, 224), (320, 320), (224, 160), (256, 256), (640, 640)]
    with load_engine(free, backend="litert", threads=1) as eng:
        first = None
        for h, w in sizes:
            out = eng.run({"input": np.ascontiguousarray(x[:, :, :h, :w])})
            n = (h // 8) * (w // 8)
            assert out["cls_8"].shape == (1, n, 1)
            if first is None:
                first = out
        assert len(eng._by_shape) <= SHAPE_CACHE
        assert all(np.array_equal(first[k], out[k]) for k in first), "same shape again, same outputs"
