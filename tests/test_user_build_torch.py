"""edge-export build with a known network's PyTorch state dict as the user's source (export/sources/state_dict.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edge.cards import load_card  # noqa: E402
from export.build.user_inputs import UserInputError, load_build_file, prepare_user_source  # noqa: E402
from export.bundle.keys import generate_keypair  # noqa: E402
from export.cli import main as export_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MOBILENET = "classification/mobilenet_v2_torchvision_b0353104.pth"


@pytest.fixture(scope="module")
def byo(tmp_path_factory, data_dir, model_dir):
    """The shared MobileNetV2 weights under ``weights/``, 40 labelled ImageNet images as class
    folders (named after their label's first synonym), and a signing key."""
    root = tmp_path_factory.mktemp("byo_torch")
    (root / "weights").mkdir()
    shutil.copy(model_dir / MOBILENET, root / "weights" / "my_mobilenet.pth")
    names = (model_dir / "classification" / "imagenet_labels_1001.txt").read_text().splitlines()
    with open(data_dir / "imagenet_samples" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:40]
    for r in rows:
        d = root / "cls" / names[int(r["class_index"]) + 1].split(",")[0].replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "imagenet_samples" / r["file"], d)
    priv, _ = generate_keypair(root / "keys")
    return root, priv


def test_state_dict_classifier_builds_end_to_end(byo, tmp_path, capsys):
    root, key = byo
    bf = root / "build.toml"  # the network named in a build file, the weights relative to it
    bf.write_text(f'profile = "{ROOT / "firmware_configs/x86_dev.toml"}"\nkey = "{key}"\nonly = ["classifier"]\n'
                  'formats = ["onnx_fp32", "onnx_int8"]\nmax_calibration = 8\n'
                  '[source]\nclassifier = "mobilenet_v2:weights/my_mobilenet.pth"\n[data]\nclassifier = "cls"\n')
    assert load_build_file(bf)["source"]["classifier"] == Path(f"mobilenet_v2:{root / 'weights/my_mobilenet.pth'}")
    code = export_main(["build", "--build-file", str(bf), "--out", str(tmp_path), "--no-fallback", "-q"])
    assert code == 0, capsys.readouterr().err
    (model,) = json.loads((tmp_path / "x86_dev" / "report.json").read_text())["models"]
    assert model["source"] == "mobilenet_v2_my_mobilenet" and model["licence"]["spdx"] == "NOASSERTION"
    assert "user labelled data" in model["splits"]["note"]
    for v in model["variants"]:  # 1000 outputs: the ImageNet labels; the class folders are a subset
        assert v["report"]["metrics"]["labelled_images"] == model["splits"]["report"]["files"]
        assert v["report"]["metrics"]["labelled_top1_float"] > 0.5
    card = load_card(next((tmp_path / "x86_dev").rglob("mobilenet_v2_my_mobilenet*.json")))
    assert card.provenance.state_dict.net == "export.sources.nets:mobilenet_v2"
    assert card.provenance.state_dict.num_classes == 1000
    assert card.labels is not None and card.labels.first == 1 and card.inputs[0].color == "RGB"


def _five_class(root: Path, model_dir: Path, name: str) -> Path:
    """The real MobileNetV2 with its head cut to the first 5 ImageNet classes, as a training checkpoint."""
    sd = torch.load(model_dir / MOBILENET, weights_only=True)
    sd = {f"module.{k}": (v[:5] if k.startswith("classifier.1.") else v) for k, v in sd.items()}
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd, "epoch": 3}, root / name)
    return root / name


