"""ONNX preparation, int8/fp16 variants, calibration data and the export table (export/)."""

from __future__ import annotations

import json
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edge.engines import load_engine  # noqa: E402
from export.onnx.prep import PrepOptions, default_opset, prepare_onnx  # noqa: E402
from export.quant.calibration import (CalibrationError, FeedReader, ImageFolderReader, calibration_hash,  # noqa: E402
                                      list_images, split_files)
from export.quant.quantize import CalibrationMethod, QuantOptions, QuantType, convert_onnx_fp16, quantize_onnx_int8  # noqa: E402
from export.variants import (ExportStepError, Format, Precision, check_agreement, export_formats,  # noqa: E402
                             export_step, get_target, target_for_file)
from tests._tiny_onnx import conv_net, save, tiny_card  # noqa: E402

CALIBRATION_IMAGES = 8


@pytest.fixture(scope="module")
def coco_images(data_dir) -> list[Path]:
    return list_images(data_dir / "coco128" / "images")


@pytest.fixture(scope="module")
def tiny_reader(coco_images) -> ImageFolderReader:
    return ImageFolderReader(coco_images[:CALIBRATION_IMAGES], tiny_card().inputs[0])


def _run(path, feeds) -> dict:
    with load_engine(path, threads=1) as eng:
        return eng.run({i.name: v for i, v in zip(eng.inputs, feeds.values())})


# -- the export table -------------------------------------------------------------------------

def test_export_table_has_every_target_once():
    keys = [t.key for t in export_formats()]
    assert len(keys) == len(set(keys))
    assert {(t.format, t.precision) for t in export_formats()} == {
        (Format.ONNX, Precision.FP32), (Format.ONNX, Precision.FP16), (Format.ONNX, Precision.INT8),
        (Format.TFLITE, Precision.FP32), (Format.TFLITE, Precision.FP16), (Format.TFLITE, Precision.INT8)}
    assert {t.io_dtype for t in export_formats() if t.key.startswith("tflite_int8")} >= {"int8", "uint8"}
    assert target_for_file("m_int8_uint8io.tflite").key == "tflite_int8_uint8io"  # longest suffix wins
    assert target_for_file("m_int8.onnx").key == "onnx_int8"


@pytest.mark.parametrize("key, expectation", [
    ("onnx_int8", does_not_raise()),
    ("onnx_int4", pytest.raises(ValueError, match="valid: onnx_fp32")),
])
def test_get_target(key, expectation):
    with expectation:
        assert get_target(key).key == key


def test_check_agreement_reports_the_worst_output():
    ref = {"a": np.ones(10), "b": np.arange(10.0)}
    ok = check_agreement(ref, {"x": np.ones(10), "y": np.arange(10.0)}, get_target("onnx_fp32").tolerance)
    bad = check_agreement(ref, {"x": np.ones(10), "y": -np.arange(10.0)}, get_target("onnx_fp32").tolerance)
    assert ok.passed and not bad.passed and bad.output == "b" and bad.cosine < 0


def test_export_step_refuses_nan_output_and_names_the_step(tmp_path, tiny_reader):
    src = save(conv_net(), tmp_path / "m.onnx")
    m = conv_net()
    m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.full((8, 3, 3, 3), np.nan, np.float32), "w1"))
    broken = save(m, tmp_path / "broken.onnx")

    @export_step("onnx_fp16")
    def fake_convert(s, d):
        return broken

    with pytest.raises(ExportStepError, match=r"m: onnx_fp16: output 'logits' has \d+ NaN"):
        fake_convert(src, tmp_path / "out.onnx", check_feeds=tiny_reader.feeds(0))

    @export_step("onnx_int8")
    def crashing(s, d):
        raise RuntimeError("converter exploded")

    with pytest.raises(ExportStepError, match="m: onnx_int8: RuntimeError: converter exploded"):
        crashing(src, tmp_path / "out.onnx", check_feeds=tiny_reader.feeds(0))


