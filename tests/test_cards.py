"""Typed model cards (schema 2): every part validated by msgspec, errors naming the card and the
field; schema-1 cards (``extra`` dict) still read; every registry card round-trips."""

from __future__ import annotations

import json

import pytest

from edge.cards import CARD_SCHEMA, DECODER_NAMES, Decoding, ModelCard, Thresholds, load_card
from edge.errors import ModelCardError
from edge.registry import builtin_cards, get_card


def _yolox() -> dict:
    return get_card("yolox_nano_416").to_dict()


@pytest.mark.parametrize("name", sorted(builtin_cards()))
def test_registry_cards_are_schema_2_and_round_trip(name):
    card = get_card(name)
    assert card.schema == CARD_SCHEMA == 2
    assert ModelCard.from_json(card.to_json()) == card
    assert "extra" not in card.to_dict()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra={"decoder": "yolox"}), r"unknown field\(s\) \['extra'\]"),
    (lambda d: d["thresholds"].update(scor=0.3), r"card.json: field 'thresholds' of ModelCard: .*unknown field `scor`"),
    (lambda d: d["thresholds"].update(score="high"), r"field 'thresholds'.*Expected `float \| null`, got `str`.*thresholds.score"),
    (lambda d: d["thresholds"].update(nms_iou=4.5), r"field 'thresholds'.*<= 1.*thresholds.nms_iou"),
    (lambda d: d["decoding"].update(decoder="yolov5"), r"field 'decoding'.*decoding.decoder"),
    (lambda d: d["decoding"].update(strides=[8, "x"]), r"field 'decoding'.*decoding.strides\[1\]"),
    (lambda d: d.update(face_crop={"crop_scale": -1}), r"field 'face_crop'.*> 0"),
    (lambda d: d.update(macs={"total": 5}), r"field 'macs'.*missing required field `by_precision`"),
    (lambda d: d.update(macs={"total": 5, "by_precision": {"int4": 5}, "input_shape": [1]}), r"field 'macs'.*int4"),
    (lambda d: d.update(provenance={"variant": "x", "made_by": "me"}), r"field 'provenance'.*unknown field `made_by`"),
    (lambda d: d.update(schema=3), r"field 'schema'.*<= 2"),
])
def test_unknown_or_mistyped_fields_name_the_card_and_the_field(tmp_path, change, message):
    data = _yolox()
    change(data)
    p = tmp_path / "card.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ModelCardError, match=message):
        load_card(p)


def test_schema_1_cards_are_read_with_their_extra_moved_to_typed_parts(tmp_path):
    data = _yolox()
    for key in ("decoding", "macs"):
        del data[key]
    data.update(schema=1, extra={
        "decoder": "yolox", "strides": [8, 16, 32], "variant": "onnx_int8", "io_dtype": "float32",
        "derived_from": {"name": "yolox_nano_416", "sha256": "a" * 64}, "converter": "torch.onnx 2.5",
        "gate": {"passed": True, "metrics": {"map50_drop": 0.01}}, "kept_float": ["/head/Conv"],
        "macs": {"int8": 1000, "fp32": 24}, "rewrites": [{"name": "prelu", "nodes": 2, "max_abs_diff": 1e-6}]})
    card = ModelCard.from_dict(data, origin="old.json")
    assert card.schema == 2
    assert card.decoding == Decoding(decoder="yolox", strides=(8, 16, 32))
    assert card.provenance.variant == "onnx_int8" and card.provenance.derived_from.name == "yolox_nano_416"
    assert card.gate.passed is True and card.gate.metrics == {"map50_drop": 0.01}
    assert card.provenance.kept_float == ("/head/Conv",) and card.provenance.rewrites[0].nodes == 2
    assert (card.macs.total, card.macs.precision) == (1024, "int8")
    assert card.thresholds == Thresholds(score=0.25, nms_iou=0.45)  # the schema-1 dict had the same keys
    again = ModelCard.from_json(card.to_json())  # written back as schema 2
    assert again == card and "extra" not in json.loads(card.to_json())


@pytest.mark.parametrize("extra, message", [
    ({"decoder": "yolox", "mystery": 1}, r"old.json: unknown key\(s\) extra.mystery in a schema-1 card"),
    ({"decoder": "yolox", "strides": "8,16"}, r"old.json: field 'decoding'.*decoding.strides"),
    ("not a dict", r"field 'extra' \(schema 1\) must be an object"),
])
def test_schema_1_cards_with_unknown_or_bad_extra_are_refused(extra, message):
    data = _yolox()
    del data["decoding"]
    data.update(schema=1, extra=extra)
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_dict(data, origin="old.json")


def test_registry_cards_of_schema_1_on_disk_still_load(tmp_path):
    """A card exactly as the previous version wrote it (git history of yolox_nano_416.json)."""
    data = _yolox()
    del data["macs"]
    data["extra"] = data.pop("decoding")
    data["schema"] = 1
    p = tmp_path / "yolox_nano_416.json"
    p.write_text(json.dumps(data, indent=2))
    card = load_card(p)
    assert card.decoding.decoder == "yolox" and card.macs is None


def test_a_dict_given_in_code_is_validated_into_its_part():
    card = get_card("yolox_nano_416")
    import dataclasses

    assert dataclasses.replace(card, thresholds={"score": 0.5}).thresholds == Thresholds(score=0.5)
    with pytest.raises(ModelCardError, match="'yolox_nano_416'.*field 'thresholds'"):
        dataclasses.replace(card, thresholds={"score": 2})


def test_decoder_names_are_the_decoders():
    from edge.detect.decoders import DECODERS

    assert set(DECODER_NAMES) == set(DECODERS)
