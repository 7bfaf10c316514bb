"""Roofline on the device: MACs from the card (export time), a TFLite file, or the bare-ONNX fallback.

The export-time counter itself is checked in tests/test_macs.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.bench.onnx_macs import count_stated_onnx_macs
from edge.bench.roofline import (FAR_FROM_BOUND, MacCount, calibrate_peak_gflops, calibrated_compute, card_macs,
                                 count_macs, roofline)
from edge.errors import ModelFormatError
from edge.profile import ComputeSpec
from edge.registry import get_card


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
    assert count.source == "tflite-ops"
    assert count.total == _mobilenet_v1_macs(0.25, 128)
    assert count.by_precision == {"int8": count.total}


def test_float_tflite_with_fp16_weights_runs_in_fp32(model_dir):
    pytest.importorskip("ai_edge_litert")
    path = model_dir / "face_detection/blazeface_short_range.tflite"
    if not path.is_file():
        pytest.skip("blazeface not in the model directory")
    count = count_macs(path)
    assert count.total > 0 and count.precision == "fp32"




def test_registry_onnx_models_take_their_macs_from_the_card(model_dir):
    card = get_card("yolox_nano_416")
    count = count_macs(model_dir / card.file, card)
    assert (count.total, count.source, count.precision) == (card.macs.total, "card", "fp32")
    assert count.total == pytest.approx(0.54e9, rel=0.04)  # YOLOX-Nano: 1.08 GFLOPs at 416 (Megvii README)


def test_dynamic_input_scales_the_card_count_by_pixels(model_dir):
    card = get_card("yunet_s_dynamic")
    fixed = get_card("yunet_s_640x640").macs.total
    path = model_dir / card.file
    assert count_macs(path, card, {"input": (1, 3, 640, 640)}).total == fixed
    at_480 = count_macs(path, card, {"input": (1, 3, 480, 640)})
    assert at_480.total == fixed * 3 // 4 and at_480.source == "card-scaled"


def _tiny_onnx(tmp_path, *, state_shapes: bool):
    """Conv → Relu → Gemm with the shapes stated in value_info or not."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Flatten", ["r0"], ["f0"]),
             helper.make_node("Gemm", ["f0", "w1"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w0"),
             numpy_helper.from_array(np.zeros((10, 8 * 16 * 16), np.float32), "w1")]
    vi = [helper.make_tensor_value_info("c0", TensorProto.FLOAT, ["n", 8, 16, 16])] if state_shapes else []
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits, value_info=vi)
    p = tmp_path / f"tiny_{state_shapes}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(p))
    return p


def test_bare_onnx_fallback_counts_what_the_file_states_and_lists_the_rest(tmp_path):
    conv, gemm = 8 * 16 * 16 * 27, 10 * 8 * 16 * 16
    stated = count_stated_onnx_macs(_tiny_onnx(tmp_path, state_shapes=True))
    assert stated.by_op == {"Conv": conv, "Gemm": gemm} and stated.uncounted == ()
    bare = count_macs(_tiny_onnx(tmp_path, state_shapes=False), None)
    assert bare.source == "onnx-stated-shapes"
    assert bare.by_op == {"Gemm": gemm} and bare.uncounted == ("Conv:c0",)  # a lower bound, never a guess


@pytest.mark.parametrize("data", [b"", b"\x08\x07", b"not a model at all \xff\xff\xff"])
def test_not_an_onnx_file_raises_a_typed_error(tmp_path, data):
    p = tmp_path / "broken.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelFormatError, match="broken.onnx"):
        count_stated_onnx_macs(p)


def test_card_macs_come_first(tmp_path):
    from edge.cards import Licence, ModelCard, Source

    p = tmp_path / "model.bin"
    p.write_bytes(b"\x00" * 16)
    card = ModelCard(name="m", task="other", format="other", file="model.bin", sha256="0" * 64,
                     licence=Licence("MIT"), source=Source(),
                     macs={"total": 1024, "by_precision": {"int8": 1000, "fp32": 24}, "input_shape": [1, 3, 8, 8]})
    count = count_macs(p, card)
    assert (count.total, count.source, count.precision) == (1024, "card", "int8")
    assert card_macs(card) == count
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
