"""Device profiles: every shipped profile parses; typos and wrong types are named."""

from pathlib import Path

import pytest

from edge.errors import ProfileError
from edge.profile import load_profile, profiles_dir

PROFILES = sorted(profiles_dir().glob("*.toml"))


def test_profiles_are_shipped():
    names = {p.stem for p in PROFILES}
    assert {"rpi4", "rpi5", "rpi_zero_2w", "jetson_nano", "jetson_orin_nano", "x86_dev"} <= names


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
    (lambda t: t.replace("cores = 4", 'cores = "four"'), r"\[cpu\] cores must be int, got str"),
    (lambda t: t.replace("fps = 30", "fps = [30]"), r"board.toml: \[camera\] fps must be int, got array"),
    (lambda t: t.replace("threads = 4 ", "threads = 100000 "), r"\[runtime\] threads.*<= 256"),
    (lambda t: t.replace("nms_iou = 0.45", "nms_iou = 5"), r"\[thresholds\] nms_iou.*<= 1"),
    (lambda t: t.replace("k = 3 ", "k = -1 "), r"\[unlock\] k.*>= 1"),
    (lambda t: t.replace("n = 5", "n = 2"), r"\[unlock\].*n \(2\) must be >= k \(3\)"),
    (lambda t: t.replace('liveness = "auto"', 'liveness = "maybe"'), r"\[unlock\] liveness.*'auto'"),
    (lambda t: t.replace('name = "rpi4"', 'name = "../../x"'), r"top level name must be a plain file name.*--out"),
    (lambda t: t.replace("[compute]", "[compte]"), r"unknown key 'compte' in top level \(did you mean 'compute'\?\)"),
    (lambda t: t.replace('"cpu"]', '"gpu"]'), r"\[runtime\] providers.*'cpu'"),
    (lambda t: t.replace('name = "rpi4"\n', ""), "missing required key 'name'"),
    (lambda t: t + "\n[gpu]\nmodel = 'x'\n", r"unknown key 'gpu'"),
    (lambda t: t.split("[compute]")[0] + "[thermal]" + t.split("[thermal]")[1], r"missing required table \[compute\]"),
    (lambda t: t.replace("[cpu]", "cpu = 3\n[cpu_]"), r"\[cpu\] must be table, got int"),
    (lambda t: t.replace("[cpu]", "[cpu"), "invalid TOML"),
])
def test_profile_errors_name_the_key(tmp_path, edit, match):
    with pytest.raises(ProfileError, match=match):
        load_profile(_write(tmp_path, edit(BASE)))


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "nope.toml")