def test_classes_from_the_weights_and_labels_from_the_data_or_a_labels_file(tmp_path, model_dir):
    w = _five_class(tmp_path / "w", model_dir, "five.pth")
    with pytest.raises(UserInputError, match="has 5 classes.*five.labels.txt"):
        prepare_user_source("classifier", w, tmp_path / "work", 640)
    data = tmp_path / "data"
    for cls in ("tench", "goldfish", "white_shark", "tiger_shark", "hammerhead"):
        (data / cls).mkdir(parents=True)
    onnx = prepare_user_source("classifier", w, tmp_path / "work", 640, data)  # recognised from the keys
    card = load_card(onnx.with_suffix(".json"))
    assert card.outputs[0].shape[-1] == 5 and card.labels.first == 0
    labels = (onnx.parent / card.labels.file).read_text().split()
    assert labels == ["goldfish", "hammerhead", "tench", "tiger_shark", "white_shark"]  # sorted, as ImageFolder
    (w.parent / "five.labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(UserInputError, match="five.labels.txt lists 3 class.*5 outputs"):
        prepare_user_source("classifier", w, tmp_path / "work", 640, data)


def test_state_dict_that_does_not_fit_names_file_and_first_key(tmp_path, model_dir):
    w = model_dir / MOBILENET
    with pytest.raises(UserInputError) as e:
        prepare_user_source("classifier", Path(f"mobilenet_v3_small:{w}"), tmp_path, 640)
    assert str(w) in str(e.value) and "key 'features.0.0.weight' has shape (32, 3, 3, 3)" in str(e.value)
    sd = torch.load(w, weights_only=True)
    sd["features.99.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(UserInputError, match="extra.pth does not fit mobilenet_v2: unexpected key 'features.99"):
        prepare_user_source("classifier", Path(f"mobilenet_v2:{tmp_path / 'extra.pth'}"), tmp_path, 640)
    del sd["features.99.weight"], sd["features.3.conv.1.0.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(UserInputError, match="missing key 'features.3.conv.1.0.weight'"):
        prepare_user_source("classifier", Path(f"mobilenet_v2:{tmp_path / 'missing.pth'}"), tmp_path, 640)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserInputError, match="junk.pth cannot be read as a PyTorch state dict"):
        prepare_user_source("classifier", tmp_path / "junk.pth", tmp_path, 640)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="not those of a known network"):
        prepare_user_source("classifier", tmp_path / "other.pth", tmp_path, 640)
    with pytest.raises(UserInputError, match="minifasnet is a liveness network, not a classifier"):
        prepare_user_source("classifier", model_dir / "antispoof/minifasnet_v2_scale2.7_80x80.pth", tmp_path, 640)


def test_minifasnet_state_dict_is_a_liveness_source(tmp_path, model_dir):
    onnx = prepare_user_source("liveness", model_dir / "antispoof/minifasnet_v1se_scale4.0_80x80.pth", tmp_path, 640)
    card = load_card(onnx.with_suffix(".json"))
    assert card.task == "liveness" and card.face_crop.crop_scale == 4.0 and card.inputs[0].shape == (1, 3, 80, 80)
    shutil.copy(model_dir / "antispoof/minifasnet_v2_scale2.7_80x80.pth", tmp_path / "antispoof.pth")
    with pytest.raises(UserInputError, match="crop scale is read from its file name"):
        prepare_user_source("liveness", tmp_path / "antispoof.pth", tmp_path, 640)


def test_unknown_state_dict_source_from_the_cli_writes_nothing(byo, tmp_path, capsys):
    _, key = byo
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    out = tmp_path / "out"
    out.mkdir()
    code = export_main(["build", "--profile", str(ROOT / "firmware_configs/x86_dev.toml"), "--out", str(out), "--key",
                        str(key), "--only", "classifier", "--source", f"classifier={tmp_path / 'other.pth'}"])
    err = capsys.readouterr().err
    assert code != 0 and "not those of a known network (mobilenet_v2" in err and "Traceback" not in err
    assert not any(out.iterdir())


def test_one_user_model_replaces_both_built_in_liveness_models(tmp_path, model_dir):
    from export.build.pipeline import role_sources
    from export.build.user_inputs import UserInputs, apply_user_inputs

    built_in = role_sources(("liveness",))
    assert len(built_in) == 2
    user = UserInputs(sources={"liveness": model_dir / "antispoof/minifasnet_v2_scale2.7_80x80.pth"})
    sources, data = apply_user_inputs(built_in, user, tmp_path)
    (s,) = sources
    assert s.role == "liveness" and s.path.suffix == ".onnx" and not s.is_torch and data == {}
    assert load_card(s.path.with_suffix(".json")).face_crop.crop_scale == 2.7
