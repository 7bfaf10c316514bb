"""Accuracy gates and the mixed-precision fallback (export/gates/, export/quant/fallback.py)."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from export.gates.base import Gate, GateLimits  # noqa: E402
from export.gates.classifier import ClassifierGate  # noqa: E402
from export.gates.face_detector import match_faces  # noqa: E402
from export.gates.factory import make_gate  # noqa: E402
from export.gates.roles import Role, RoleData, calibration_reader, role_data  # noqa: E402
from export.onnx.prep import prepare_onnx  # noqa: E402
from export.quant.calibration import ImageFolderReader, list_images, split_files  # noqa: E402
from export.quant.fallback import FallbackOptions, quantize_with_fallback, rank_nodes  # noqa: E402
from export.quant.quantize import CalibrationMethod, QuantOptions, convert_onnx_fp16, quantize_onnx_int8  # noqa: E402
from tests._tiny_onnx import HOSTILE_NODE, colour_net, hostile_net, save, tiny_card  # noqa: E402


def _subset(role: Role, data_dir, n_cal: int, n_eval: int) -> RoleData:
    d = role_data(role, data_dir)
    return RoleData(role, d.calibration[:n_cal], d.evaluation[:n_eval], f"test subset of: {d.note}",
                    selection=d.selection[:n_eval], labelled=d.labelled)


@pytest.fixture(scope="module")
def coco(data_dir):
    return split_files(list_images(data_dir / "coco128" / "images"))


# -- limits ---------------------------------------------------------------------------------

def test_limits_come_from_the_profile():
    from edge.profile import load_profile, profiles_dir

    p = load_profile(profiles_dir() / "rpi5.toml")
    lim = GateLimits.from_profile(p)
    assert lim.max_map_drop == p.thresholds.max_map_drop
    assert lim.min_top1_agreement == p.thresholds.min_top1_agreement
    assert lim.target_far == p.thresholds.target_far
    assert lim.liveness_threshold == p.thresholds.liveness
    assert lim.max_auc_drop == p.thresholds.max_auc_drop


@pytest.mark.parametrize("ref, got, expected", [
    ([[0, 0, 10, 10]], [[0, 0, 10, 10]], [1.0]),
    ([[0, 0, 10, 10]], [[20, 20, 30, 30]], [0.0]),
    ([[0, 0, 10, 10], [20, 20, 30, 30]], [[21, 21, 30, 30]], [0.0, 0.81]),
    ([[0, 0, 10, 10]], [], [0.0]),
    ([[0, 0, 10, 10], [1, 1, 11, 11]], [[0, 0, 10, 10]], [1.0, 0.0]),  # one-to-one: no double match
])
def test_match_faces(ref, got, expected):
    np.testing.assert_allclose(match_faces(np.array(ref, float).reshape(-1, 4), np.array(got, float).reshape(-1, 4)),
                               expected, atol=1e-6)


# -- the classifier gate on a tiny model and real images ------------------------------------------

def test_classifier_gate_passes_float_and_catches_a_zeroed_variant(tmp_path, data_dir):
    card = tiny_card()
    src = save(colour_net(), tmp_path / "colour_fp32.onnx")
    broken = save(colour_net(zero_weights=True), tmp_path / "colour_int8.onnx")
    gate = ClassifierGate(src, card, GateLimits(), data=_subset(Role.CLASSIFIER, data_dir, 0, 40))
    ref = gate.float_result()
    assert ref.passed and ref.metrics["top1_agreement"] == 1.0
    assert len(set(gate.reference["scores"].argmax(1))) >= 2, "the test model must not answer one class"
    fp16 = gate.evaluate(convert_onnx_fp16(src, tmp_path / "colour_fp16.onnx"))
    assert fp16.passed, fp16.failures
    res = gate.evaluate(broken)
    assert not res.passed
    assert res.metrics["top1_agreement"] == 0.0
    assert any("top-1 agreement" in f for f in res.failures)
    assert any("outside the onnx_int8 tolerance" in f for f in res.failures)


def test_gate_names_the_model_when_a_variant_cannot_run(tmp_path, data_dir):
    from export.variants import ExportStepError

    gate = ClassifierGate(save(colour_net(), tmp_path / "c.onnx"), tiny_card(), data=_subset(Role.CLASSIFIER, data_dir, 0, 3))
    junk = tmp_path / "junk_int8.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ExportStepError, match="tiny: gate: junk_int8.onnx could not be evaluated"):
        gate.evaluate(junk)


@pytest.mark.parametrize("role, expectation", [
    ("classifier", does_not_raise()), ("detector", does_not_raise()), ("face_detector", does_not_raise()),
    ("face_embedder", does_not_raise()), ("liveness", does_not_raise()),
    ("segmenter", pytest.raises(ValueError)),
])
def test_every_role_has_a_gate_and_disjoint_data(role, expectation, data_dir, tmp_path):
    with expectation:
        g = make_gate(role, tmp_path / "m.onnx", tiny_card(), data_dir=data_dir)
        assert isinstance(g, Gate)
        assert g.data.calibration and g.data.evaluation
        assert not set(g.data.calibration) & set(g.data.evaluation)


# -- the fallback ---------------------------------------------------------------------------------

class VariationGate(Gate):
    """Test gate: error of the logits relative to how much the float logits vary across images.

    (A plain cosine is fooled by a variant answering the dataset's mean logits for every image:
    bias correction alone gives the hostile net exactly that.)
    """

    role = Role.CLASSIFIER
    MAX_RELATIVE_ERROR = 0.1

    def _measure(self, path, card, backend):
        from edge.engines import load_engine
        from edge.imageio import load_image
        from edge.preprocess import prepare

        with load_engine(path, threads=1) as eng:
            outs = [eng.run({"input": prepare(load_image(f), card.inputs[0])[0]}) for f in self.data.evaluation]
        return {"logits": np.stack([o["logits"][0] for o in outs]).astype(np.float64), "raw": outs[:2]}

    def _compare(self, ref, got):
        a, b = ref["logits"], got["logits"]
        err = float(np.linalg.norm(a - b) / np.linalg.norm(a - a.mean(0)))
        fails = [] if err <= self.MAX_RELATIVE_ERROR else [f"relative error {err:.3f} > {self.MAX_RELATIVE_ERROR}"]
        return {"relative_error": err}, fails, {}

    def score(self, metrics):
        return -metrics["relative_error"]


def test_fallback_keeps_the_hostile_node_float(tmp_path, coco):
    card = tiny_card()
    src = prepare_onnx(save(hostile_net(), tmp_path / "h.onnx"), tmp_path / "hostile_fp32.onnx").path
    reader = ImageFolderReader(coco.calibration[:16], card.inputs[0])
    # This gate judges the loop, not generalisation: it evaluates on the calibration images, so
    # the hostile conv is the only thing quantisation can get wrong.
    gate = VariationGate(src, card, data=RoleData(Role.CLASSIFIER, (), coco.calibration[:16], "test"))
    # The head stays float from the start (its tiny logit variation would clip on images the
    # calibration did not see); the loop must find the hostile conv by itself.
    res = quantize_with_fallback(src, tmp_path / "hostile_int8.onnx", reader, gate,
                                 QuantOptions(calibration=CalibrationMethod.MINMAX, nodes_to_exclude=("fc",)),
                                 FallbackOptions(methods=(), max_rounds=4, max_float_fraction=1.0, latency_runs=2))
    first = res.attempts[0]
    assert not first.gate.passed, "the all-int8 model must fail: the test would prove nothing"
    assert res.passed, res.reason
    assert HOSTILE_NODE in res.float_nodes and HOSTILE_NODE not in first.float_nodes
    assert len(res.float_nodes) <= 4
    assert res.path.is_file() and res.chosen.path == res.path
    d = res.to_dict()
    assert d["float_nodes"] == list(res.float_nodes) and len(d["attempts"]) == len(res.attempts)


def test_ranking_puts_the_hostile_node_first(tmp_path, coco):
    card = tiny_card()
    src = prepare_onnx(save(hostile_net(), tmp_path / "h.onnx"), tmp_path / "hostile_fp32.onnx").path
    reader = ImageFolderReader(coco.calibration[:8], card.inputs[0])
    q = quantize_onnx_int8(src, tmp_path / "q.onnx", reader, QuantOptions(bias_correction=False))
    ranking = rank_nodes(src, q, reader, samples=4)
    assert ranking[0].node == HOSTILE_NODE, ranking[:3]
    assert ranking[0].damage_db > 10 and ranking[0].damage_db > 3 * ranking[1].damage_db


# -- one real model per role (short: a few images each) ---------------------------------------------

@pytest.mark.slow
def test_classifier_mobilenet_v2(tmp_path, model_dir, data_dir):
    from export.sources.classifier import export_mobilenet_v2_onnx
    from edge.cards import load_card

    onnx_path, card_path = export_mobilenet_v2_onnx(tmp_path / "src")
    card = load_card(card_path)
    data = _subset(Role.CLASSIFIER, data_dir, 16, 20)
    reader = calibration_reader(Role.CLASSIFIER, card, data_dir, max_images=16)
    fp32 = prepare_onnx(onnx_path, tmp_path / "m_fp32.onnx", check_feeds=reader.feeds(0)).path
    gate = make_gate(Role.CLASSIFIER, fp32, card, data=data)
    fp16 = gate.evaluate(convert_onnx_fp16(fp32, tmp_path / "m_fp16.onnx"))
    assert fp16.passed, fp16.failures
    int8 = gate.evaluate(quantize_onnx_int8(fp32, tmp_path / "m_int8.onnx", reader, QuantOptions()))
    # 20 labelled ImageNet images of the report split (labels.csv), one image = 5 points.
    assert int8.metrics["labelled_images"] == 20 and int8.metrics["resolution"] == 0.05
    assert int8.metrics["labelled_top1_float"] >= 0.6 and int8.metrics["labelled_top5_float"] >= 0.8, int8.metrics
    assert int8.metrics["top5_overlap"] > 0.7 and int8.metrics["top1_agreement"] > 0.6, int8.metrics


@pytest.mark.slow
def test_detector_yolox_int8_collapse_is_caught(tmp_path, model_dir, data_dir):
    from edge.registry import resolve

    ref = resolve("yolox_nano_416")
    data = _subset(Role.DETECTOR, data_dir, 8, 12)
    reader = calibration_reader(Role.DETECTOR, ref.card, data_dir, max_images=8)
    fp32 = prepare_onnx(ref.path, tmp_path / "y_fp32.onnx").path
    gate = make_gate(Role.DETECTOR, fp32, ref.card, data=data)
    assert gate.float_result().metrics["map50_95"] > 0.2
    fp16 = gate.evaluate(convert_onnx_fp16(fp32, tmp_path / "y_fp16.onnx"))
    assert fp16.passed, fp16.failures
    stock = gate.evaluate(quantize_onnx_int8(fp32, tmp_path / "y_int8.onnx", reader,
                                             QuantOptions(calibration=CalibrationMethod.MINMAX, bias_correction=False)))
    assert not stock.passed and any("mAP50-95" in f for f in stock.failures), stock.metrics


@pytest.mark.slow
def test_face_detector_yunet(tmp_path, model_dir, data_dir):
    from edge.registry import resolve

    ref = resolve("yunet_s_640x640")
    data = role_data(Role.FACE_DETECTOR, data_dir)
    # All 31 calibration photos: with 8, the int8 model finds only 71 % of the float model's faces.
    reader = calibration_reader(Role.FACE_DETECTOR, ref.card, data_dir)
    fp32 = prepare_onnx(ref.path, tmp_path / "yunet_fp32.onnx", check_feeds=reader.feeds(0)).path
    gate = make_gate(Role.FACE_DETECTOR, fp32, ref.card, data=data)
    assert gate.float_result().metrics["faces_float"] >= 10
    res = gate.evaluate(quantize_onnx_int8(fp32, tmp_path / "yunet_int8.onnx", reader, QuantOptions()))
    assert res.passed, (res.failures, res.metrics)
    assert res.metrics["recall"] >= 0.95 and res.metrics["mean_iou"] > 0.9


@pytest.mark.slow
def test_face_embedder_threshold_is_rederived(tmp_path, model_dir, data_dir):
    from edge.registry import resolve
    from export.onnx.prep import PrepOptions

    ref = resolve("mobilefacenet_128d")
    reader = calibration_reader(Role.FACE_EMBEDDER, ref.card, data_dir, max_images=16)
    fp32 = prepare_onnx(ref.path, tmp_path / "mfn_fp32.onnx", PrepOptions(rewrite_prelu=True),
                        check_feeds=reader.feeds(0)).path
    data = role_data(Role.FACE_EMBEDDER, data_dir)
    report_people = {f.parent.name for f in data.evaluation}
    assert report_people.isdisjoint({f.parent.name for f in data.selection})  # split by person
    gate = make_gate(Role.FACE_EMBEDDER, fp32, ref.card, data_dir=data_dir)  # the report split
    flt = gate.float_result()
    n = len(report_people)
    assert 30 < n < 70 and flt.metrics["genuine_pairs"] == n and flt.metrics["impostor_pairs"] == n * (2 * n - 1) - n
    assert flt.metrics["roc_auc"] > 0.98
    res = gate.evaluate(quantize_onnx_int8(fp32, tmp_path / "mfn_int8.onnx", reader,
                                           QuantOptions(calibration=CalibrationMethod.PERCENTILE)))
    th = res.card_thresholds["cosine_at_far"]
    assert set(th) >= {"0.01", "0.001"}
    assert th["0.001"] == pytest.approx(res.metrics["threshold_at_target_far"], abs=1e-4)
    assert th["0.001"] != pytest.approx(flt.card_thresholds["cosine_at_far"]["0.001"], abs=1e-4)
    assert res.metrics["roc_auc"] > flt.metrics["roc_auc"] - 0.02
    # The threshold derived on the report pairs gives, by construction, FAR <= 1e-3 there; checked
    # on the selection people (other pairs) it is a real measurement with its own resolution.
    sel = make_gate(Role.FACE_EMBEDDER, fp32, ref.card, data=data.selecting())
    rates = sel.rates_at(tmp_path / "mfn_int8.onnx", th["0.001"])
    assert rates["genuine_pairs"] == 100 - n and rates["far_resolution"] == 1 / rates["impostor_pairs"]
    assert 0.0 <= rates["far"] < 0.01 and rates["tar"] > 0.5, rates


@pytest.mark.slow
def test_liveness_minifasnet(tmp_path, model_dir, data_dir):
    from edge.cards import load_card
    from export.sources.liveness import export_one

    onnx_path, card_path = export_one("minifasnet_v2_scale2.7", tmp_path / "src")
    card = load_card(card_path)
    reader = calibration_reader(Role.LIVENESS, card, data_dir, max_images=12)
    gate = make_gate(Role.LIVENESS, onnx_path, card, data_dir=data_dir)
    flt = gate.float_result()
    assert flt.metrics["labelled"] == 4 and flt.metrics["accuracy_float"] == 1.0
    res = gate.evaluate(quantize_onnx_int8(onnx_path, tmp_path / "live_int8.onnx", reader, QuantOptions()))
    assert res.passed, res.failures
    assert res.metrics["agreement"] == 1.0 and res.metrics["max_abs_p_live_diff"] < 0.2


# -- three splits and the int8 targets ------------------------------------------------------------

def test_every_role_has_three_disjoint_recorded_splits(data_dir):
    for role in Role:
        d = role_data(role, data_dir)
        assert d.calibration and d.selection and d.evaluation, role
        assert not (set(d.calibration) & set(d.selection) or set(d.calibration) & set(d.evaluation)
                    or set(d.selection) & set(d.evaluation)), role
        rec = d.record()
        assert [rec[k]["files"] for k in ("calibration", "selection", "report")] == [
            len(d.calibration), len(d.selection), len(d.evaluation)]
        assert len({rec[k]["sha256"] for k in ("calibration", "selection", "report")}) == 3
    cls = role_data(Role.CLASSIFIER, data_dir)
    assert cls.labelled.name == "labels.csv" and len(cls.calibration) + len(cls.selection) + len(cls.evaluation) == 493
    with pytest.raises(AssertionError, match="selection and report share"):
        RoleData(Role.DETECTOR, (), cls.evaluation[:2], "x", selection=cls.evaluation[1:3])


def test_int8_targets_name_the_miss():
    from export.select.report_split import selection_limits
    from export.select.targets import check_target

    m = {"labelled_top1_float": 0.84, "labelled_top1": 0.82}
    (miss,) = check_target("classifier", "onnx_int8", m, split="report")
    assert "2.00 points of top-1 below float" in miss and "misses by 1.50" in miss
    assert check_target("classifier", "onnx_fp16", m) == []  # only int8 variants have targets
    assert check_target("classifier", "onnx_int8", {"labelled_top1_float": 0.84, "labelled_top1": 0.838}) == []
    (slow,) = check_target("detector", "tflite_int8", {}, latency_ms=8.0, fp32_latency_ms=10.0)
    assert "only 1.25x faster" in slow
    assert selection_limits("detector", GateLimits()).max_map_drop == 0.01
    assert selection_limits("liveness", GateLimits()) == GateLimits()
