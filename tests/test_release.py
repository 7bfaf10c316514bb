"""Releases: one loader (``edge.release``) for every consumer, bounded archive extraction, ``edge info``.

One real ``edge-export build --profile rpi5`` (all five roles, float TFLite only, about 1.5 minutes
here) is made per session; every consumer then runs from it with no model directory at
all and downloads disabled, so nothing can come from the registry. Tampered copies (one flipped byte
in a model, an altered manifest) are refused by each consumer. Archive bombs are written as
multi-member gzip streams, so a 2 GiB archive costs a few MB to make.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from edge.bundle import MAX_ARCHIVE_BYTES, extract_archive  # noqa: E402
from edge.cli import main as edge_main  # noqa: E402
from edge.errors import (BundleArchiveError, BundleIntegrityError, BundleKeyError, BundleSignatureError,  # noqa: E402
                         ReleaseNotFoundError)
from edge.release import open_release  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "firmware_configs" / "rpi5.toml"
ROLES = "classifier,detector,face_detector,face_embedder,liveness"
#: A person of the deepface set and photos of them (checked to hold one live, good face each).
ENROL = ("img26.jpg", "img27.jpg", "img28.jpg", "img42.jpg", "img43.jpg")
GENUINE, STRANGER = "img44.jpg", "img1.jpg"


# The release every consumer test uses: ``release_build`` in conftest.py (one build per session).


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No model directory, no cache, no downloads: a model can only come from the release."""
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv("EDGE_MODEL_DIR", str(empty))
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGE_OFFLINE", "1")
    return empty


@pytest.fixture
def unlock_state(monkeypatch, tmp_path):
    for var, name in (("EDGE_UNLOCK_STORE", "store"), ("EDGE_UNLOCK_KEY", "unlock.key"),
                      ("EDGE_UNLOCK_AUDIT", "audit.jsonl"), ("EDGE_UNLOCK_STATE", "state")):
        monkeypatch.setenv(var, str(tmp_path / "unlock" / name))
    for var in ("EDGE_UNLOCK_SOURCE", "EDGE_UNLOCK_LIVENESS_DIR", "EDGE_UNLOCK_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "unlock"


def _tampered(src: Path, dst: Path, what: str) -> Path:
    """A copy of the release (hard links) with one file changed: one flipped byte, or manifest.json edited."""
    shutil.copytree(src, dst, copy_function=os.link)
    if what == "flip":
        target = next(p for p in sorted(dst.rglob("*.tflite")))
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
    else:
        target = dst / "manifest.json"
        m = json.loads(target.read_text())
        m["profile"] = "rpi4"
        data = (json.dumps(m, indent=2, sort_keys=True) + "\n").encode()
    target.unlink()  # break the hard link: the original stays intact
    target.write_bytes(bytes(data))
    return target


def _tar(src: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, arcname=f"{src.name}/{p.relative_to(src).as_posix()}", recursive=False)
    return archive


@pytest.fixture(params=["flip", "manifest"])
def tampered(request, release_build, tmp_path):
    d = tmp_path / "bad" / "rpi5"
    changed = _tampered(release_build["dir"], d, request.param)
    return d, changed.relative_to(d).as_posix()


# -- the loader ---------------------------------------------------------------------------------

def test_release_from_archive_and_defaults(release_build, monkeypatch, tmp_path):
    rel = open_release(release_build["tar"], release_build["pub"])
    assert rel.profile_name == "rpi5"
    assert rel.info.files == sum(p.is_file() for p in release_build["dir"].rglob("*")) - 2  # - manifest, sig
    assert set(rel.roles) == set(ROLES.split(","))
    assert len(rel.models("liveness")) == 2
    assert rel.path.is_dir() and oct(rel.path.parent.stat().st_mode & 0o777) == "0o700"
    assert rel.model("face_embedder").card.thresholds.cosine_at_far["0.001"] > 0
    # the defaults: the active release under EDGE_RELEASES_DIR, the key from EDGE_TRUST
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "current").symlink_to(release_build["dir"])
    monkeypatch.setenv("EDGE_RELEASES_DIR", str(releases))
    monkeypatch.setenv("EDGE_TRUST", str(release_build["pub"]))
    rel = open_release()
    assert rel.source == releases / "current" and rel.path == release_build["dir"].resolve()
    monkeypatch.setenv("EDGE_BUNDLE", str(release_build["tar"]))
    assert open_release().source == release_build["tar"]


