"""Device profiles: every shipped profile parses; typos and wrong types are named."""

from pathlib import Path

import pytest

from edge.errors import ProfileError
from edge.profile import load_profile, profiles_dir

PROFILES = sorted(profiles_dir().glob("*.toml"))


def test_profiles_are_shipped():
    names = {p.stem for p in PROFILES}
    assert {"rpi4", "rpi5", "jetson_nano", "jetson_orin_nano", "x86_dev"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_parses(path):
    prof = load_profile(path)
    assert prof.name == path.stem
    assert prof.cpu.cores >= 1 and prof.compute.peak_gflops_fp32 > 0
    assert 0 < prof.thresholds.target_far < 0.1
    assert prof.runtime.backend in ("onnxruntime", "litert")


def _write(tmp_path, text):
    p = tmp_path / "board.toml"
    p.write_text(text)
    return p


BASE = open(profiles_dir() / "rpi4.toml").read()


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("threads = 4", "thread = 4"), r"unknown key 'thread' in \[runtime\] \(did you mean 'threads'\?\)"),
    (lambda t: t.replace("cores = 4", 'cores = "four"'), r"\[cpu\] cores must be int"),
    (lambda t: t.replace('name = "rpi4"\n', ""), "missing required key 'name'"),
    (lambda t: t + "\n[gpu]\nmodel = 'x'\n", r"unknown key 'gpu'"),
    (lambda t: t.replace("[cpu]", "[cpu"), "invalid TOML"),
])
def test_profile_errors_name_the_key(tmp_path, edit, match):
    with pytest.raises(ProfileError, match=match):
        load_profile(_write(tmp_path, edit(BASE)))


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "nope.toml")
