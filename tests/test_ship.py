"""What ships is already rewritten (issue 9.3): the bundle's ONNX graphs carry no PRelu, their outputs
equal the source's, and their cards record the rewrites; the device runs them as they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from edge.engines import load_engine  # noqa: E402
from edge.registry import get_card, resolve_model  # noqa: E402
from export.bundle.ship import count_ops, shipped_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    with load_engine(path, threads=1) as e:
        return next(iter(e.run({e.inputs[0].name: x}).values()))


def test_a_chosen_onnx_with_prelu_ships_rewritten(tmp_path, model_dir):
    card = get_card("sface_2021dec_fp32")
    src = resolve_model(card)
    assert count_ops(src, "PRelu") == 27
    path, shipped = shipped_model(src, card, tmp_path)
    assert path != src and count_ops(path, "PRelu") == 0
    assert shipped.provenance.prelu_nodes == 0
    (r,) = shipped.provenance.rewrites
    assert r.name == "prelu" and r.nodes == 27 and r.max_abs_diff <= 1e-4
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    assert np.abs(_outputs(src, x) - _outputs(path, x)).max() <= 1e-4
    assert shipped.thresholds == card.thresholds  # same function: same thresholds


def test_tflite_ships_as_chosen(tmp_path, model_dir):
    card = get_card("mobilenet_v1_0.25_128_quant")
    src = resolve_model(card)
    path, shipped = shipped_model(src, card, tmp_path)
    assert path == src and shipped.provenance.rewrites == () and "native" in shipped.provenance.rewrites_note


@pytest.mark.slow
def test_onnx_build_ships_rewritten_graphs(tmp_path, model_dir, data_dir):
    """``edge-export build`` for an onnxruntime board: the embedder and liveness pair carry no PRelu."""
    pytest.importorskip("torch")
    pytest.importorskip("cryptography")
    from edge.bundle import load_bundle, verify_bundle
    from export.bundle.keys import generate_keypair
    from export.cli import main as export_main

    priv, pub = generate_keypair(tmp_path / "keys")
    assert export_main(["build", "--profile", str(ROOT / "firmware_configs" / "x86_dev.toml"), "--out",
                        str(tmp_path / "out"), "--key", str(priv), "--only", "face_embedder,liveness",
                        "--formats", "onnx_fp32", "--no-fallback", "--max-calibration", "8", "-q"]) == 0
    bundle = tmp_path / "out" / "x86_dev"
    verify_bundle(bundle, pub)
    b = load_bundle(bundle)
    for role in ("face_embedder", "liveness"):
        for m in b.models(role):
            assert m.model_path.suffix == ".onnx" and count_ops(m.model_path, "PRelu") == 0, m.model_path
            card = json.loads(m.card_path.read_text())
            assert card["provenance"]["prelu_nodes"] == 0
    emb = b.model("face_embedder")
    assert [r.name for r in emb.card.provenance.rewrites] == ["prelu"]
    # the shipped embedder computes what the registry's does
    x = np.random.default_rng(2).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    ref = _outputs(resolve_model(get_card("sface_2021dec_fp32")), x)
    assert np.abs(ref - _outputs(emb.model_path, x)).max() <= 1e-3
