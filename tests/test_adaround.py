"""AdaRound-style weight rounding (export/quant/adaround.py) and its QuantOptions switch."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from export.onnx.prep import session_with_outputs  # noqa: E402
from export.quant.adaround import AdaRoundOptions, adaround_weights, apply_rounding, quantised_weights  # noqa: E402
from export.quant.calibration import ImageFolderReader, list_images  # noqa: E402
from export.quant.quantize import QuantOptions, quantize_onnx_int8  # noqa: E402
from tests._tiny_onnx import conv_net, save, tiny_card  # noqa: E402

#: Two MobileNetV2 projection convolutions (1×1, no activation after them, so the quantised
#: graph's Conv output is the float graph's Conv output, rounded).
LAYERS = ("/features/features.1/conv/conv.1/Conv", "/features/features.2/conv/conv.2/Conv")


def _outputs(model, names, reader, indices) -> dict[str, np.ndarray]:
    sess = session_with_outputs(model, list(names), optimize=False)
    keys = [o.name for o in sess.get_outputs()]
    got: dict[str, list] = {n: [] for n in names}
    for k in indices:
        out = dict(zip(keys, sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), reader.feeds(k).values())})))
        for n in names:
            got[n].append(out[n])
    return {n: np.concatenate(v) for n, v in got.items()}


@pytest.mark.slow
def test_adaround_lowers_a_real_layers_output_error_on_images_it_never_saw(tmp_path, model_dir, data_dir):
    """MobileNetV2, two layers: rounding chosen on 8 calibration images, output error measured by
    onnxruntime on 6 selection-split images, against round-to-nearest with the same scales."""
    from edge.cards import load_card
    from export.gates.roles import role_data
    from export.sources.classifier import export_mobilenet_v2_onnx

    src, card_path = export_mobilenet_v2_onnx(tmp_path / "src")
    card = load_card(card_path)
    data = role_data("classifier", data_dir, model_name=card.name)
    cal = ImageFolderReader(data.calibration[:8], card.inputs[0])
    unseen = ImageFolderReader(data.selection[:6], card.inputs[0])
    nearest = quantize_onnx_int8(src, tmp_path / "rtn.onnx", cal, QuantOptions(bias_correction=False))
    ints, stats = adaround_weights(src, nearest, cal, AdaRoundOptions(iterations=150, samples=8), nodes=list(LAYERS))
    assert [s.node for s in stats] == list(LAYERS) and all(not s.skipped and s.changed > 0 for s in stats), stats
    assert all(s.error_adaround < s.error_nearest for s in stats), stats  # on the calibration images
    fm, qm = onnx.load(str(src)), onnx.load(str(nearest))
    qw = quantised_weights(fm, qm)
    adarounded = apply_rounding(onnx.load(str(nearest)), ints)
    assert quantised_weights(fm, adarounded)[LAYERS[0]].scale.tolist() == qw[LAYERS[0]].scale.tolist()
    outs = {n.name: n.output[0] for n in fm.graph.node if n.name in LAYERS}
    ref = _outputs(fm, outs.values(), unseen, range(len(unseen)))
    rtn = _outputs(qm, outs.values(), unseen, range(len(unseen)))
    ada = _outputs(adarounded, outs.values(), unseen, range(len(unseen)))
    for layer, t in outs.items():
        e_rtn = float(np.mean((rtn[t] - ref[t]) ** 2))
        e_ada = float(np.mean((ada[t] - ref[t]) ** 2))
        assert e_ada < e_rtn, (layer, e_ada, e_rtn)


@pytest.fixture(scope="module")
def tiny_reader(data_dir) -> ImageFolderReader:
    return ImageFolderReader(list_images(data_dir / "coco128" / "images")[:6], tiny_card().inputs[0])


@pytest.mark.parametrize("bias_correction", [False, True])
def test_quant_options_adaround_changes_the_stored_integers_only(tmp_path, tiny_reader, bias_correction):
    """The option reaches the model: some integers differ from round-to-nearest (after bias
    correction's re-quantisation too), scales do not, the summary says so."""
    src = save(conv_net(seed=5), tmp_path / "float.onnx")
    cache = tmp_path / "cal.json"
    plain = quantize_onnx_int8(src, tmp_path / "rtn.onnx", tiny_reader, QuantOptions(bias_correction=bias_correction),
                               calibration_cache=cache)
    opts = QuantOptions(bias_correction=bias_correction,
                        adaround=AdaRoundOptions(iterations=100, samples=4, min_positions_per_dim=0))
    ada = quantize_onnx_int8(src, tmp_path / "ada.onnx", tiny_reader, opts, calibration_cache=cache)
    fm = onnx.load(str(src))
    a, b = quantised_weights(fm, onnx.load(str(plain))), quantised_weights(fm, onnx.load(str(ada)))
    assert set(a) == set(b) == {"conv1", "conv2"}
    assert any((a[n].ints != b[n].ints).any() for n in a)
    assert all(np.array_equal(a[n].scale, b[n].scale) for n in a)
    assert all(np.abs(a[n].ints.astype(int) - b[n].ints.astype(int)).max() <= 1 for n in a)  # down or up, never further
    assert opts.describe()["adaround"]["iterations"] == 100 and QuantOptions().describe()["adaround"] is None


def test_adaround_needs_activations_not_a_cache(tmp_path, tiny_reader):
    src = save(conv_net(), tmp_path / "float.onnx")
    cache = tmp_path / "cal.json"
    quantize_onnx_int8(src, tmp_path / "rtn.onnx", tiny_reader, QuantOptions(bias_correction=False),
                       calibration_cache=cache)
    with pytest.raises(ValueError, match="adaround needs a calibration reader"):
        quantize_onnx_int8(src, tmp_path / "ada.onnx", None, QuantOptions(adaround=AdaRoundOptions()),
                           calibration_cache=cache)
    with pytest.raises(ValueError, match="AdaRoundOptions or None"):
        QuantOptions(adaround=True)
    with pytest.raises(ValueError, match="iterations"):
        AdaRoundOptions(iterations=0)
