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
    from export.graph_opt import optimized_embedder

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