def test_no_release_says_what_to_do(monkeypatch, tmp_path, capsys):
    with pytest.raises(ReleaseNotFoundError) as e:
        open_release()
    for needle in ("--bundle", "EDGE_BUNDLE", "edge-export build", "/no-releases/current"):
        assert needle in str(e.value)
    with pytest.raises(ReleaseNotFoundError, match="bundle not found: .*nowhere"):
        open_release(tmp_path / "nowhere", tmp_path / "k.pub")


def test_missing_or_wrong_trusted_key_is_refused(release_build, tmp_path):
    with pytest.raises(BundleKeyError, match="trusted public key not found: .*nokey.pub"):
        open_release(release_build["dir"], tmp_path / "nokey.pub")
    from export.bundle.keys import generate_keypair

    _, other = generate_keypair(tmp_path / "other")
    with pytest.raises(BundleSignatureError, match="not with the given public key"):
        open_release(release_build["dir"], other)


def test_tampered_release_is_refused_naming_the_file(tampered, release_build, tmp_path):
    d, changed = tampered
    with pytest.raises((BundleIntegrityError, BundleSignatureError)) as e:
        open_release(d, release_build["pub"])
    assert e.value.file == changed and changed in str(e.value)
    # the same inside an archive: refused, and nothing extracted is left behind
    monkey_tmp = tmp_path / "t"
    monkey_tmp.mkdir()
    old = tempfile.tempdir
    tempfile.tempdir = str(monkey_tmp)
    try:
        with pytest.raises((BundleIntegrityError, BundleSignatureError)) as e:
            open_release(_tar(d, tmp_path / "bad.tar.gz"), release_build["pub"])
    finally:
        tempfile.tempdir = old
    assert e.value.file == changed
    assert list(monkey_tmp.iterdir()) == []


def test_extra_file_is_refused(release_build, tmp_path):
    d = tmp_path / "x" / "rpi5"
    shutil.copytree(release_build["dir"], d, copy_function=os.link)
    (d / "face_embedder" / "extra.onnx").write_bytes(b"not signed")
    with pytest.raises(BundleIntegrityError, match="not in the signed manifest: face_embedder/extra.onnx"):
        open_release(d, release_build["pub"])


# -- bounded extraction -------------------------------------------------------------------------

def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


def _bomb(path: Path, member_size: int, members: int = 1, chunk: int = 1 << 20) -> Path:
    """A tar.gz of ``members`` files of zeros, written as gzip members (cheap to make, huge to expand)."""
    zchunk = _gz(bytes(chunk))
    with open(path, "wb") as f:
        for i in range(members):
            ti = tarfile.TarInfo(f"rpi5/zeros{i}")
            ti.size = member_size
            f.write(_gz(ti.tobuf(format=tarfile.GNU_FORMAT)))
            full, rest = divmod(member_size, chunk)
            f.write(zchunk * full)
            f.write(_gz(bytes(rest + (-member_size) % 512)))
        f.write(_gz(bytes(1024)))
    return path


