"""The export-time MAC counter (export.onnx.macs, with onnx), checked against an independent onnx-based
count, published figures and the TFLite count; and the registry cards' figures against it."""

from __future__ import annotations


import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper, shape_inference  # noqa: E402

from edge.bench.roofline import count_macs  # noqa: E402
from edge.registry import builtin_cards  # noqa: E402
from export.onnx.macs import MacCountError, count_onnx_macs, file_macs  # noqa: E402

SHARED_ONNX = ["detection/yolox_nano_416.onnx", "face_detection/ulfd_rfb_320.onnx",
               "face_detection/yunet_s_640x640.onnx", "face_embedding/mobilefacenet_128d.onnx",
               "face_embedding/sface_2021dec_fp32.onnx", "face_embedding/sface_2021dec_int8bq.onnx"]


def onnx_reference_macs(model: "onnx.ModelProto", batch: int = 1) -> int:
    """An independent count: onnx's own shape inference, then Conv/ConvTranspose/Gemm/MatMul formulas."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in inits:
            d = i.type.tensor_type.shape.dim[0]
            if not d.HasField("dim_value"):
                d.dim_value = batch
    model = shape_inference.infer_shapes(model, data_prop=True)
    shape = {t.name: list(t.dims) for t in model.graph.initializer}
    for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        shape[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    total = 0
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Conv":
            total += int(np.prod(shape[n.output[0]])) * int(np.prod(shape[n.input[1]][1:]))
        elif n.op_type == "ConvTranspose":
            total += int(np.prod(shape[n.input[0]])) * int(np.prod(shape[n.input[1]][1:]))
        elif n.op_type == "Gemm":
            a = shape[n.input[0]]
            total += int(np.prod(shape[n.output[0]])) * (a[0] if attrs.get("transA", 0) else a[1])
        elif n.op_type == "MatMul":
            total += int(np.prod(shape[n.output[0]])) * shape[n.input[0]][-1]
    return total


def _init(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.zeros(shape, dtype), name)


def _hand_graph() -> tuple["onnx.ModelProto", dict]:
    """A graph whose MACs are worked out by hand, through ops whose shapes must be propagated."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),                     # 1·8·32·32 · 3·3·3
        helper.make_node("MaxPool", ["c0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2]),     # → 16×16
        helper.make_node("Resize", ["p0", "", "scales"], ["r0"], mode="nearest"),           # → 32×32
        helper.make_node("Conv", ["r0", "w1"], ["c1"], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),  # depthwise
        helper.make_node("Concat", ["c1", "c1"], ["cat"], axis=1),                            # 16 channels
        helper.make_node("Conv", ["cat", "w2"], ["c2"], group=2),                              # grouped 1×1 → 32
        helper.make_node("ConvTranspose", ["c2", "w3"], ["c3"], strides=[2, 2]),               # 32 → 4, 16 → 32
        helper.make_node("Shape", ["c3"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["c3", "target"], ["flat"]),                                # [1, 4096]
        helper.make_node("Gemm", ["flat", "w4"], ["g"], transB=1),                              # 4096 → 10
        helper.make_node("Transpose", ["g"], ["gt"], perm=[1, 0]),                              # [10, 1]
        helper.make_node("MatMul", ["w5", "gt"], ["m"]),                                        # [6,10]·[10,1]
    ]
    inits = [_init("w0", (8, 3, 3, 3)), _init("w1", (8, 1, 3, 3)), _init("w2", (32, 8, 1, 1)),
             _init("w3", (32, 4, 2, 2)), _init("w4", (10, 4096)), _init("w5", (6, 10)),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    expected = {
        "Conv": 1 * 8 * 32 * 32 * 27 + 8 * 16 * 16 * 9 + 32 * 16 * 16 * 8,
        "ConvTranspose": (32 * 16 * 16) * (4 * 2 * 2),  # every input element feeds 4 channels × a 2×2 window
        "Gemm": 10 * 4096,
        "MatMul": 6 * 10,
    }
    return model, expected


def test_hand_built_graph_has_the_macs_worked_out_by_hand():
    model, expected = _hand_graph()
    count = count_onnx_macs(model)  # the Reshape target onnx cannot infer is measured by one onnxruntime run
    assert count.total == sum(expected.values())
    assert count.by_precision == {"fp32": count.total}


@pytest.mark.parametrize("rel", SHARED_ONNX)
def test_shared_onnx_models_match_an_onnx_based_count(model_dir, rel):
    path = model_dir / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the model directory")
    ours = count_onnx_macs(path)
    assert ours.total == onnx_reference_macs(onnx.load(str(path)))


@pytest.mark.parametrize("rel, published_macs", [
    ("detection/yolox_nano_416.onnx", 0.54e9),      # YOLOX-Nano: 1.08 GFLOPs at 416 (Megvii README)
    ("face_embedding/mobilefacenet_128d.onnx", 221e6),  # MobileFaceNet paper: 221 M MAdds
])
def test_counts_agree_with_published_figures(model_dir, rel, published_macs):
    path = model_dir / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the model directory")
    assert count_onnx_macs(path).total == pytest.approx(published_macs, rel=0.04)


def test_dynamic_input_needs_and_uses_a_concrete_shape(model_dir):
    path = model_dir / "face_detection/yunet_s_dynamic.onnx"
    if not path.is_file():
        pytest.skip("yunet_s_dynamic not in the model directory")
    with pytest.raises(MacCountError, match="symbolic dim 2"):
        count_onnx_macs(path)
    fixed = count_onnx_macs(model_dir / "face_detection/yunet_s_640x640.onnx").total
    assert count_onnx_macs(path, {"input": (1, 3, 640, 640)}).total == fixed
    assert count_onnx_macs(path, {"input": (1, 3, 480, 640)}).total == fixed * 3 // 4


def test_mobilenet_v2_export_matches_the_coral_tflite_count(tmp_path, model_dir, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ai_edge_litert")
    for var in ("TORCH_HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    from export.onnx.from_torch import export_onnx
    from export.sources.nets.mobilenet_v2 import MobileNetV2

    torch.manual_seed(0)
    path = export_onnx(MobileNetV2(), tmp_path / "mnv2.onnx")
    ours = count_onnx_macs(path)
    assert ours.total == onnx_reference_macs(onnx.load(str(path)))
    coral = model_dir / "classification/mobilenet_v2_1.0_224_quant.tflite"
    if not coral.is_file():
        pytest.skip("coral MobileNetV2 not in the model directory")
    tfl = count_macs(coral)
    assert tfl.source == "tflite-ops" and tfl.precision == "int8"
    # Same architecture; the coral head has 1001 classes (background) against torchvision's 1000.
    assert tfl.total - ours.total == 1280


def _qdq_conv(dtype=TensorProto.FLOAT, quantised=True):
    np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    if quantised:
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]),
                 helper.make_node("Conv", ["xd", "w"], ["y"])]
        inits = [numpy_helper.from_array(np.zeros((4, 3, 1, 1), np.uint8), "wq"),
                 numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(np.array(128, np.uint8), "z")]
    else:
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
        inits = [numpy_helper.from_array(np.zeros((4, 3, 1, 1), np_dtype), "w")]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", dtype, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", dtype, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("model, precision", [
    (_qdq_conv(), "int8"),
    (_qdq_conv(quantised=False), "fp32"),
    (_qdq_conv(TensorProto.FLOAT16, quantised=False), "fp16"),
])
def test_precision_of_the_macs(model, precision):
    count = count_onnx_macs(model)
    assert count.total == 4 * 8 * 8 * 3
    assert count.by_precision == {precision: count.total}


def test_sface_int8bq_weights_only_quantisation_counts_as_fp32(model_dir):
    path = model_dir / "face_embedding/sface_2021dec_int8bq.onnx"
    if not path.is_file():
        pytest.skip("sface int8bq not in the model directory")
    assert count_onnx_macs(path).precision == "fp32"  # activations stay float: float kernels run




def _registry_cards_with_a_file():
    return [c for c in builtin_cards().values() if c.format in ("onnx", "tflite")]


@pytest.mark.parametrize("card", _registry_cards_with_a_file(), ids=lambda c: c.name)
def test_registry_cards_carry_the_counters_figure(model_dir, card):
    """tools/make_builtin_cards.py wrote each figure once; the counter still gives it."""
    if card.format == "tflite":
        pytest.importorskip("ai_edge_litert")
    path = model_dir / card.file
    if not path.is_file():
        pytest.skip(f"{card.file} not in the model directory")
    assert card.macs is not None and card.macs.total > 0
    shapes = None if all(isinstance(d, int) for d in card.inputs[0].shape) else {card.inputs[0].name: card.macs.input_shape}
    again = file_macs(path, shapes)
    assert (again.total, again.by_precision, again.input_shape) == (card.macs.total, card.macs.by_precision,
                                                                    card.macs.input_shape)
