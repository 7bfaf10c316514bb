"""Property-based fuzzing of what the product reads: cards, profiles, images, command-line values.

Each property says: whatever the input, the reader either accepts it or raises the product's own
error (naming the file/field/option); never another exception, never a hang. The default example
count keeps CI fast; ``EDGE_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_inputs.py`` is the long mode.
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.cards import ModelCard
from edge.cli import argtypes
from edge.errors import ImageLoadError, ModelCardError, ProfileError
from edge.imageio import load_image
from edge.profile import load_profile, profiles_dir
from edge.registry import _CARD_DIR
from tests._fuzz import fuzz_settings, json_paths, json_values

FUZZ = fuzz_settings()


def _set(doc, path, value):
    doc = copy.deepcopy(doc)
    target = doc
    for k in path[:-1]:
        target = target[k]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()
CARDS = sorted(_CARD_DIR.glob("*.json"))


@FUZZ
@given(data=st.data())
def test_a_mutated_card_is_accepted_or_refused_by_name(data):
    card_file = data.draw(st.sampled_from(CARDS))
    doc = json.loads(card_file.read_text())
    path = data.draw(st.sampled_from(list(json_paths(doc))))
    value = data.draw(json_values | st.just(_DELETE))
    mutated = _set(doc, path, value)
    try:
        card = ModelCard.from_dict(mutated, origin=card_file.name)
    except ModelCardError as e:
        assert card_file.name in str(e) or repr(doc["name"]) in str(e)
        return
    # accepted: every input it describes has a usable, bounded shape and positive scales
    for spec in card.inputs:
        assert all(d is None or isinstance(d, str) or 1 <= d <= 16384 for d in spec.shape)
        assert all(s > 0 for s in spec.std)


PROFILES = sorted(profiles_dir().glob("*.toml"))
toml_scalars = (st.integers(-10**6, 10**6).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(
    lambda f: {float("inf"): "inf", float("-inf"): "-inf"}.get(f, "nan" if f != f else repr(f)))
    | st.text(max_size=8).map(json.dumps) | st.sampled_from(["true", "[]", "[1, 2]", "{}", '["cpu"]', "0"]))


@FUZZ
@given(data=st.data())
def test_a_profile_with_one_value_changed_is_accepted_or_refused_by_name(tmp_path_factory, data):
    src = data.draw(st.sampled_from(PROFILES))
    lines = src.read_text().splitlines()
    assignable = [i for i, line in enumerate(lines) if "=" in line and not line.lstrip().startswith("#")]
    i = data.draw(st.sampled_from(assignable))
    key = lines[i].split("=", 1)[0]
    lines[i] = f"{key}= {data.draw(toml_scalars)}"
    path = tmp_path_factory.mktemp("profile") / "board.toml"
    path.write_text("\n".join(lines) + "\n")
    try:
        prof = load_profile(path)
    except ProfileError as e:
        assert "board.toml" in str(e)
        return
    assert 1 <= prof.runtime.threads <= 256 and prof.cpu.cores >= 1


def test_non_utf8_profile_names_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(PROFILES[0].read_bytes() + b"\n# caf\xe9\n")
    with pytest.raises(ProfileError, match="latin1.toml"):
        load_profile(path)


@FUZZ
@given(blob=st.binary(max_size=2048), header=st.sampled_from([b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM"]))
def test_arbitrary_bytes_as_an_image(tmp_path_factory, blob, header):
    path = tmp_path_factory.mktemp("img") / "x.jpg"
    path.write_bytes(header + blob)
    try:
        image = load_image(path)
    except ImageLoadError as e:
        assert "x.jpg" in str(e)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_a_named_pipe_is_refused_at_once(tmp_path):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(fifo)  # would block for ever if it were opened for a blocking read


PARSERS = {"threads": argtypes.threads, "port": argtypes.port, "fraction": argtypes.fraction(),
           "count": argtypes.integer(1, 100), "timeout": argtypes.number(0, low_open=True), "size": argtypes.size_wxh}


@FUZZ
@given(name=st.sampled_from(sorted(PARSERS)), text=st.text(max_size=12) | st.integers().map(str)
       | st.sampled_from(["nan", "inf", "-1", "0", "1e400", "99999", "100000x100000", "5x0"]))
def test_command_line_values(name, text):
    try:
        value = PARSERS[name](text)
    except argparse.ArgumentTypeError as e:
        assert str(e)  # argparse prints it after the option's name
        return
    if name == "threads":
        assert 1 <= value <= argtypes.MAX_THREADS
    elif name == "port":
        assert 0 <= value <= 65535
    elif name == "fraction":
        assert 0.0 <= value <= 1.0
    elif name == "timeout":
        assert value > 0 and np.isfinite(value)
    elif name == "size":
        assert all(1 <= v <= argtypes.MAX_SIDE for v in value)


@pytest.mark.parametrize("argv, option", [
    (["run", "mobilenet_v2_1.0_224_quant", "x.jpg", "--threads", "100000"], "--threads"),
    (["detect", "--source", "synthetic", "--health-port", "99999"], "--health-port"),
    (["detect", "--source", "synthetic", "--nms-iou", "5"], "--nms-iou"),
    (["unlock", "enroll", "bob", "-k", "-1"], "--samples"),
    (["bench", "--threads", "0"], "--threads"),
])
def test_bad_cli_values_exit_2_naming_the_option(capsys, argv, option):
    from edge.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


def test_unlock_list_reads_its_profile(tmp_path, monkeypatch, capsys):
    from edge.cli import main

    monkeypatch.setenv("EDGE_UNLOCK_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("EDGE_UNLOCK_KEY", str(tmp_path / "key"))
    assert main(["unlock", "list", "--profile", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
