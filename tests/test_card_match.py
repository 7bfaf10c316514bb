"""A card that contradicts its model file is refused when the two meet, before any frame."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge.card_match import check_card_matches
from edge.cards import ModelCard, load_card
from edge.engines import load_engine
from edge.errors import ModelCardError
from edge.registry import _CARD_DIR

RUNNABLE = [p for p in sorted(_CARD_DIR.glob("*.json")) if load_card(p).format in ("onnx", "tflite")]


@pytest.mark.parametrize("card_file", RUNNABLE, ids=lambda p: p.stem)
def test_every_registry_card_matches_its_model(card_file, model_dir):
    card = load_card(card_file)
    with load_engine(model_dir / card.file) as engine:
        check_card_matches(card, engine)


def _card(model_dir, name: str, **input_changes) -> dict:
    doc = json.loads((_CARD_DIR / f"{name}.json").read_text())
    doc["file"] = str(model_dir / doc["file"])
    doc["inputs"][0].update(input_changes)
    return doc


@pytest.mark.parametrize("name, changes, needle", [
    # uint8 MobileNet described as float32 with identity normalisation: 0..255 into a model that represents -1..1
    ("mobilenet_v2_1.0_224_quant", {"dtype": "float32"}, "represents [-1, 0.992]"),
    # a float ONNX model described as taking raw uint8 pixels
    ("sface_2021dec_fp32", {"dtype": "uint8"}, "not quantised"),
    # another input size than the file's
    ("mobilenet_v2_1.0_224_quant", {"shape": [1, 160, 160, 3]}, "contradicts the model's [1, 224, 224, 3]"),
])
def test_a_contradicting_card_is_refused_naming_card_and_field(model_dir, name, changes, needle):
    doc = _card(model_dir, name, **changes)
    card = ModelCard.from_dict(doc, origin="edited.json")
    with load_engine(doc["file"]) as engine, pytest.raises(ModelCardError) as err:
        check_card_matches(card, engine)
    assert needle in str(err.value) and repr(name) in str(err.value) and repr(doc["inputs"][0]["name"]) in str(err.value)


def test_edge_run_refuses_the_float32_card_on_a_uint8_model(model_dir, data_dir, tmp_path):
    card = tmp_path / "mobilenet.json"
    card.write_text(json.dumps(_card(model_dir, "mobilenet_v2_1.0_224_quant", dtype="float32")))
    image = next(iter(sorted((data_dir / "imagenet_samples").rglob("*.jp*g"))))
    proc = subprocess.run([sys.executable, "-m", "edge", "run", str(card), str(image)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "dtype float32" in proc.stderr and "Traceback" not in proc.stderr
    assert "abaya" not in proc.stdout and proc.stdout.strip() == ""  # no confident wrong answer printed