# -- options --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, expectation", [
    ({}, does_not_raise()),
    ({"calibration": "percentile", "percentile": 99.9}, does_not_raise()),
    ({"calibration": CalibrationMethod.MINMAX, "percentile": 99.9}, pytest.raises(ValueError, match="PERCENTILE")),
    ({"calibration": CalibrationMethod.PERCENTILE, "percentile": 0.0}, pytest.raises(ValueError, match=r"\(0, 100\]")),
    ({"calibration": CalibrationMethod.PERCENTILE, "percentile": 150}, pytest.raises(ValueError, match=r"\(0, 100\]")),
    ({"activation_type": QuantType.INT8, "weight_type": QuantType.UINT8},
     pytest.raises(ValueError, match="int8 activations with uint8 weights")),
    ({"activation_type": "uint8", "weight_type": "uint8"}, does_not_raise()),
    ({"calibration": "kl"}, pytest.raises(ValueError, match="minmax, entropy, percentile")),
    ({"op_types": ()}, pytest.raises(ValueError, match="empty")),
    ({"op_types": "Conv"}, pytest.raises(ValueError, match="not a string")),
    ({"op_types": ("Conv", "Frobnicate")}, pytest.raises(ValueError, match="cannot quantise Frobnicate")),
    ({"nodes_to_exclude": "conv1"}, pytest.raises(ValueError, match="not a string")),
])
def test_quant_options_validation(kwargs, expectation):
    with expectation:
        opts = QuantOptions(**kwargs)
        assert isinstance(opts.calibration, CalibrationMethod)


# -- preparation ----------------------------------------------------------------------------

def test_prepare_upgrades_opset_and_keeps_the_output(tmp_path, tiny_reader):
    src = save(conv_net(opset=11), tmp_path / "m11.onnx")
    res = prepare_onnx(src, tmp_path / "m.onnx", check_feeds=tiny_reader.feeds(0))
    assert (res.opset_in, res.opset_out) == (11, 13)
    assert default_opset(onnx.load(str(res.path))) == 13
    assert all(n.name for n in onnx.load(str(res.path)).graph.node)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-5


def test_prepare_strips_weights_listed_as_inputs(tmp_path, tiny_reader):
    src = save(conv_net(weights_as_inputs=True), tmp_path / "m.onnx")
    res = prepare_onnx(src, tmp_path / "out.onnx", check_feeds=tiny_reader.feeds(0))
    assert set(res.dropped_inputs) == {"w1", "b1", "w2", "b2"}
    assert [i.name for i in onnx.load(str(res.path)).graph.input] == ["input"]


def test_prepare_refuses_weights_without_values(tmp_path):
    src = save(conv_net(weights_as_inputs=True, drop_inits=True), tmp_path / "noweights.onnx")
    with pytest.raises(ExportStepError, match=r"noweights: onnx_prep: 4 weight\(s\) are graph inputs without values"):
        prepare_onnx(src, tmp_path / "out.onnx")


def test_prepare_refuses_a_file_that_is_not_onnx(tmp_path):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x08\x07not a model at all" * 10)
    with pytest.raises(ExportStepError, match="junk: onnx_prep"):
        prepare_onnx(bad, tmp_path / "out.onnx")


def test_prelu_rewrite_is_output_identical(tmp_path, tiny_reader):
    src = save(conv_net(prelu=True), tmp_path / "p.onnx")
    res = prepare_onnx(src, tmp_path / "out.onnx", PrepOptions(rewrite_prelu=True), check_feeds=tiny_reader.feeds(0))
    ops = {n.op_type for n in onnx.load(str(res.path)).graph.node}
    assert "PRelu" not in ops and {"Min", "Mul", "Add"} <= ops
    assert res.rewrites[0].name == "prelu" and res.rewrites[0].nodes == 1
    for k in range(4):
        a, b = _run(src, tiny_reader.feeds(k)), _run(res.path, tiny_reader.feeds(k))
        np.testing.assert_allclose(b["logits"], a["logits"], rtol=0, atol=1e-5)


# -- int8 and fp16 ----------------------------------------------------------------------------

