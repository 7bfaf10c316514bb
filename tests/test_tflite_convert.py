"""TFLite conversion: litert-torch for PyTorch sources, ONNX → torch → litert-torch for ONNX sources,
ai-edge-quantizer for fp16 / dynamic-range int8 / full-integer int8 (int8 and uint8 I/O).

Every artefact is run by ``edge``'s LiteRT engine on real images and compared with its source
(torch or onnxruntime) within the tolerances of :mod:`export.variants`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

from edge.engines import load_engine  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.preprocess import prepare  # noqa: E402
from edge.registry import load_labels, resolve  # noqa: E402
from export.onnx import to_torch as onnx_torch  # noqa: E402
from export.onnx.to_torch import UnsupportedOperatorError, onnx_to_torch  # noqa: E402
from export.tflite.convert import (TFLITE_KEYS, CalibrationStat, TfliteQuantOptions, calibrate_tflite,  # noqa: E402
                                   make_variant, onnx_to_tflite, torch_to_tflite)
from export.tflite.flatbuffer import io_types, list_ops  # noqa: E402
from export.variants import TOL_FP32, ExportStepError, check_agreement  # noqa: E402

#: Clean single-object photos the classifier must get right in every variant (ImageNet-like).
CLASSIFY_SAMPLES = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp", "bird.bmp", "owl.jpg", "hot_dog.jpg",
                    "sunflower.bmp", "dragonfly.bmp")
#: Calibration images: coco128, disjoint from the samples above.
CALIBRATION_IMAGES = 24
#: I/O tensor types per variant.
IO_TYPES = {"tflite_fp32": "FLOAT32", "tflite_fp16": "FLOAT32", "tflite_int8_dynamic": "FLOAT32",
            "tflite_int8": "INT8", "tflite_int8_uint8io": "UINT8"}


def _ort_outputs(path, feeds):
    with load_engine(path, backend="onnxruntime", threads=1) as eng:
        return eng.run({i.name: x for i, x in zip(eng.inputs, feeds.values())})


def _litert_outputs(path, feeds):
    with load_engine(path, backend="litert", threads=1) as eng:
        return eng.run({i.name: x for i, x in zip(eng.inputs, feeds.values())})


@pytest.fixture(scope="module")
def mnv2(tmp_path_factory, samples, data_dir):
    """MobileNetV2 converted once: fp32 + every quantised variant."""
    from export.sources.nets import load_mobilenet_v2

    ref = resolve("mobilenet_v2_torchvision")
    spec = ref.card.inputs[0]
    model = load_mobilenet_v2(ref.path).eval()
    out = tmp_path_factory.mktemp("mnv2")
    fp32 = torch_to_tflite(model, [np.zeros(spec.shape, np.float32)], out / "mnv2_fp32.tflite",
                           input_names=[spec.name], output_names=[ref.card.outputs[0].name])
    calib_paths = sorted((data_dir / "coco128" / "images").glob("*.jpg"))[:CALIBRATION_IMAGES]
    calibration = [{spec.name: prepare(load_image(p), spec)[0]} for p in calib_paths]
    x = {spec.name: prepare(load_image(samples / "cat.bmp"), spec)[0]}
    with torch.no_grad():
        reference = {"logits": model(torch.from_numpy(x[spec.name])).numpy()}
    # Min/max ranges: what edge-export build picks for MobileNetV2 by gate score (its report:
    # min/max 0.954, MSE 0.902, the smoothed min/max 0.704); the smoothed one flips bird.bmp.
    qsvs = calibrate_tflite(fp32, calibration, TfliteQuantOptions(stat=CalibrationStat.MINMAX))
    variants = {}
    for key in TFLITE_KEYS:
        dst = fp32 if key == "tflite_fp32" else out / f"mnv2_{key}.tflite"
        result, agreement = make_variant(key, fp32, dst, check_feeds=x, reference=reference, qsvs=qsvs,
                                         model_name="mobilenet_v2")
        variants[key] = (result, agreement)
    return {"model": model, "card": ref.card, "spec": spec, "variants": variants, "dir": out,
            "calibration": calibration}


def test_fp32_matches_torch_and_onnx_and_sees_a_cat(mnv2, samples, tmp_path):
    from export.sources.classifier import export_mobilenet_v2_onnx

    spec, path = mnv2["spec"], mnv2["variants"]["tflite_fp32"][0].path
    onnx_path, _ = export_mobilenet_v2_onnx(tmp_path)
    labels = load_labels(mnv2["card"])
    for name in CLASSIFY_SAMPLES[:3]:
        x = {spec.name: prepare(load_image(samples / name), spec)[0]}
        with torch.no_grad():
            ref = {"logits": mnv2["model"](torch.from_numpy(x[spec.name])).numpy()}
        lite = _litert_outputs(path, x)
        assert list(lite) == ["logits"], "the TFLite output keeps the source's name"
        assert check_agreement(ref, lite, TOL_FP32).passed
        assert check_agreement(_ort_outputs(onnx_path, x), lite, TOL_FP32).passed
        if name == "cat.bmp":
            assert "cat" in labels[int(lite["logits"].argmax())].lower()


@pytest.mark.parametrize("key", TFLITE_KEYS)
def test_variant_io_types_and_sizes(mnv2, key):
    result, agreement = mnv2["variants"][key]
    ins, outs = io_types(result.path)
    assert ins == [IO_TYPES[key]] and outs == [IO_TYPES[key]]
    assert agreement.passed
    fp32_size = mnv2["variants"]["tflite_fp32"][0].size
    max_ratio = {"tflite_fp32": 1.0, "tflite_fp16": 0.55}.get(key, 0.32)
    assert result.size <= fp32_size * max_ratio


@pytest.mark.parametrize("key", TFLITE_KEYS[1:])
def test_quantised_variants_agree_on_top1_for_samples(mnv2, samples, key):
    spec = mnv2["spec"]
    fp32, variant = mnv2["variants"]["tflite_fp32"][0].path, mnv2["variants"][key][0].path
    for name in CLASSIFY_SAMPLES:
        x = {spec.name: prepare(load_image(samples / name), spec)[0]}
        a, b = _litert_outputs(fp32, x)["logits"], _litert_outputs(variant, x)["logits"]
        assert int(a.argmax()) == int(b.argmax()), f"{key} disagrees with fp32 on {name}"


def test_full_integer_variant_is_integer_inside(mnv2):
    ops = list_ops(mnv2["variants"]["tflite_int8"][0].path)
    convs = [o for o in ops if o.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert convs and all(o.quantized for o in convs)


@pytest.mark.parametrize("registry_name, image", [("yunet_s_640x640", "group_t1.jpg")])
def test_onnx_to_tflite_matches_onnx_on_a_real_image(tmp_path, samples, registry_name, image):
    ref = resolve(registry_name)
    spec = ref.card.inputs[0]
    x = {spec.name: prepare(load_image(samples / image), spec)[0]}
    path = onnx_to_tflite(ref.path, tmp_path / f"{registry_name}.tflite")
    lite = _litert_outputs(path, x)
    onnx = _ort_outputs(ref.path, x)
    assert list(lite) == list(onnx), "output names and order follow the ONNX graph"
    agreement = check_agreement(onnx, lite, TOL_FP32)
    assert agreement.passed, agreement


@pytest.mark.slow
def test_yolox_onnx_to_tflite_matches_onnx(tmp_path, samples):
    ref = resolve("yolox_nano_416")
    spec = ref.card.inputs[0]
    x = {spec.name: prepare(load_image(samples / "bus.jpg"), spec)[0]}
    path = onnx_to_tflite(ref.path, tmp_path / "yolox.tflite")
    assert check_agreement(_ort_outputs(ref.path, x), _litert_outputs(path, x), TOL_FP32).passed


def test_torch_step_of_every_onnx_source_matches_onnxruntime(model_dir, tmp_path):
    """The ONNX → torch step alone (fast): exact enough for every shared ONNX model."""
    for name in ("yolox_nano_416", "yunet_s_640x640", "mobilefacenet_128d", "sface_2021dec_fp32"):
        ref = resolve(name)
        module = onnx_to_torch(ref.path)
        shape = [d if isinstance(d, int) else 1 for d in ref.card.inputs[0].shape]
        x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
        with torch.no_grad():
            got = module(torch.from_numpy(x))
        got = got if isinstance(got, tuple) else (got,)
        want = _ort_outputs(_stripped(ref.path, tmp_path / f"{name}.onnx"), {"x": x})
        assert check_agreement(want, {str(i): g.numpy() for i, g in enumerate(got)}, TOL_FP32).passed, name


def _stripped(path: Path, out: Path) -> Path:
    """SFace lists unused weights as graph inputs, which onnxruntime then demands: drop them."""
    import onnx

    from export.onnx.to_torch import load_onnx_model

    onnx.save(load_onnx_model(path), str(out))
    return out


def test_a_converter_that_succeeds_with_a_broken_model_is_caught(tmp_path, samples, monkeypatch):
    """Inject a converter bug (Sigmoid lowered as ReLU): the file is written and runs, the check refuses it."""
    ref = resolve("yunet_s_640x640")
    spec = ref.card.inputs[0]
    x = {spec.name: prepare(load_image(samples / "group_t1.jpg"), spec)[0]}
    monkeypatch.setitem(onnx_torch.OPS, "Sigmoid", lambda ctx: torch.relu(ctx.t(0)))
    broken = onnx_to_tflite(ref.path, tmp_path / "broken.tflite")
    with pytest.raises(ExportStepError, match="disagrees with its source"):
        make_variant("tflite_fp32", broken, broken, check_feeds=x, reference=_ort_outputs(ref.path, x),
                     model_name="yunet")


def test_unsupported_operator_names_model_step_and_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik", name="the_einsum")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2]),
                                            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    path = tmp_path / "custom_model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedOperatorError, match=r"custom_model: ONNX→PyTorch step: .*Einsum.*the_einsum"):
        onnx_to_tflite(path, tmp_path / "x.tflite")
    assert not (tmp_path / "x.tflite").exists()


@pytest.mark.parametrize("stat", list(CalibrationStat))
def test_every_range_statistic_gives_a_working_int8_model(mnv2, samples, tmp_path, stat):
    from export.tflite.convert import quantize_tflite

    fp32 = mnv2["variants"]["tflite_fp32"][0].path
    qsvs = calibrate_tflite(fp32, mnv2["calibration"], TfliteQuantOptions(stat=stat))
    path = quantize_tflite(fp32, tmp_path / f"m_{stat.value}.tflite", "tflite_int8", qsvs=qsvs)
    x = {"input": prepare(load_image(samples / "cat.bmp"), mnv2["spec"])[0]}
    ag = check_agreement(_litert_outputs(fp32, x), _litert_outputs(path, x), mnv2["variants"]["tflite_int8"][0].target.tolerance)
    assert ag.cosine > 0.97, (stat, ag)


def test_keep_float_leaves_the_named_layers_in_float(mnv2, tmp_path):
    from export.tflite.convert import quantize_tflite

    fp32 = mnv2["variants"]["tflite_fp32"][0].path
    ops = list_ops(fp32)
    convs = [o.output for o in ops if o.op == "CONV_2D"][:2]
    qsvs = calibrate_tflite(fp32, mnv2["calibration"][:4])
    path = quantize_tflite(fp32, tmp_path / "keep.tflite", "tflite_int8", qsvs=qsvs,
                           options=TfliteQuantOptions(keep_float=tuple(convs)))
    kept = {o.output: o.quantized for o in list_ops(path)}
    assert all(kept[name] is False for name in convs)
    assert sum(1 for q in kept.values() if q) > len(ops) // 2


def test_empty_calibration_is_a_clear_error(mnv2, tmp_path):
    from export.tflite.convert import quantize_tflite

    with pytest.raises(ExportStepError, match="calibration.*empty"):
        quantize_tflite(mnv2["variants"]["tflite_fp32"][0].path, tmp_path / "x.tflite", "tflite_int8",
                        calibration=[], model_name="mobilenet_v2")
    with pytest.raises(ValueError, match="needs calibration"):
        quantize_tflite(mnv2["variants"]["tflite_fp32"][0].path, tmp_path / "x.tflite", "tflite_int8")
    assert not (tmp_path / "x.tflite").exists()



@pytest.mark.parametrize("needed, rounds, accepted", [
    ({"a"}, 1, True),                 # the worst layer alone fixes it
    ({"a", "c"}, 2, True),            # 1, then 1 + 2 layers
    ({"b"}, 2, True),                 # b only becomes worst once a is float (re-ranking)
    ({"zz"}, 3, False),               # never fixable: stops at the float-fraction limit (4 of 16)
])
def test_fallback_search_re_ranks_and_stops(tmp_path, needed, rounds, accepted):
    """The search both int8 paths share (export.quant.float_search), with the TFLite ranker's filter."""
    from export.quant.float_search import grow_float_set
    from export.tflite.fallback import LayerError

    def rank(path, kept):  # "b" hides behind "a": its error only shows once "a" is float
        kept = set(path.stem.split("-")[1:]) if "-" in path.stem else set()
        order = ["a", "c", "d", "e", "f", "g", "h"] if "a" not in kept else ["b", "c", "d", "e", "f", "g", "h"]
        return [r.output for r in (LayerError(i, "CONV_2D", n, 0.5, 0.5 - i / 100) for i, n in enumerate(order))
                if r.added > 0]

    def quantize(keep, _round):
        p = tmp_path / ("m-" + "-".join(keep) + ".tflite")
        p.write_bytes(b"x")
        return p

    def accept(path):
        return needed <= set(path.stem.split("-")[1:]), None

    steps = grow_float_set(rank, quantize, accept, first=tmp_path / "m.tflite", total=16, max_fraction=0.25)
    assert len(steps) == rounds
    assert steps[-1].accepted is accepted
    assert all(len(s.keep_float) <= 4 for s in steps)


def test_float_search_takes_groups_whole_and_stops_at_the_limit():
    """A layer's group (the ONNX fallback's island of element-wise feeders) goes float whole or
    not at all; the seed counts towards the limit."""
    from export.quant.float_search import grow_float_set

    groups = {"c1": ["c1", "add1", "mul1"], "c2": ["c2"], "c3": ["c3", "x", "y", "z"]}
    made = []

    def quantize(keep, rnd):
        made.append((rnd, keep))
        return keep

    steps = grow_float_set(lambda cur, kept: ["c1", "c2", "c3"], quantize, lambda v: (False, None), first=(),
                           total=20, max_fraction=0.4, seed=("s",), group=lambda n, kept: groups[n])
    assert made[0] == (1, ("s", "c1", "add1", "mul1"))  # first step 1: one group, whole
    assert made[1] == (2, ("s", "c1", "add1", "mul1", "c2"))  # c3's four would pass the limit of 8
    assert len(steps) == 2 and not steps[-1].accepted
