"""MAC counting without the onnx package (edge.bench.onnx_graph/onnx_shapes/roofline), checked against onnx."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper, shape_inference  # noqa: E402

from edge.bench.onnx_graph import parse_graph, read_graph  # noqa: E402
from edge.bench.onnx_shapes import infer_shapes  # noqa: E402
from edge.bench.roofline import (FAR_FROM_BOUND, MacCount, calibrate_peak_gflops, calibrated_compute,  # noqa: E402
                                 count_graph_macs, count_macs, count_onnx_macs, roofline)
from edge.errors import ModelFormatError  # noqa: E402
from edge.profile import ComputeSpec  # noqa: E402

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
    count = count_graph_macs(parse_graph(model.SerializeToString()))
    assert count.by_op == expected
    assert count.total == sum(expected.values())
    assert count.uncounted == ()


def test_shape_propagation_matches_onnx_on_the_hand_graph():
    model, _ = _hand_graph()
    ours = infer_shapes(parse_graph(model.SerializeToString()))
    ref = shape_inference.infer_shapes(model, data_prop=True)
    checked = 0
    for vi in ref.graph.value_info:
        dims = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        if dims and all(dims):
            assert ours[vi.name].shape == dims, vi.name
            checked += 1
    assert checked >= 10
    # onnx's own inference gives up at the Reshape fed by Shape→Gather→Unsqueeze→Concat; ours evaluates it
    assert ours["target"].value.tolist() == [1, -1]
    assert ours["flat"].shape == (1, 4096) and ours["m"].shape == (6, 1)


@pytest.mark.parametrize("rel", SHARED_ONNX)
def test_shared_onnx_models_match_an_onnx_based_count(model_dir, rel):
    path = model_dir / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the model directory")
    ours = count_onnx_macs(path)
    assert ours.uncounted == ()
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
    unresolved = count_onnx_macs(path)
    assert unresolved.total == 0 and unresolved.uncounted
    fixed = count_onnx_macs(model_dir / "face_detection/yunet_s_640x640.onnx").total
    assert count_onnx_macs(path, {"input": (1, 3, 640, 640)}).total == fixed
    assert count_onnx_macs(path, {"input": (1, 3, 480, 640)}).total == fixed * 3 // 4


def test_mobilenet_v2_export_matches_the_coral_tflite_count(tmp_path, model_dir, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ai_edge_litert")
    for var in ("TORCH_HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    from export.nets.mobilenet_v2 import MobileNetV2
    from export.onnx_export import export_onnx

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


def _mobilenet_v1_macs(alpha: float, size: int, classes: int = 1001) -> int:
    """MobileNetV1 MACs worked out from the paper's layer table (conv, 13 separable blocks, 1×1 head)."""
    c = lambda n: int(n * alpha)  # noqa: E731
    s = size // 2
    total = s * s * c(32) * 3 * 9
    cin = c(32)
    for cout, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                         (512, 1), (512, 1), (1024, 2), (1024, 1)):
        s //= stride
        total += s * s * cin * 9 + s * s * cin * c(cout)
        cin = c(cout)
    return total + cin * classes


def test_tflite_count_matches_mobilenet_v1_layer_table(model_dir):
    pytest.importorskip("ai_edge_litert")
    path = model_dir / "classification/mobilenet_v1_0.25_128_quant.tflite"
    if not path.is_file():
        pytest.skip("mobilenet_v1_0.25_128_quant not in the model directory")
    count = count_macs(path)
    assert count.total == _mobilenet_v1_macs(0.25, 128)
    assert count.by_precision == {"int8": count.total}


def test_float_tflite_with_fp16_weights_runs_in_fp32(model_dir):
    pytest.importorskip("ai_edge_litert")
    path = model_dir / "face_detection/blazeface_short_range.tflite"
    if not path.is_file():
        pytest.skip("blazeface not in the model directory")
    count = count_macs(path)
    assert count.total > 0 and count.precision == "fp32"


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
    count = count_graph_macs(parse_graph(model.SerializeToString()))
    assert count.total == 4 * 8 * 8 * 3
    assert count.by_precision == {precision: count.total}


def test_sface_int8bq_weights_only_quantisation_counts_as_fp32(model_dir):
    path = model_dir / "face_embedding/sface_2021dec_int8bq.onnx"
    if not path.is_file():
        pytest.skip("sface int8bq not in the model directory")
    assert count_onnx_macs(path).precision == "fp32"  # activations stay float: float kernels run


@pytest.mark.parametrize("data", [b"", b"\x08\x07", b"not a model at all \xff\xff\xff"])
def test_not_an_onnx_file_raises_a_typed_error(tmp_path, data):
    p = tmp_path / "broken.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelFormatError, match="broken.onnx"):
        read_graph(p)


def test_card_macs_are_the_fallback(tmp_path):
    from edge.cards import Licence, ModelCard, Source

    p = tmp_path / "model.bin"
    p.write_bytes(b"\x00" * 16)
    card = ModelCard(name="m", task="other", format="other", file="model.bin", sha256="0" * 64,
                     licence=Licence("MIT"), source=Source(), extra={"macs": {"int8": 1000, "fp32": 24}})
    count = count_macs(p, card)
    assert (count.total, count.source, count.precision) == (1024, "card", "int8")
    assert count_macs(p, None) is None


COMPUTE = ComputeSpec(peak_gflops_fp32=100.0, peak_gops_int8=400.0)


@pytest.mark.parametrize("macs, threads, latency, bound, efficiency, flagged", [
    (MacCount(10**9, {"fp32": 10**9}), 4, 40.0, 20.0, 0.5, False),         # 2 GFLOP at 100 GFLOP/s
    (MacCount(10**9, {"fp32": 10**9}), 2, 800.0, 40.0, 0.05, False),        # half the cores: half the peak
    (MacCount(10**9, {"fp32": 10**9}), 2, 1000.0, 40.0, 0.04, True),        # below 5 %: flagged
    (MacCount(10**9, {"int8": 10**9}), 8, 10.0, 5.0, 0.5, False),           # threads beyond the cores: all cores
    (MacCount(2 * 10**9, {"int8": 10**9, "fp32": 10**9}), 4, 50.0, 25.0, 0.5, False),  # 5 ms int8 + 20 ms fp32
])
def test_roofline_bound_and_efficiency(macs, threads, latency, bound, efficiency, flagged):
    r = roofline(macs, COMPUTE, latency, threads=threads, cores=4)
    assert r.lower_bound_ms == pytest.approx(bound)
    assert r.efficiency == pytest.approx(efficiency)
    assert r.far_from_bound is flagged
    assert FAR_FROM_BOUND == 0.05


def test_calibration_measures_a_peak_and_scales_the_other_precisions():
    cal = calibrate_peak_gflops(n=256, repeats=3, cores=2)
    assert cal.gflops > 0 and cal.best_s <= cal.median_s and cal.n == 256
    assert cal.gflops_one_thread is not None  # the one-thread child ran
    assert cal.gflops == pytest.approx(max(cal.gflops_all_threads, 2 * cal.gflops_one_thread))
    spec = calibrated_compute(ComputeSpec(peak_gflops_fp32=320.0, peak_gops_int8=1280.0, peak_gflops_fp16=None), cal)
    assert spec.calibrated is True
    assert spec.peak_gflops_fp32 == pytest.approx(cal.gflops)
    assert spec.peak_gops_int8 == pytest.approx(4 * cal.gflops)
    r = roofline(MacCount(10**6, {"fp32": 10**6}), spec, 1.0, threads=None, cores=2)
    assert r.peak_source == "calibrated"