def test_archive_bomb_is_refused_before_anything_is_written(tmp_path):
    bomb = _bomb(tmp_path / "bomb.tar.gz", 2 << 30)  # 2 GiB of zeros
    assert bomb.stat().st_size < 4 << 20
    with gzip.open(bomb) as g:  # it really expands: the first member header says 2 GiB, zeros follow
        head = tarfile.TarInfo.frombuf(g.read(512), "utf-8", "surrogateescape")
        assert head.size == 2 << 30 and g.read(1 << 20) == bytes(1 << 20)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleArchiveError, match="declare 2147483648 bytes, more than the limit") as e:
        extract_archive(bomb, dest)
    assert e.value.file == "rpi5/zeros0"
    assert list(dest.iterdir()) == []


def test_many_modest_members_over_the_total_are_refused_from_headers(tmp_path):
    bomb = _bomb(tmp_path / "many.tar.gz", 4 << 20, members=6)  # 24 MiB in 6 members of 4 MiB
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleArchiveError, match="more than the limit of 16777216 bytes") as e:
        extract_archive(bomb, dest, max_bytes=16 << 20)
    assert e.value.file == "rpi5/zeros4"  # the 5th member crosses 16 MiB
    assert list(dest.iterdir()) == []  # refused from the headers: not even the first 4 were written
    assert extract_archive(bomb, dest, max_bytes=32 << 20) == dest / "rpi5"  # within the limits: extracted
    assert sorted(p.name for p in (dest / "rpi5").iterdir()) == [f"zeros{i}" for i in range(6)]
    assert MAX_ARCHIVE_BYTES < 2 << 30


def test_too_many_members_are_refused(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleArchiveError, match="more than 5 members"):
        extract_archive(_bomb(tmp_path / "n.tar.gz", 10, members=6), dest, max_members=5)
    assert list(dest.iterdir()) == []


def test_a_header_that_streams_more_than_the_limit_is_stopped_while_streaming(tmp_path):
    """A GNU long-name record is read by tarfile itself before any member is seen: the stream is bounded."""
    ti = tarfile.TarInfo("././@LongLink")
    ti.type = tarfile.GNUTYPE_LONGNAME
    ti.size = 64 << 20
    p = tmp_path / "longname.tar.gz"
    zchunk = _gz(bytes(1 << 20))
    p.write_bytes(_gz(ti.tobuf(format=tarfile.GNU_FORMAT)) + zchunk * 64 + _gz(bytes(1024)))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleArchiveError, match="refused while streaming"):
        extract_archive(p, dest, max_bytes=1 << 20)
    assert list(dest.iterdir()) == []


def _tar_with(tmp_path: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        ok = tarfile.TarInfo("rpi5/manifest.json")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"{}"))
        tf.addfile(info, io.BytesIO(data) if data else None)
    p = tmp_path / "odd.tar.gz"
    p.write_bytes(buf.getvalue())
    return p


@pytest.mark.parametrize("kind, name, needle", [
    (tarfile.SYMTYPE, "rpi5/link", "not a regular file"),
    (tarfile.LNKTYPE, "rpi5/hard", "not a regular file"),
    (tarfile.FIFOTYPE, "rpi5/fifo", "not a regular file"),
    (tarfile.CHRTYPE, "rpi5/dev", "not a regular file"),
    (tarfile.REGTYPE, "../evil", "unsafe member path"),
    (tarfile.REGTYPE, "/etc/evil", "unsafe member path"),
])
def test_non_regular_or_escaping_members_are_refused(tmp_path, kind, name, needle):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    data = b"x" if kind == tarfile.REGTYPE else b""
    info.size = len(data)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleArchiveError, match=needle):
        extract_archive(_tar_with(tmp_path, info, data), dest)
    assert list(dest.iterdir()) == []


def test_sparse_member_is_refused(tmp_path):
    raw = bytearray(tarfile.TarInfo("rpi5/sparse").tobuf(format=tarfile.GNU_FORMAT))
    raw[156:157] = tarfile.GNUTYPE_SPARSE  # a GNU sparse member expands beyond its stored size
    raw[148:156] = b" " * 8
    raw[148:155] = f"{sum(raw) & 0o7777777:06o}\0".encode()
    p = tmp_path / "sparse.tar.gz"
    p.write_bytes(_gz(bytes(raw) + bytes(1024)))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleArchiveError, match="not a regular file"):
        extract_archive(p, dest)


