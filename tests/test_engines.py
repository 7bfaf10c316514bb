"""Each engine on real shared models, plus backend selection and error rows."""

import logging

import cv2
import numpy as np
import pytest

from edge import registry
from edge.classify import Classifier
from edge.engines import BACKENDS, backend_for_path, load_engine
from edge.errors import EngineError
from edge.imageio import load_image

CAT_IDS = {282, 283, 284, 285, 286}  # tabby, tiger cat, Persian, Siamese, Egyptian cat (1001-class ids)


def _classify(name, image, backend=None):
    ref = registry.resolve(name)
    with load_engine(ref.path, backend=backend, threads=2) as eng:
        return Classifier(eng, ref.card, registry.load_labels(ref.card)).classify(image, 5)


@pytest.mark.parametrize("name", ["mobilenet_v2_1.0_224_quant", "mobilenet_v1_0.25_128_quant"])
def test_litert_coral_classifier(name, samples):
    cat = _classify(name, load_image(samples / "cat.bmp"))
    parrot = _classify(name, load_image(samples / "parrot.jpg"))
    assert cat[0].class_id in CAT_IDS, cat
    assert parrot[0].label == "macaw", parrot


def test_litert_quantises_and_dequantises(samples):
    ref = registry.resolve("mobilenet_v2_1.0_224_quant")
    img = cv2.resize(cv2.cvtColor(load_image(samples / "cat.bmp"), cv2.COLOR_BGR2RGB), (224, 224))
    with load_engine(ref.path) as eng, load_engine(ref.path, raw_io=True) as raw:
        assert eng.inputs[0].quantization == (0.0078125, 128)
        assert eng.outputs[0].dtype == np.float32 and raw.outputs[0].dtype == np.uint8
        q = raw.run({"input": img[None]})["MobilenetV2/Predictions/Softmax"]
        # a float input in the model's real-valued domain is quantised by the engine
        f = eng.run({"input": (img[None].astype(np.float32) - 128) / 128})["MobilenetV2/Predictions/Softmax"]
        np.testing.assert_allclose(f, q.astype(np.float32) * 0.00390625, atol=1e-6)
        assert 0.95 < f.sum() < 1.05  # uint8 softmax: 1/256 steps lose a little mass


def test_blazeface_real_output_shapes(samples):
    ref = registry.resolve("blazeface_short_range")
    with load_engine(ref.path) as eng:
        x = np.zeros((1, 128, 128, 3), np.float32)
        out = eng.run({eng.inputs[0].name: x})
    assert out["regressors"].shape == (1, 896, 16)
    assert out["classificators"].shape == (1, 896, 1)


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_weights_listed_as_inputs_need_no_feed(backend):
    """SFace fp32 lists 29 dangling weights as graph inputs; ULFD lists its initialisers."""
    ref = registry.resolve("sface_2021dec_fp32")
    with load_engine(ref.path, backend=backend) as eng:
        assert [t.name for t in eng.inputs] in (["data"], ["input"])
        out = eng.run({eng.inputs[0].name: np.full((1, 3, 112, 112), 127, np.float32)})
    emb = next(iter(out.values()))
    assert emb.shape == (1, 128) and np.isfinite(emb).all() and np.abs(emb).max() > 0


def test_onnxruntime_and_opencv_agree_on_yolox(data_dir):
    ref = registry.resolve("yolox_nano_416")
    img = load_image(data_dir / "samples" / "bus.jpg")
    from edge.preprocess import prepare

    x, _ = prepare(img, ref.card.inputs[0])
    with load_engine(ref.path, threads=2) as a, load_engine(ref.path, backend="opencv") as b:
        ya = a.run({"images": x})["output"]
        yb = b.run({"images": x})["output"]
    assert ya.shape == (1, 3549, 85)
    np.testing.assert_allclose(ya, yb, atol=2e-3, rtol=1e-3)
    assert (ya[0, :, 4] > 0.5).sum() >= 3  # a bus and people are found


def test_onnxruntime_options_and_provider_fallback(caplog):
    ref = registry.resolve("yunet_s_640x640")
    with caplog.at_level(logging.WARNING):
        eng = load_engine(ref.path, threads=1, inter_op_threads=1, optimization="basic",
                          providers=["tensorrt", "cuda", "cpu"])
    assert eng.providers == ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider" in caplog.text and "falling back" in caplog.text
    with pytest.raises(ValueError, match="unknown optimization"):
        load_engine(ref.path, optimization="max")


def test_feed_errors_name_the_input():
    ref = registry.resolve("yunet_s_640x640")
    with load_engine(ref.path) as eng:
        with pytest.raises(EngineError, match=r"expects shape 1×3×640×640, got 1×3×320×320"):
            eng.run({"input": np.zeros((1, 3, 320, 320), np.float32)})
        with pytest.raises(EngineError, match="missing"):
            eng.run({"images": np.zeros((1, 3, 640, 640), np.float32)})


@pytest.mark.parametrize("path, backend, expect", [
    ("m.onnx", None, "onnxruntime"),
    ("m.TFLITE", None, "litert"),
    ("m.bin", None, ValueError),
])
def test_backend_by_suffix(path, backend, expect):
    if isinstance(expect, str):
        assert backend_for_path(path) == expect
    else:
        with pytest.raises(expect, match="unknown suffix"):
            backend_for_path(path)


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        load_engine("model.onnx", backend="tensorflow")
    for name in BACKENDS:
        assert name in str(e.value)


def test_missing_runtime_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith(("ai_edge_litert", "tflite_runtime", "onnxruntime")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"edgesight\[litert\]"):
        load_engine("whatever.tflite")
    with pytest.raises(ImportError, match=r"edgesight\[onnx\]"):
        load_engine("whatever.onnx")


@pytest.mark.parametrize("content, backend", [(b"not a model at all", "onnxruntime"),
                                              (b"TFL3 garbage" * 10, "litert")])
def test_corrupt_model_gives_engine_error_naming_file(tmp_path, content, backend):
    p = tmp_path / ("broken.onnx" if backend == "onnxruntime" else "broken.tflite")
    p.write_bytes(content)
    with pytest.raises(EngineError, match="broken"):
        load_engine(p, backend=backend)


def test_onnxruntime_without_spinning_gives_the_same_output():
    ref = registry.resolve("yunet_s_640x640")
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 640, 640)).astype(np.float32)
    with load_engine(ref.path, threads=2) as a, load_engine(ref.path, threads=2, allow_spinning=False) as b:
        ya, yb = a.run({"input": x}), b.run({"input": x})
    for k in ya:
        np.testing.assert_allclose(ya[k], yb[k], rtol=1e-5, atol=1e-6)


def test_weight_inputs_dropped_alike_on_device_and_export():
    """One rule decides which graph inputs need no feed (edge.engines.onnx_wire.removable_inputs),
    used by the device's byte-level reader and by export's ModelProto preparation: a weight listed
    as an input goes, an input only a graph output reads stays, a real input stays."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge.engines.onnx_wire import strip_weight_inputs as strip_bytes
    from export.onnx.prep import strip_weight_inputs as strip_proto

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in ("x", "w", "passthrough", "unused")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("passthrough", TensorProto.FLOAT, [2, 2])], [w])
    model = helper.make_model(graph)
    data, dropped_b = strip_bytes(model.SerializeToString())
    dropped_p = strip_proto(model)
    assert sorted(dropped_b) == sorted(dropped_p) == ["unused", "w"]
    assert [i.name for i in onnx.load_from_string(data).graph.input] == [i.name for i in model.graph.input] \
        == ["x", "passthrough"]
