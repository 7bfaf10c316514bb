"""The release self-test: golden inputs recorded at build time, compared on the device with tolerance.

Runs on the session's real rpi5 release (``release_build`` in conftest.py). Re-signed variants of
it (a model swapped for another valid one, no self-test data) are made with the test key, so they
verify and only the self-test can tell.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptography")

from edge.bundle import MANIFEST, SIGNATURE  # noqa: E402
from edge.cards import load_card  # noqa: E402
from edge.cli import main as edge_main  # noqa: E402
from edge.selftest import INDEX, TOLERANCE, compare_outputs, precision_of, run  # noqa: E402


def _resign(root: Path, priv: Path) -> None:
    from export.bundle.keys import load_private_key, sign_manifest
    from export.bundle.write import build_manifest

    old = json.loads((root / MANIFEST).read_text())
    manifest = build_manifest(root, profile=old["profile"], roles=old["roles"], created=old["created"])
    (root / MANIFEST).write_bytes(manifest)
    (root / SIGNATURE).write_bytes(sign_manifest(load_private_key(priv), manifest))


def _copy(release_build, tmp_path: Path) -> Path:
    dst = tmp_path / "rpi5"
    shutil.copytree(release_build["dir"], dst)
    return dst


def _selftest(bundle: Path, pub: Path, capsys) -> tuple[int, dict]:
    code = edge_main(["selftest", "--bundle", str(bundle), "--trust", str(pub), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_fresh_release_passes_its_self_test_on_every_role(release_build, capsys):
    code, doc = _selftest(release_build["dir"], release_build["pub"], capsys)
    assert code == 0 and doc["passed"], doc
    roles = {c["role"] for c in doc["checks"]}
    assert roles == {"classifier", "detector", "face_detector", "face_embedder", "liveness"}
    assert len({c["model"] for c in doc["checks"] if c["role"] == "liveness"}) == 2
    # the same runtime on the same machine: far inside the tolerance, never an exact-bytes test
    assert all(c["value"] <= c["limit"] / 10 for c in doc["checks"]), doc
    index = json.loads((release_build["dir"] / INDEX).read_text())
    assert all(len(m["inputs"]) == 2 for m in index["models"]) and not index["skipped"]
    report = json.loads((release_build["dir"] / "report.json").read_text())
    assert report["selftest"]["models"] == len(index["models"]) and report["selftest"]["bytes"] > 0


def test_the_archive_release_runs_its_self_test_too(release_build, capsys):
    code, doc = _selftest(release_build["tar"], release_build["pub"], capsys)
    assert code == 0 and doc["passed"]


def test_a_swapped_but_validly_signed_model_fails_naming_role_and_metric(release_build, tmp_path, capsys):
    root = _copy(release_build, tmp_path)
    manifest = json.loads((root / MANIFEST).read_text())
    a, b = (root / e["model"] for e in manifest["roles"]["liveness"])
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    for e in manifest["roles"]["liveness"]:  # keep the cards true to their (swapped) files
        card_path = root / e["card"]
        card = load_card(card_path)
        model = root / e["model"]
        import hashlib
        card = dataclasses.replace(card, sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
                                   size=model.stat().st_size)
        card_path.write_text(card.to_json())
    _resign(root, release_build["priv"])
    assert edge_main(["bundle", "verify", str(root), "--key", str(release_build["pub"])]) == 0
    capsys.readouterr()
    code, doc = _selftest(root, release_build["pub"], capsys)
    assert code == 1 and not doc["passed"]
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert failed and {c["role"] for c in failed} == {"liveness"}
    assert all(c["metric"] == "rel_max_err" and c["value"] > c["limit"] for c in failed)
    # the text form names them too
    assert edge_main(["selftest", "--bundle", str(root), "--trust", str(release_build["pub"])]) == 1
    out = capsys.readouterr().out
    assert "FAIL  liveness" in out and "self-test FAILED" in out


def test_a_release_without_self_test_data_says_how_to_get_one(release_build, tmp_path, capsys):
    root = _copy(release_build, tmp_path)
    shutil.rmtree(root / "selftest")
    _resign(root, release_build["priv"])
    code = edge_main(["selftest", "--bundle", str(root), "--trust", str(release_build["pub"])])
    err = capsys.readouterr().err
    assert code == 1 and "no self-test" in err and "edge-export build" in err


def test_a_tampered_release_is_refused_before_the_self_test(release_build, tmp_path, capsys):
    root = _copy(release_build, tmp_path)
    npz = next((root / "selftest").rglob("*.npz"))
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0x01
    npz.write_bytes(bytes(data))
    code = edge_main(["selftest", "--bundle", str(root), "--trust", str(release_build["pub"])])
    err = capsys.readouterr().err
    assert code == 2 and npz.name in err


def test_a_runtime_returning_zeros_fails(release_build, monkeypatch):
    import edge.selftest as st

    real = st._run_model
    monkeypatch.setattr(st, "_run_model", lambda eng, x: [np.zeros_like(y) for y in real(eng, x)])
    report = run(release_build["dir"], roles=["classifier"])
    assert report.checks and not report.passed
    assert all(c.value >= 0.99 for c in report.checks)


@pytest.mark.parametrize("precision", sorted(TOLERANCE))
def test_tolerance_admits_rounding_and_refuses_a_real_change(precision):
    rng = np.random.default_rng(0)
    expected = rng.normal(size=(1, 1000)).astype(np.float32)
    tol = TOLERANCE[precision]
    scale = float(np.abs(expected).max())
    within = expected + rng.uniform(-0.5, 0.5, expected.shape).astype(np.float32) * tol * scale
    beyond = expected.copy()
    beyond[0, 7] += 2 * tol * scale
    assert compare_outputs(within, expected, tol)[2]
    err, cos, ok = compare_outputs(beyond, expected, tol)
    assert not ok and err == pytest.approx(2 * tol, rel=1e-3) and cos > 0.99
    assert not compare_outputs(np.full_like(expected, np.nan), expected, tol)[2]
    assert not compare_outputs(expected[:, :10], expected, tol)[2]


def test_precision_follows_the_variant(release_build):
    cards = [load_card(p) for p in release_build["dir"].rglob("*.json")
             if p.parent.name in ("classifier", "detector")]
    assert cards and all(precision_of(c) == "fp32" for c in cards)
    int8 = dataclasses.replace(cards[0], provenance={"variant": "tflite_int8"})
    fp16 = dataclasses.replace(cards[0], provenance={"variant": "onnx_fp16"})
    assert precision_of(int8) == "int8" and precision_of(fp16) == "fp16"
    assert os.path.exists(release_build["dir"] / INDEX)