# -- every consumer uses only the release ----------------------------------------------------------

@pytest.mark.slow
def test_unlock_enroll_and_verify_use_only_the_release(release_build, offline, unlock_state, data_dir, tmp_path,
                                                       capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ENROL:
        shutil.copy(data_dir / "faces" / "deepface" / name, photos / name)
    rel = ["--bundle", str(release_build["tar"]), "--trust", str(release_build["pub"])]
    assert edge_main(["unlock", "enroll", "alice", "--source", str(photos), "--explain", *rel]) == 0
    out = capsys.readouterr().out
    assert "models from release" in out and "sface_2021dec_fp32_fp32" in out and "enrolled alice" in out
    genuine = str(data_dir / "faces" / "deepface" / GENUINE)
    assert edge_main(["unlock", "verify", "alice", "--source", genuine, "--explain", "--allow-ssh", *rel]) == 0
    out = capsys.readouterr().out
    emb = open_release(release_build["dir"], release_build["pub"]).model("face_embedder").card
    # the threshold is the one re-derived for the shipped variant, read from the release's card
    assert f"threshold {emb.thresholds.cosine_at_far['0.001']:.4f} at FAR 0.001" in out
    assert "yunet_s_640x640_fp32.tflite" in out and "minifasnet_v2_scale2.7_fp32" in out
    stranger = str(data_dir / "faces" / "deepface" / STRANGER)
    assert edge_main(["unlock", "verify", "alice", "--source", stranger, "--allow-ssh", *rel]) == 1
    capsys.readouterr()
    # edge info shows the release and the templates bound to its embedder
    assert edge_main(["info", "--json", *rel]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["release"]["profile"] == "rpi5" and info["profile"]["name"] == "rpi5"
    assert info["release"]["key_id"] == open_release(release_build["dir"], release_build["pub"]).key_id
    assert "CPUExecutionProvider" in info["runtime"]["onnxruntime"]["providers_in_use"]
    assert info["templates"]["users"] == [{"user": "alice", "model_id": emb.name, "model_sha256": emb.sha256,
                                          "stale": False}]
    assert {r["role"] for rows in info["release"]["roles"].values() for r in rows} >= {"face_embedder", "liveness"}


def test_templates_follow_the_release_embedder(release_build, offline, unlock_state, tmp_path, capsys, data_dir):
    """A new release with another embedder variant marks the enrolled templates stale."""
    from edge.bundle import load_bundle
    from export.bundle.keys import load_private_key
    from export.bundle.write import BundleEntry, write_bundle

    b = load_bundle(release_build["dir"])
    rel = ["--bundle", str(release_build["dir"]), "--trust", str(release_build["pub"])]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ENROL:
        shutil.copy(data_dir / "faces" / "deepface" / name, photos / name)
    assert edge_main(["unlock", "enroll", "bob", "--source", str(photos), *rel]) == 0
    # the next release ships the same embedder converted again: other bytes, other sha256
    emb = b.model("face_embedder")
    changed = tmp_path / "emb" / emb.model_path.name
    changed.parent.mkdir()
    changed.write_bytes(emb.model_path.read_bytes() + b"\0" * 16)
    entries = [BundleEntry(role, changed if role == "face_embedder" else m.model_path, m.card)
               for role, ms in b.roles.items() for m in ms]
    write_bundle(tmp_path / "next" / "rpi5", entries, profile="rpi5",
                 private_key=load_private_key(release_build["priv"]), report={}, report_md="")
    nxt = ["--bundle", str(tmp_path / "next" / "rpi5"), "--trust", str(release_build["pub"])]
    capsys.readouterr()
    assert edge_main(["info", "--json", *nxt]) == 0
    users = json.loads(capsys.readouterr().out)["templates"]["users"]
    assert [(u["user"], u["stale"]) for u in users] == [("bob", True)]
    assert edge_main(["unlock", "list", "--json", *nxt]) == 0
    assert json.loads(capsys.readouterr().out)["users"][0]["stale"] is True


@pytest.mark.slow
def test_edge_run_and_bench_use_the_release(release_build, offline, tmp_path, capsys, samples):
    rel = ["--bundle", str(release_build["tar"]), "--trust", str(release_build["pub"])]
    assert edge_main(["run", "classifier", str(samples / "cat.bmp"), "--json", "--explain", *rel]) == 0
    cap = capsys.readouterr()
    assert "from release" in cap.err and "mobilenet_v2_torchvision" in cap.err
    top = json.loads(cap.out)["top"][0]
    assert "cat" in top["label"].lower()
    out = tmp_path / "bench"
    assert edge_main(["bench", "--iters", "2", "--warmup", "0", "--processes", "1", "--threads", "1",
                      "--out", str(out), "--format", "json", *rel]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert {r["variant"] for r in report["results"]} == {
        m.card.name for ms in open_release(release_build["dir"], release_build["pub"]).bundle.roles.values() for m in ms}


def _consumers(tmp_path: Path, data_dir: Path) -> dict:
    face = str(data_dir / "samples" / "face.jpg")
    return {
        "unlock enroll": ["unlock", "enroll", "carol", "--source", face],
        "unlock verify": ["unlock", "verify", "carol", "--source", face, "--allow-ssh"],
        "unlock list": ["unlock", "list"],
        "detect": ["detect", "--source", "synthetic", "--max-frames", "1", "--sink", f"jsonl:{tmp_path / 'e.jsonl'}"],
        "run": ["run", "classifier", face],
        "bench": ["bench", "--iters", "1", "--processes", "1", "--out", str(tmp_path / "b"), "--format", "json"],
        "info": ["info"],
    }


@pytest.mark.parametrize("consumer", ["unlock enroll", "unlock verify", "unlock list", "detect", "run", "bench",
                                      "info"])
def test_every_consumer_refuses_a_tampered_release(consumer, tampered, release_build, offline, unlock_state,
                                                  tmp_path, capsys, data_dir):
    d, changed = tampered
    argv = _consumers(tmp_path, data_dir)[consumer] + ["--bundle", str(d), "--trust", str(release_build["pub"])]
    assert edge_main(argv) == 2
    err = capsys.readouterr().err
    assert changed in err and ("altered" in err or "differs" in err)
    assert not (tmp_path / "e.jsonl").exists() and not (tmp_path / "b").exists()
    assert not (unlock_state / "store").exists() or not any((unlock_state / "store").iterdir())


@pytest.mark.parametrize("consumer", ["unlock enroll", "detect", "run", "info"])
def test_the_installed_release_is_used_and_checked_by_default(consumer, tampered, release_build, offline,
                                                             unlock_state, monkeypatch, tmp_path, capsys, data_dir):
    """Without options: EDGE_RELEASES_DIR/current and EDGE_TRUST; a tampered one is refused, never bypassed."""
    d, changed = tampered
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "current").symlink_to(d)
    monkeypatch.setenv("EDGE_RELEASES_DIR", str(releases))
    monkeypatch.setenv("EDGE_TRUST", str(release_build["pub"]))
    assert edge_main(_consumers(tmp_path, data_dir)[consumer]) == 2
    assert changed in capsys.readouterr().err


def test_detect_without_a_detector_in_the_release_says_so(offline, tmp_path, capsys, model_dir):
    from edge.registry import get_card
    from export.bundle.keys import generate_keypair, load_private_key
    from export.bundle.write import BundleEntry, write_bundle

    card = get_card("yunet_s_640x640")
    entry = BundleEntry("face_detector", model_dir / card.file, card)
    priv, pub = generate_keypair(tmp_path / "k")
    write_bundle(tmp_path / "r" / "board", [entry], profile="board", private_key=load_private_key(priv),
                 report={}, report_md="")
    argv = ["detect", "--source", "synthetic", "--max-frames", "1", "--bundle", str(tmp_path / "r" / "board"),
            "--trust", str(pub), "--sink", f"jsonl:{tmp_path / 'e.jsonl'}"]
    assert edge_main(argv) == 2
    err = capsys.readouterr().err
    assert "has no 'detector' model" in err and "edge-export build" in err


def test_enroll_without_shared_models_and_without_release_says_what_to_do(offline, unlock_state, capsys, data_dir):
    assert edge_main(["unlock", "enroll", "dave", "--source", str(data_dir / "samples" / "face.jpg")]) == 2
    err = capsys.readouterr().err
    for needle in ("no release", "edge-export build", "--bundle", "EDGE_BUNDLE", "EDGE_TRUST",
                   "/no-releases/current", "yunet_s_dynamic.onnx"):
        assert needle in err, needle
    assert "Traceback" not in err


def test_edge_info_without_release_explains_and_exits_1(capsys):
    assert edge_main(["info"]) == 1
    out = capsys.readouterr().out
    assert "release: none" in out and "edge-export build" in out and "runtime:" in out


@pytest.mark.slow
def test_detect_runs_the_release_detector(release_build, tmp_path, capsys, offline, data_dir):
    jsonl = tmp_path / "e.jsonl"
    argv = ["detect", "--source", str(data_dir / "samples"), "--max-frames", "3", "--threads", "1", "--explain",
            "--bundle", str(release_build["tar"]), "--trust", str(release_build["pub"]), "--sink", f"jsonl:{jsonl}"]
    assert edge_main(argv) == 0
    err = capsys.readouterr().err
    assert "detector yolox_nano_416" in err and "from release" in err and ".tflite" in err
    assert json.loads(err.strip().splitlines()[-1])["frames"] == 3


def test_release_module_imports_no_training_framework():
    code = "import sys, edge.release, edge.roles, edge.cli.info_cmd; print(sorted({'torch','tensorflow','onnx'} & set(sys.modules)))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_default_path_model_is_in_the_release_or_downloadable(release_build):
    """Offline after set-up (9.6): the face models ship in the release; what the registry fallback
    would need instead has a real upstream source, except the exported SFace, which only the
    release carries (its bytes exist nowhere upstream)."""
    from edge.registry import get_card

    rel = open_release(release_build["dir"], release_build["pub"])
    shipped = {role: [m.card for m in rel.models(role)] for role in ("face_detector", "face_embedder", "liveness")}
    assert [c.name for c in shipped["face_embedder"]] == ["sface_2021dec_fp32_fp32"]
    assert "derived by edge-export from sface_2021dec_fp32" in shipped["face_embedder"][0].source.note
    assert sorted(c.name for c in shipped["liveness"]) == ["minifasnet_v1se_scale4.0_fp32", "minifasnet_v2_scale2.7_fp32"]
    assert shipped["face_detector"][0].name.startswith("yunet_s_640x640")
    for name in ("yunet_s_640x640", "yunet_s_dynamic", "minifasnet_v2_scale2.7", "minifasnet_v1se_scale4.0",
                 "sface_2021dec_int8bq"):
        src = get_card(name).source
        assert src.url or src.pypi, name
    assert get_card("sface_2021dec_fp32").source.url is None  # derived: only a release can bring it


def test_registry_model_options_do_not_mix_with_a_release(release_build, offline, unlock_state, capsys, data_dir):
    rel = ["--bundle", str(release_build["dir"]), "--trust", str(release_build["pub"])]
    face = str(data_dir / "samples" / "face.jpg")
    assert edge_main(["unlock", "enroll", "erin", "--source", face, "--embedder", "mobilefacenet_128d", *rel]) == 2
    assert "--embedder choose registry models" in capsys.readouterr().err