def test_int8_qdq_per_channel_runs_and_agrees(tmp_path, tiny_reader):
    src = save(conv_net(), tmp_path / "m.onnx")
    out = quantize_onnx_int8(src, tmp_path / "m_int8.onnx", tiny_reader, QuantOptions())
    m = onnx.load(str(out))
    dq_axes = [a.i for n in m.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
    assert dq_axes, "per-channel weights need DequantizeLinear with an axis"
    for k in range(3):
        ag = check_agreement(_run(src, tiny_reader.feeds(k)), _run(out, tiny_reader.feeds(k)),
                             get_target("onnx_int8").tolerance)
        assert ag.passed and ag.cosine > 0.99, ag


def test_int8_per_channel_on_opset_11_is_refused(tmp_path, tiny_reader):
    src = save(conv_net(opset=11), tmp_path / "m11.onnx")
    with pytest.raises(ValueError, match="opset >= 13.*prepare_onnx"):
        quantize_onnx_int8(src, tmp_path / "q.onnx", tiny_reader, QuantOptions(per_channel=True))


def test_int8_refuses_unknown_excluded_nodes_and_quantised_models(tmp_path, tiny_reader):
    src = save(conv_net(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="does not have: nope"):
        quantize_onnx_int8(src, tmp_path / "q.onnx", tiny_reader, QuantOptions(nodes_to_exclude=("nope",)))
    q = quantize_onnx_int8(src, tmp_path / "q.onnx", tiny_reader, QuantOptions(bias_correction=False))
    with pytest.raises(ValueError, match="already quantised"):
        quantize_onnx_int8(q, tmp_path / "qq.onnx", tiny_reader, QuantOptions())
    with pytest.raises(ValueError, match="needs a calibration reader"):
        quantize_onnx_int8(src, tmp_path / "q2.onnx", None, QuantOptions())


def test_excluded_node_keeps_float_weights(tmp_path, tiny_reader):
    src = save(conv_net(), tmp_path / "m.onnx")
    out = quantize_onnx_int8(src, tmp_path / "q.onnx", tiny_reader, QuantOptions(nodes_to_exclude=("conv2",)))
    m = onnx.load(str(out))
    prod = {o: n for n in m.graph.node for o in n.output}
    nodes = {n.name: n for n in m.graph.node}
    w_of = lambda name: prod.get(nodes[name].input[1])  # noqa: E731
    assert w_of("conv1") is not None and w_of("conv1").op_type == "DequantizeLinear"
    assert w_of("conv2") is None, "conv2's weight must stay a float initialiser"


def test_calibration_methods_give_different_ranges(tmp_path, tiny_reader):
    """ENTROPY must not silently be MinMax (onnxruntime's 128-bin default is)."""
    src = save(conv_net(), tmp_path / "m.onnx")
    ranges = {}

    def value(v):
        return float(np.ravel(v["data"] if isinstance(v, dict) else v)[0])

    for m in (CalibrationMethod.MINMAX, CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE):
        cache = tmp_path / f"{m.value}.json"
        quantize_onnx_int8(src, tmp_path / f"{m.value}.onnx", tiny_reader,
                           QuantOptions(calibration=m, bias_correction=False), calibration_cache=cache)
        data = json.loads(cache.read_text())["data"]
        ranges[m] = {t: (value(d["lowest"]), value(d["highest"])) for t, d in data.items()}
    assert ranges[CalibrationMethod.ENTROPY] != ranges[CalibrationMethod.MINMAX]
    assert ranges[CalibrationMethod.PERCENTILE]["h1"][1] < ranges[CalibrationMethod.MINMAX]["h1"][1]


def test_fp16_conversion(tmp_path, tiny_reader):
    src = save(conv_net(), tmp_path / "m.onnx")

    @export_step("onnx_fp16")
    def to_fp16(s, d):
        return convert_onnx_fp16(s, d)

    res = to_fp16(src, tmp_path / "m_fp16.onnx", check_feeds=tiny_reader.feeds(0))
    m = onnx.load(str(res.path))
    assert {t.data_type for t in m.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert check_agreement(_run(src, tiny_reader.feeds(0)), res.outputs, res.target.tolerance).passed


# -- calibration data ---------------------------------------------------------------------------

def test_empty_or_missing_calibration_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(CalibrationError, match="yolox: calibration: calibration folder .* holds no image"):
        list_images(tmp_path / "empty", "yolox")
    with pytest.raises(CalibrationError, match="not found"):
        list_images(tmp_path / "missing", "yolox")
    with pytest.raises(CalibrationError, match="empty"):
        FeedReader.from_feeds([], model_name="yolox")


def test_unreadable_and_wrong_sized_images_are_named(tmp_path, coco_images):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"garbage" * 20)
    r = ImageFolderReader([coco_images[0], bad], tiny_card().inputs[0], model_name="tiny")
    assert r.get_next() is not None
    with pytest.raises(CalibrationError, match="tiny: calibration: cannot read calibration image .*broken.jpg"):
        r.get_next()
    import dataclasses

    spec = dataclasses.replace(tiny_card().inputs[0], resize="none")
    with pytest.raises(CalibrationError, match=r"is \d+×\d+, the model takes 32×32"):
        ImageFolderReader([coco_images[0]], spec, model_name="tiny").get_next()


def test_reader_rewinds_and_counts(tiny_reader):
    tiny_reader.rewind()
    first = [tiny_reader.get_next() for _ in range(len(tiny_reader))]
    assert tiny_reader.get_next() is None
    tiny_reader.rewind()
    np.testing.assert_array_equal(tiny_reader.get_next()["input"], first[0]["input"])
    assert first[0]["input"].shape == (1, 3, 32, 32) and 0.0 <= first[0]["input"].min() <= first[0]["input"].max() <= 1.0


def test_split_is_deterministic_disjoint_and_stable(coco_images, tmp_path):
    a = split_files(coco_images)
    b = split_files(list(reversed(coco_images)))
    assert a == b
    assert not set(a.calibration) & set(a.evaluation)
    assert len(a.calibration) + len(a.evaluation) == len(coco_images)
    assert 0.3 < len(a.calibration) / len(coco_images) < 0.7
    extra = tmp_path / "zzz_new.jpg"
    c = split_files(coco_images + [extra])  # adding a file never moves another
    assert set(a.calibration) <= set(c.calibration) and set(a.evaluation) <= set(c.evaluation)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_files(coco_images, 1.0)


def test_calibration_hash_covers_names_and_bytes(tmp_path, coco_images):
    files = []
    for p in coco_images[:3]:
        q = tmp_path / p.name
        q.write_bytes(p.read_bytes())
        files.append(q)
    h = calibration_hash(files)
    assert h == calibration_hash(list(reversed(files))) and len(h) == 64
    data = bytearray(files[1].read_bytes())
    data[-1] ^= 0x01
    files[1].write_bytes(bytes(data))
    assert calibration_hash(files) != h
    assert calibration_hash(files[:2]) != calibration_hash(files)


# -- a real model -------------------------------------------------------------------------------

@pytest.mark.slow
def test_yolox_prepared_then_quantised_per_channel(tmp_path, model_dir, data_dir):
    """yolox_nano_416 is opset 11 (MANIFEST): prepared to 13, per-channel QDQ loads and runs."""
    from edge.registry import resolve
    from export.gates.roles import calibration_reader

    ref = resolve("yolox_nano_416")
    reader = calibration_reader("detector", ref.card, data_dir, max_images=4)
    prep = prepare_onnx(ref.path, tmp_path / "y.onnx", check_feeds=reader.feeds(0))
    assert (prep.opset_in, prep.opset_out) == (11, 13)
    out = quantize_onnx_int8(prep.path, tmp_path / "y_int8.onnx", reader,
                             QuantOptions(calibration=CalibrationMethod.PERCENTILE))
    ag = check_agreement(_run(prep.path, reader.feeds(1)), _run(out, reader.feeds(1)), get_target("onnx_int8").tolerance)
    # All-int8 YOLOX-Nano is a degraded model (mAP 0.34 -> 0.22, see benchmarks/README.md): this
    # checks the opset path and that the numbers are still the model's, not noise.
    assert ag.cosine > 0.8, ag
    assert out.stat().st_size < 0.5 * prep.path.stat().st_size


# -- bias correction (on by default; tested here on its own) -------------------------------------

def test_bias_correction_removes_the_mean_shift_of_rounded_weights(tmp_path, tiny_reader, coco_images):
    src = save(conv_net(seed=3), tmp_path / "m.onnx")
    held_out = ImageFolderReader(coco_images[CALIBRATION_IMAGES:CALIBRATION_IMAGES + 16], tiny_card().inputs[0])
    ref = np.stack([_run(src, f)["logits"][0] for f in held_out])
    shift = {}
    for bc in (False, True):
        # 7-bit per-tensor weights: coarse rounding, so the mean shift is large enough to see.
        opts = QuantOptions(per_channel=False, reduce_range=True, bias_correction=bc)
        q = quantize_onnx_int8(src, tmp_path / f"q_{bc}.onnx", tiny_reader, opts)
        got = np.stack([_run(q, f)["logits"][0] for f in held_out])
        shift[bc] = float(np.abs((got - ref).mean(axis=0)).mean())  # mean error per class, on unseen images
    assert shift[True] < 0.7 * shift[False], shift
