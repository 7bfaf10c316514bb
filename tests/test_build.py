"""``edge-export build``: a reduced real build (the classifier for rpi4), then the bundle it wrote is
verified, read and run on the device side; bad inputs and injected failures leave no half bundle.

The full five-role build of ``firmware_configs/rpi4.toml`` takes minutes on a 2-core machine: its
time is measured by ``benchmarks/build_time.py``, not here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("cryptography")

from edge.bundle import MANIFEST, load_bundle, verify_bundle  # noqa: E402
from edge.cli import EXIT_OK  # noqa: E402
from edge.cli import main as edge_main  # noqa: E402
from edge.engines import load_engine  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.preprocess import prepare  # noqa: E402
from edge.registry import load_labels  # noqa: E402
from export.bundle.keys import generate_keypair  # noqa: E402
from export.cli import main as export_main  # noqa: E402

PROFILE = Path(__file__).resolve().parent.parent / "firmware_configs" / "rpi4.toml"
#: The reduced build: one role, the float and full-integer variants (no fallback search).
REDUCED = ["--only", "classifier", "--formats", "tflite_fp32,tflite_int8", "--no-fallback", "-q"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    priv, pub = generate_keypair(tmp_path_factory.mktemp("keys"))
    return priv, pub


@pytest.fixture(scope="module")
def built(tmp_path_factory, keys, model_dir, data_dir):
    out = tmp_path_factory.mktemp("out")
    code = export_main(["build", "--profile", str(PROFILE), "--out", str(out), "--key", str(keys[0]), "--archive",
                        *REDUCED])
    assert code == 0
    return out / "rpi4"


def test_reduced_build_verifies_on_the_device(built, keys):
    assert edge_main(["bundle", "verify", str(built), "--key", str(keys[1])]) == EXIT_OK
    archive = built.with_name("rpi4.tar.gz")
    assert verify_bundle(archive, keys[1]).roles == ("classifier",)


def test_report_carries_what_the_issue_asks_for(built):
    report = json.loads((built / "report.json").read_text())
    assert report["profile"]["backend"] == "litert"
    assert report["build"]["seconds"] > 0
    assert {"litert-torch", "ai-edge-quantizer", "ai-edge-litert"} <= set(report["converters"])
    assert "never used to choose" in report["speed_note"] and report["build"]["board_timings"] is None
    (model,) = report["models"]
    assert model["role"] == "classifier" and model["licence"]["spdx"] == "BSD-3-Clause"
    assert len(model["calibration"]["hash"]) == 64 and model["calibration"]["images"] > 0
    keys = [v["key"] for v in model["variants"]]
    assert keys == ["tflite_fp32", "tflite_int8"]
    for v in model["variants"]:
        assert v["size"] > 0 and v["latency_ms"] > 0
        assert {"top1_agreement", "top5_overlap", "labelled_top1"} <= set(v["gate"]["metrics"])
        assert isinstance(v["passed"], bool)
    chosen = model["chosen"]
    assert chosen["passed"] and chosen["reason"]
    # Chosen for the board (rpi4's cost model), not by the latency measured on this x86 machine.
    from export.select.cost_model import TIE

    assert chosen["basis"] == "cost-model" and chosen["board"] == "rpi4" and chosen["variant"] == chosen["key"]
    passing = [v for v in model["variants"] if v["passed"]]
    est = chosen["estimates"]
    assert set(est) == {v["file"] for v in passing}
    low = min(est[v["file"]]["estimate_ms"] for v in passing)
    assert est[chosen["file"]]["estimate_ms"] <= low * (1 + TIE), "the lowest estimate on the board …"
    assert chosen["size"] == min(v["size"] for v in passing if est[v["file"]]["estimate_ms"] <= low * (1 + TIE)), \
        "… or, within a tie of it, the smallest file"
    for v in passing:
        assert est[v["file"]]["macs"] > 0 and est[v["file"]]["bound"] in ("compute", "memory")
    if any(v["key"] == "tflite_int8" for v in passing):
        assert est[next(v["file"] for v in passing if v["key"] == "tflite_int8")]["by_precision"].get("int8", 0) > 0
    trials = model["calibration"]["tflite_trials"]
    assert [t["statistic"] for t in trials] == ["moving_average", "minmax", "mse"]
    assert model["calibration"]["tflite_statistic"] == max(trials, key=lambda t: (t["passed"], t["score"]))["statistic"]
    md = (built / "report.md").read_text()
    assert chosen["file"] in md and "classifier" in md and "by **cost-model**" in md
    # Three disjoint splits, each recorded by count and hash; the figures stated come from the report split.
    splits = model["splits"]
    assert {k: splits[k]["files"] > 50 for k in ("calibration", "selection", "report")} == dict.fromkeys(
        ("calibration", "selection", "report"), True)
    assert len({splits[k]["sha256"] for k in ("calibration", "selection", "report")}) == 3
    assert splits["report"]["files"] > splits["selection"]["files"]
    for v in model["variants"]:
        rep = v["report"]["metrics"]
        assert rep["labelled_images"] == splits["report"]["files"] == rep["images"]
        assert rep["resolution"] == pytest.approx(1 / splits["report"]["files"])
        assert v["gate"]["metrics"]["labelled_images"] == splits["selection"]["files"]
    int8 = next(v for v in model["variants"] if v["key"] == "tflite_int8")
    assert int8["passed"] == (not int8["refused"] and int8["gate"]["passed"])
    assert "Report split" in md and splits["report"]["sha256"][:12] in md


def test_bundle_model_runs_and_sees_a_cat(built, samples):
    bundle = load_bundle(built)
    m = bundle.model("classifier")
    assert m.model_path.suffix == ".tflite", "rpi4's runtime is LiteRT"
    labels = load_labels(m.card, base=m.model_path.parent)
    x, _ = prepare(load_image(samples / "cat.bmp"), m.card.inputs[0])
    with load_engine(m.model_path, threads=1) as eng:
        y = eng.run({eng.inputs[0].name: x})[m.card.outputs[0].name]
    assert "cat" in labels[int(y.argmax())].lower()
    assert m.card.gate.passed is True


def test_non_commercial_embedder_needs_accept_licence(tmp_path, keys, capsys):
    code = export_main(["build", "--profile", str(PROFILE), "--out", str(tmp_path / "out"), "--key", str(keys[0]),
                        "--only", "face_embedder", "--embedder", "mobilefacenet", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "mobilefacenet_128d" in err and "non-commercial" in err.lower() and "--accept-licence" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("args, message", [
    (["--only", "teleporter"], "unknown role"),
    (["--formats", "onnx"], "builds no tflite variant"),
    (["--formats", "tflite_int4"], "unknown export target"),
    (["--key", "{missing}"], "cannot read private key"),
    (["--profile", "{bad_profile}"], "unknown"),
])
def test_bad_options_fail_fast_with_a_clear_message(tmp_path, keys, capsys, args, message):
    bad_profile = tmp_path / "bad.toml"
    bad_profile.write_text(PROFILE.read_text().replace("[runtime]", "[runtime]\nbakend = \"litert\""))
    fmt = {"missing": str(tmp_path / "nope.key"), "bad_profile": str(bad_profile)}
    base = {"--profile": str(PROFILE), "--out": str(tmp_path / "out"), "--key": str(keys[0])}
    given = dict(zip(args[::2], [a.format(**fmt) for a in args[1::2]]))
    argv = ["build", *[x for k, v in {**base, **given}.items() for x in (k, v)]]
    if "--only" not in given:
        argv += ["--only", "classifier"]
    assert export_main(argv + ["-q"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["float_export", "gate"])
def test_failed_build_leaves_no_half_bundle_and_keeps_the_previous(built, keys, tmp_path, monkeypatch, where):
    from export.build import model as build_model
    from export.variants import ExportStepError

    out = tmp_path / "out"
    shutil.copytree(built, out / "rpi4")
    before = (out / "rpi4" / MANIFEST).read_bytes()

    def boom(*args, **kwargs):
        raise ExportStepError("mobilenet_v2_torchvision", where, "injected failure")

    if where == "float_export":
        monkeypatch.setattr(build_model.ModelBuild, "float_onnx", boom)
    else:
        import export.gates.factory

        monkeypatch.setattr(export.gates.factory, "make_gate", boom)
    code = export_main(["build", "--profile", str(PROFILE), "--out", str(out), "--key", str(keys[0]), *REDUCED])
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["rpi4"], "no temporary directory may be left behind"
    assert (out / "rpi4" / MANIFEST).read_bytes() == before
    verify_bundle(out / "rpi4", keys[1])


def test_resolve_keys_table():
    from export.build.pipeline import resolve_keys

    assert resolve_keys((), "tflite") == ("tflite_fp32", "tflite_fp16", "tflite_int8_dynamic", "tflite_int8")
    assert resolve_keys(("tflite_int8",), "tflite") == ("tflite_fp32", "tflite_int8"), "fp32 is always built"
    assert resolve_keys(("onnx", "tflite_int8_uint8io"), "onnx")[:3] == ("onnx_fp32", "onnx_fp16", "onnx_int8")
    with pytest.raises(ValueError, match="builds no onnx variant"):
        resolve_keys(("tflite",), "onnx")


def test_accepted_non_commercial_licence_is_flagged():
    from export.build.pipeline import LicenceError, check_licences, role_sources

    sources = role_sources(("face_embedder",), "mobilefacenet")
    with pytest.raises(LicenceError, match="--accept-licence"):
        check_licences(sources, accept=False)
    flagged = check_licences(sources, accept=True)
    assert len(flagged) == 1 and "mobilefacenet_128d" in flagged[0]
    assert check_licences(role_sources(("face_embedder",)), accept=False) == [], "SFace (Apache-2.0) needs no flag"


def test_convert_cli_writes_a_checked_variant_and_its_card(tmp_path, samples, capsys):
    from edge.cards import load_card

    out = tmp_path / "yunet_fp32.tflite"
    code = export_main(["convert", "yunet_s_640x640", "--to", "tflite", "--precision", "fp32",
                        "--check-image", str(samples / "group_t1.jpg"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    card = load_card(out.with_name(out.name + ".json"))
    assert card.format == "tflite" and card.file == out.name
    assert [o.name for o in card.outputs][:3] == ["cls_8", "cls_16", "cls_32"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yunet_fp32.tflite", "yunet_fp32.tflite.json"]
    assert "cosine" in capsys.readouterr().out


def test_convert_cli_needs_calibration_for_full_integer(tmp_path, capsys):
    code = export_main(["convert", "yunet_s_640x640", "--to", "tflite", "--precision", "int8",
                        "--out", str(tmp_path / "x.tflite")])
    assert code == 2 and "--calibration" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