def test_non_utf8_profile(tmp_path):
    p = tmp_path / "latin.toml"
    p.write_bytes(BASE.replace("Raspberry Pi 4", "Raspberry Pi 4 \u00e9").encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin.toml: not UTF-8"):
        load_profile(p)


@pytest.mark.parametrize("name, stem", [("rpi4", "rpi4"), ("rpi-zero-2w", "rpi_zero_2w"), ("rpi5", "rpi5"),
                                        ("jetson-nano", "jetson_nano"), ("jetson-orin-nano", "jetson_orin_nano"),
                                        ("x86", "x86_dev")])
def test_load_by_board_name(name, stem):
    prof = load_profile(name)
    assert prof.name == stem and Path(prof.path).name == f"{stem}.toml"
    assert prof.unlock.liveness == "auto" and prof.unlock.k <= prof.unlock.n


def test_unknown_board_name_suggests():
    with pytest.raises(ProfileError, match=r"'rpi6'.*did you mean 'rpi5'"):
        load_profile("rpi6")


def test_profile_is_frozen():
    prof = load_profile("rpi4")
    with pytest.raises(AttributeError):
        prof.runtime.threads = 1000  # type: ignore[misc]


def test_threads_clamped_with_note():
    from edge.profile import runtime_threads
    prof = load_profile("jetson-orin-nano")
    assert runtime_threads(prof, available=64) == (6, None)
    n, note = runtime_threads(prof, available=2)
    assert n == 2 and "clamped to 2" in note


def test_every_shipped_key_is_declared():
    """Nothing in a shipped profile is ignored: every table and key is a schema field."""
    import sys
    tomllib = __import__("tomllib" if sys.version_info >= (3, 11) else "tomli")
    from edge.profile import _TABLES
    for path in PROFILES:
        data = tomllib.loads(path.read_text())
        for table, value in data.items():
            if isinstance(value, dict):
                assert set(value) <= set(_TABLES[table].__struct_fields__), (path, table)


def test_profiles_ship_in_the_wheel(tmp_path):
    """`--profile rpi4` works from an installed wheel: the TOML files are package data."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("edgesight-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert {p.stem for p in (site / "edge" / "firmware_configs").glob("*.toml")} == {p.stem for p in PROFILES}
    code = ("import edge.profile as m; p = m.load_profile('rpi4'); "
            "assert m.__file__.startswith(%r), m.__file__; print(p.path)" % str(site))
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith(str(site / "edge" / "firmware_configs"))


def test_export_profiles_lists_and_checks(tmp_path, capsys):
    from export.cli import main

    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for stem in ("rpi4", "rpi5", "rpi_zero_2w", "jetson_nano", "jetson_orin_nano", "x86_dev"):
        assert f"\n{stem} " in out
    assert main(["profiles", "--check", str(PROFILES[0])]) == 0
    bad = _write(tmp_path, BASE.replace("nms_iou = 0.45", "nms_iou = [0.45]"))
    assert main(["profiles", "--check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "board.toml: [thresholds] nms_iou must be float, got array" in err and "Traceback" not in err


def test_name_cannot_escape_out(tmp_path, capsys):
    """`name = "../../x"` used to write the bundle outside --out; now the build refuses the profile."""
    from export.cli import main

    bad = _write(tmp_path, BASE.replace('name = "rpi4"', 'name = "../../x"'))
    out = tmp_path / "a" / "b" / "bundles"
    assert main(["build", "--profile", str(bad), "--out", str(out), "--key", str(tmp_path / "k.key")]) == 2
    assert "must be a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not out.exists()


class _FakeOrt:
    """Follows onnxruntime's API: providers may be names or (name, options-dict) tuples."""

    class GraphOptimizationLevel:
        ORT_DISABLE_ALL = ORT_ENABLE_BASIC = ORT_ENABLE_EXTENDED = ORT_ENABLE_ALL = 0

    class SessionOptions:
        def add_session_config_entry(self, k, v):
            pass

    def __init__(self, available):
        self.available, self.calls = available, []

    def get_available_providers(self):
        return list(self.available)

    def InferenceSession(self, data, sess_options=None, providers=None):  # noqa: N802
        self.calls.append(providers)
        raise RuntimeError("fake session: stop after provider selection")


@pytest.mark.parametrize("available, expect", [
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "trt"),
    (["CPUExecutionProvider"], "cpu"),
])
def test_jetson_profile_drives_ort_providers(tmp_path, monkeypatch, caplog, available, expect):
    import edge.engines.ort as eo
    from tests._tiny_onnx import conv_net, save

    prof = load_profile("jetson-orin-nano")
    fake = _FakeOrt(available)
    monkeypatch.setattr(eo, "_import_ort", lambda: fake)
    monkeypatch.setattr(eo, "_warned_fallback", set())
    model = tmp_path / "m.onnx"
    save(conv_net(), model)
    opts = eo.profile_provider_options(prof.runtime)
    for _ in range(2):
        with pytest.raises(Exception, match="fake session"):
            eo.OnnxRuntimeEngine(model, providers=prof.runtime.providers, provider_options=opts)
    chosen = fake.calls[0]
    if expect == "trt":
        name, o = chosen[0]
        assert name == "TensorrtExecutionProvider"
        assert o == {"trt_engine_cache_enable": "True", "trt_engine_cache_path": prof.runtime.trt_cache_dir,
                     "trt_fp16_enable": "True"}
        assert chosen[1] == ("CUDAExecutionProvider", {"device_id": "0"}) and chosen[2] == "CPUExecutionProvider"
    else:
        assert chosen == ["CPUExecutionProvider"]
        warns = [r for r in caplog.records if "not available" in r.getMessage()]
        assert len(warns) == 1  # one warning for two sessions
