"""ONNX PRelu → TFLite: the same function, and XNNPACK takes the full-integer model whole."""

from __future__ import annotations

import numpy as np

from tests._tiny_onnx import SIZE, conv_net, save


def test_int8_prelu_net_stays_in_one_xnnpack_piece_and_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    from export.select.cost_model import xnnpack_partitions
    from export.tflite.convert import CalibrationStat, TfliteQuantOptions, onnx_to_tflite, quantize_tflite
    from edge.engines import load_engine

    src = save(conv_net(prelu=True), tmp_path / "prelu.onnx")
    fp32 = onnx_to_tflite(src, tmp_path / "prelu_fp32.tflite")
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32) for _ in range(8)]
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    with load_engine(fp32, backend="litert", threads=1) as eng:
        for x in xs[:2]:
            want = sess.run(None, {"input": x})[0]
            got = next(iter(eng.run({eng.inputs[0].name: x}).values()))
            assert np.abs(np.asarray(got).reshape(want.shape) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    q = quantize_tflite(fp32, tmp_path / "prelu_int8.tflite", "tflite_int8", [{"input": x} for x in xs],
                        TfliteQuantOptions(stat=CalibrationStat.MINMAX))
    # F.prelu's lowering left a stand-alone int8 RELU that XNNPACK refuses: one more piece per PRelu.
    assert xnnpack_partitions(q) == xnnpack_partitions(fp32) == 1
