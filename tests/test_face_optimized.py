"""With prefer_optimized the face pipeline runs the output-identical PRelu-rewritten SFace that
edge-export built into the cache (bundles ship it), with the same embeddings; a stale or altered
copy is ignored."""

from __future__ import annotations

import numpy as np
import pytest

from edge.face.embedder import OPTIMIZED_SUBDIR, optimized_card
from edge.face.pipeline import create_pipeline
from edge.imageio import load_image

pytest.importorskip("onnx", reason="building the rewritten SFace needs onnx (the export extra)")

SFACE = "sface_2021dec_fp32"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from export.onnx.graph_opt import optimized_embedder

    root = tmp_path_factory.mktemp("cache")
    optimized_embedder(SFACE, root / OPTIMIZED_SUBDIR)
    return root


def test_default_pipeline_uses_rewrite_with_same_embeddings(cache, data_dir, monkeypatch):
    monkeypatch.setenv("EDGE_CACHE_DIR", str(cache))
    imgs = [load_image(data_dir / "faces/deepface" / f) for f in ("img10.jpg", "img1.jpg", "img33.jpg")]
    with create_pipeline(threads=1, liveness=False, detect_size=(320, 240), prefer_optimized=True) as fast, \
            create_pipeline(threads=1, liveness=False, detect_size=(320, 240)) as ref:
        assert fast.embedder.model_id == f"{SFACE}_fastprelu"
        assert ref.embedder.model_id == SFACE
        assert fast.threshold() == ref.threshold()  # same function, same card thresholds
        for img in imgs:
            a, b = fast.analyze(img).largest, ref.analyze(img).largest
            np.testing.assert_allclose(a.landmarks, b.landmarks)
            np.testing.assert_allclose(a.embedding.vector, b.embedding.vector, atol=1e-4)


def test_altered_or_foreign_copy_is_ignored(cache, tmp_path):
    assert optimized_card(SFACE, cache) is not None
    assert optimized_card("mobilefacenet_128d", cache) is None  # never built here
    assert optimized_card("not_a_model", cache) is None
    bad = tmp_path / OPTIMIZED_SUBDIR
    bad.mkdir()
    for p in (cache / OPTIMIZED_SUBDIR).iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    onnx_file = bad / f"{SFACE}_fastprelu.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    assert optimized_card(SFACE, tmp_path) is None


# ---------------------------------------------------------------- PRelu on fast kernels, at load time
def test_registry_sface_runs_prelu_on_fast_kernels_with_same_embeddings(data_dir):
    """Without any cache, onnxruntime runs the registry SFace with each PRelu as Min/Mul/Add: the
    embedder keeps the registry's name and sha256 (templates stay valid) and its outputs."""
    from edge import registry
    from edge.engines.ort import OnnxRuntimeEngine
    from edge.face.align import align_face
    from edge.face.embedder import FaceEmbedder

    ref = registry.resolve(SFACE)
    crops = []
    with create_pipeline(threads=1, liveness=False, detect_size=(320, 240)) as p:
        assert p.embedder.engine.rewritten_prelu == 27
        assert (p.embedder.model_id, p.embedder.model_sha256) == (SFACE, ref.card.sha256)
        for f in ("img10.jpg", "img1.jpg", "img33.jpg"):
            img = load_image(data_dir / "faces/deepface" / f)
            crops.append(align_face(img, p.analyze(img, embed=False).largest.landmarks))
        fast = p.embedder.raw_features(np.stack(crops))
    with OnnxRuntimeEngine(ref.path, threads=1, fast_prelu=False) as eng:
        assert eng.rewritten_prelu == 0
        stored = FaceEmbedder(eng, ref.card).raw_features(np.stack(crops))
    np.testing.assert_allclose(fast, stored, atol=1e-4 * float(np.abs(stored).max()))


def _prelu_model(tmp_path, *, opset: int, quantised: bool):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    slope = numpy_helper.from_array(np.array([[[0.25]], [[2.0]]], np.float32), "slope")
    nodes, inits = [], [slope]
    x = "x"
    if quantised:
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.uint8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node("PRelu", [x, "slope"], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    path = tmp_path / f"prelu_{opset}_{quantised}.onnx"
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("opset,quantised,rewritten", [(13, False, 1), (13, True, 0), (7, False, 0)])
def test_prelu_rewrite_same_function_and_left_alone_where_it_does_not_apply(tmp_path, opset, quantised, rewritten):
    from edge.engines.ort import OnnxRuntimeEngine

    path = _prelu_model(tmp_path, opset=opset, quantised=quantised)
    x = np.linspace(-3, 3, 18, dtype=np.float32).reshape(1, 2, 3, 3)
    with OnnxRuntimeEngine(path, threads=1) as fast, OnnxRuntimeEngine(path, threads=1, fast_prelu=False) as plain:
        assert fast.rewritten_prelu == rewritten  # int8 graphs run as gated; opset < 8 lacks broadcasting Min
        got = fast.run({"x": x})["y"]
        np.testing.assert_allclose(got, plain.run({"x": x})["y"], rtol=1e-6, atol=1e-6)
    if not quantised:  # PRelu's definition, per channel slope 0.25 and 2.0
        np.testing.assert_allclose(got, np.where(x > 0, x, x * np.float32([0.25, 2.0]).reshape(1, 2, 1, 1)),
                                   rtol=1e-6, atol=1e-6)
