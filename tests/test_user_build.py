"""edge-export build with the user's own model and data (export/build/user_inputs.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from export.build.user_inputs import (UserInputError, UserInputs, coco_json_to_yolo, load_build_file,  # noqa: E402
                                      parse_role_paths)
from export.bundle.keys import generate_keypair  # noqa: E402
from export.cli import main as export_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def user_data(tmp_path_factory, data_dir, model_dir):
    """A YOLO folder of 24 coco128 images and a class-folder set of 40 labelled ImageNet images."""
    root = tmp_path_factory.mktemp("byo")
    det = root / "det"
    (det / "images").mkdir(parents=True)
    (det / "labels").mkdir()
    for img in sorted((data_dir / "coco128" / "images").iterdir())[:24]:
        shutil.copy(img, det / "images")
        lab = data_dir / "coco128" / "labels" / f"{img.stem}.txt"
        if lab.is_file():
            shutil.copy(lab, det / "labels")
    names = (model_dir / "classification" / "imagenet_labels_1001.txt").read_text().splitlines()
    with open(data_dir / "imagenet_samples" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:40]
    for r in rows:  # folder named after the class (first synonym, spaces as underscores)
        d = root / "cls" / names[int(r["class_index"]) + 1].split(",")[0].replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "imagenet_samples" / r["file"], d)
    priv, _ = generate_keypair(root / "keys")
    return root, priv


def test_user_ultralytics_model_and_labelled_folder_build_end_to_end(user_data, tmp_path, capsys):
    root, key = user_data
    bf = tmp_path / "build.toml"
    bf.write_text(f'profile = "{ROOT / "firmware_configs/x86_dev.toml"}"\nout = "out"\nkey = "{key}"\n'
                  'only = ["classifier", "detector"]\nformats = ["onnx_fp32", "onnx_int8"]\nimgsz = 320\n'
                  'max_calibration = 8\n[source]\ndetector = "yolo11n.yaml"\n'
                  f'[data]\ndetector = "{root / "det"}"\nclassifier = "{root / "cls"}"\n')
    code = export_main(["build", "--build-file", str(bf), "--no-fallback", "-q"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "x86_dev" / "report.json").read_text())
    cls, det = report["models"]
    assert det["source"] == "yolo11n_320" and det["licence"]["spdx"] == "AGPL-3.0-only"
    assert "user detection data" in det["splits"]["note"] and "user labelled data" in cls["splits"]["note"]
    n = {k: cls["splits"][k]["files"] for k in ("calibration", "selection", "report")}
    assert sum(n.values()) == 40 and min(n.values()) > 0
    for v in cls["variants"]:  # labelled top-1 on the report split, from the folder names
        assert v["report"]["metrics"]["labelled_images"] == n["report"]
        assert v["report"]["metrics"]["labelled_top1_float"] > 0.5
    for v in det["variants"]:
        assert v["report"]["metrics"]["images"] == det["splits"]["report"]["files"]
    assert (tmp_path / "out" / "x86_dev" / "report.md").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--source", "detector"], "expected ROLE=PATH"),
    (["--source", "wizard=x.onnx"], "unknown role 'wizard'"),
    (["--data", "face_detector=/"], "user data is supported for classifier, detector, face_embedder"),
    (["--source", "classifier=/nonexistent/m.onnx"], "no such file or folder"),
])
def test_bad_user_inputs_are_clear_errors(argv, message, user_data, tmp_path, capsys):
    _, key = user_data
    code = export_main(["build", "--profile", str(ROOT / "firmware_configs/x86_dev.toml"), "--out", str(tmp_path),
                        "--key", str(key), *argv])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_onnx_source_without_card_and_role_mismatch(tmp_path, model_dir):
    from export.build.user_inputs import prepare_user_source

    bare = tmp_path / "m.onnx"
    bare.write_bytes(b"an unknown model: no built-in card has this sha256")
    with pytest.raises(UserInputError, match="no card beside it"):
        prepare_user_source("detector", bare, tmp_path, 320)
    from edge.registry import get_card

    (tmp_path / "m.json").write_text(get_card("yolox_nano_416").to_json())
    with pytest.raises(UserInputError, match="not a classifier"):
        prepare_user_source("classifier", bare, tmp_path, 320)


def test_build_file_errors_and_paths(tmp_path):
    bf = tmp_path / "b.toml"
    bf.write_text('profil = "x"\n')
    with pytest.raises(UserInputError, match="unknown key.*profil"):
        load_build_file(bf)
    bf.write_text('imgsz = "big"\n')
    with pytest.raises(UserInputError, match="imgsz must be an integer"):
        load_build_file(bf)
    bf.write_text('[source]\ndetector = "m/best.pt"\n')
    assert load_build_file(bf)["source"]["detector"] == tmp_path / "m" / "best.pt"
    assert parse_role_paths(["detector=a.pt"], "--source") == {"detector": Path("a.pt")}
    with pytest.raises(UserInputError, match="multiple of 32"):
        UserInputs(imgsz=100)


def test_coco_json_becomes_yolo_labels(tmp_path, data_dir):
    import cv2

    img = data_dir / "coco128" / "images" / sorted(p.name for p in (data_dir / "coco128" / "images").iterdir())[0]
    h, w = cv2.imread(str(img)).shape[:2]
    (tmp_path / "images").mkdir()
    shutil.copy(img, tmp_path / "images")
    doc = {"images": [{"id": 7, "file_name": img.name, "width": w, "height": h}],
           "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
           "annotations": [{"image_id": 7, "category_id": 18, "bbox": [0, 0, w / 2, h / 4]},
                           {"image_id": 7, "category_id": 3, "bbox": [w / 2, h / 2, w / 2, h / 2], "iscrowd": 1}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    out = coco_json_to_yolo(tmp_path / "ann.json", None, tmp_path / "yolo")
    assert (out / "classes.txt").read_text().split() == ["car", "dog"]  # category ids in order: 3, 18
    (line,) = (out / "labels" / f"{img.stem}.txt").read_text().splitlines()  # the crowd box is left out
    assert line.split() == ["1", "0.250000", "0.125000", "0.500000", "0.250000"]
    doc["images"][0]["file_name"] = "missing.jpg"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(UserInputError, match="missing.jpg"):
        coco_json_to_yolo(tmp_path / "bad.json", None, tmp_path / "yolo2")
