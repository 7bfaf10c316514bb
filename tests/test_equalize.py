"""Channel equalisation of Conv → PRelu → Conv pairs (export.equalize) on the real SFace."""

from __future__ import annotations

import numpy as np
import pytest

from edge.registry import get_card, resolve

SFACE = "sface_2021dec_fp32"


@pytest.fixture(scope="module")
def feeds(data_dir):
    from export.roles import Role, calibration_reader, role_data

    card = get_card(SFACE)
    data = role_data(Role.FACE_EMBEDDER, data_dir, model_name=SFACE)
    r = calibration_reader(Role.FACE_EMBEDDER, card, max_images=6, data=data)
    return [r.feeds(i)[card.inputs[0].name] for i in range(len(r))]


def _middle_ranges(path, feeds):
    import onnx

    from export.equalize import _channel_ranges, _pairs
    from export.onnx_torch import load_onnx_model

    m = load_onnx_model(path)
    init = {i.name: i for i in m.graph.initializer}
    names = [c1.output[0] for c1, _, _ in _pairs(m.graph, init)]
    assert names and isinstance(m, onnx.ModelProto)
    return _channel_ranges(m, names, feeds)


def test_equalised_sface_computes_the_same_and_flattens_channel_ranges(tmp_path, feeds):
    import onnxruntime as ort

    from export.equalize import equalize_prelu_chain
    from export.onnx_prep import PrepOptions, prepare_onnx

    src = prepare_onnx(resolve(SFACE).path, tmp_path / "src.onnx", PrepOptions(rewrite_prelu=False)).path  # BN folded
    dst = tmp_path / "eq.onnx"
    n = equalize_prelu_chain(src, dst, feeds[:4], alpha=0.5)
    assert n == 26  # SFace: 27 Conv→PRelu, the last one feeds the global depthwise conv
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, dst))
    for x in feeds[4:]:  # inputs the ranges were not measured on
        ya, yb = a.run(None, {"data": x})[0], b.run(None, {"data": x})[0]
        assert np.abs(ya - yb).max() <= 1e-4 * np.abs(ya).max()

    def spread(ranges):  # median over tensors of (largest channel range / median channel range)
        return float(np.median([r.max() / np.median(r[r > 0]) for r in ranges.values()]))

    before, after = spread(_middle_ranges(src, feeds[:4])), spread(_middle_ranges(dst, feeds[:4]))
    assert after < 0.75 * before, (before, after)  # measured: 2.29 → 1.35


def test_equalize_refuses_bad_alpha_and_no_samples(tmp_path):
    from export.equalize import equalize_prelu_chain

    with pytest.raises(ValueError, match="alpha"):
        equalize_prelu_chain(resolve(SFACE).path, tmp_path / "x.onnx", [np.zeros((1, 3, 112, 112), np.float32)],
                             alpha=1.5)
    with pytest.raises(ValueError, match="no calibration samples"):
        equalize_prelu_chain(resolve(SFACE).path, tmp_path / "x.onnx", [])
    assert not (tmp_path / "x.onnx").exists()
