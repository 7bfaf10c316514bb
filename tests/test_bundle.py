"""Signed bundles: write → verify round trip, tampering of every file, extra/missing files, wrong key,
archives, atomic replacement, keygen, and the ``edge bundle`` CLI.

The bundle here is made of real models and cards from the registry (no conversion, so it is fast);
``tests/test_build.py`` covers bundles made by ``edge-export build``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from edge.bundle import MANIFEST, SIGNATURE, load_bundle, verify_bundle  # noqa: E402
from edge.cli import EXIT_ERROR, EXIT_FAIL, EXIT_OK  # noqa: E402
from edge.cli import main as edge_main  # noqa: E402
from edge.errors import BundleError, BundleIntegrityError, BundleSignatureError  # noqa: E402
from edge.registry import get_card, load_labels, resolve_file, resolve_model  # noqa: E402
from export.bundle.keys import SigningKeyError, generate_keypair, load_private_key  # noqa: E402
from export.bundle.write import BundleEntry, BundleWriteError, write_bundle  # noqa: E402

#: (role, registry card) of the bundle built here; the expected file list follows from it.
ENTRIES = (("classifier", "mobilenet_v2_1.0_224_quant"), ("face_detector", "yunet_s_640x640"))
REPORT_FILES = ("report.json", "report.md")


def _expected_files() -> list[str]:
    files = list(REPORT_FILES)
    for role, name in ENTRIES:
        card = get_card(name)
        files += [f"{role}/{Path(card.file).name}", f"{role}/{Path(card.file).stem}.json"]
        if card.labels is not None:
            files.append(f"{role}/{Path(card.labels.file).name}")
    return sorted(files)


EXPECTED_FILES = _expected_files()


def _entries() -> list[BundleEntry]:
    out = []
    for role, name in ENTRIES:
        card = get_card(name)
        labels = resolve_file(card.labels.file, card.labels.sha256) if card.labels else None
        out.append(BundleEntry(role, resolve_model(card), card, labels))
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keypair(d)
    other_priv, other_pub = generate_keypair(tmp_path_factory.mktemp("other-keys"))
    return {"priv": priv, "pub": pub, "other_pub": other_pub}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, keys, model_dir):
    out = tmp_path_factory.mktemp("bundles") / "testboard"
    info = write_bundle(out, _entries(), profile="testboard", private_key=load_private_key(keys["priv"]),
                        report={"profile": "testboard"}, report_md="# report\n", archive=True)
    assert info.path == out
    return out


@pytest.fixture
def copy(bundle, tmp_path):
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def test_manifest_lists_every_file(bundle):
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert sorted(manifest["files"]) == EXPECTED_FILES
    assert set(manifest["roles"]) == {r for r, _ in ENTRIES}


def test_verify_round_trip(bundle, keys):
    info = verify_bundle(bundle, keys["pub"])
    assert info.profile == "testboard"
    assert info.files == len(EXPECTED_FILES)
    assert info.total_bytes == sum((bundle / f).stat().st_size for f in EXPECTED_FILES)


@pytest.mark.parametrize("name", EXPECTED_FILES + [MANIFEST, SIGNATURE])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipping_one_byte_of_any_file_fails_naming_it(copy, keys, name, where):
    p = copy / name
    data = bytearray(p.read_bytes())
    i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError) as exc:
        verify_bundle(copy, keys["pub"])
    assert exc.value.file == name
    assert name in str(exc.value)


@pytest.mark.parametrize("name", [MANIFEST, SIGNATURE])
@pytest.mark.parametrize("position", range(0, 400, 37))
def test_any_edit_of_manifest_or_signature_fails(copy, keys, name, position):
    """Whitespace and case edits too: only the canonical bytes are accepted."""
    p = copy / name
    data = bytearray(p.read_bytes())
    i = position % len(data)
    original = data[i]
    for replacement in (ord(" "), ord("\t"), ord(chr(original).swapcase()) if chr(original).isalpha() else original ^ 1):
        if replacement == original:
            continue
        data[i] = replacement
        p.write_bytes(bytes(data))
        with pytest.raises(BundleError) as exc:
            verify_bundle(copy, keys["pub"])
        assert exc.value.file == name, str(exc.value)
    data[i] = original
    p.write_bytes(bytes(data))
    verify_bundle(copy, keys["pub"])


def test_cli_verify_ok_and_failure_names_file(copy, keys, capsys):
    assert edge_main(["bundle", "verify", str(copy), "--key", str(keys["pub"])]) == EXIT_OK
    assert "OK" in capsys.readouterr().out
    target = EXPECTED_FILES[0]
    with open(copy / target, "r+b") as f:
        f.seek(3)
        b = f.read(1)
        f.seek(3)
        f.write(bytes([b[0] ^ 0x01]))
    assert edge_main(["bundle", "verify", str(copy), "--key", str(keys["pub"])]) == EXIT_FAIL
    assert target in capsys.readouterr().err


@pytest.mark.parametrize("case, error", [
    ("extra", BundleIntegrityError), ("extra_in_role_dir", BundleIntegrityError),
    ("missing", BundleIntegrityError), ("missing_signature", BundleSignatureError),
    ("missing_manifest", BundleIntegrityError), ("symlink", BundleIntegrityError),
])
def test_extra_and_missing_files_are_caught(copy, keys, case, error):
    victim = EXPECTED_FILES[-1]
    expect = {"extra": "notes.txt", "extra_in_role_dir": "classifier/evil.tflite", "missing": victim,
              "missing_signature": SIGNATURE, "missing_manifest": MANIFEST, "symlink": victim}[case]
    if case.startswith("extra"):
        (copy / expect).write_text("not in the manifest")
    elif case == "missing":
        (copy / victim).unlink()
    elif case == "missing_signature":
        (copy / SIGNATURE).unlink()
    elif case == "missing_manifest":
        (copy / MANIFEST).unlink()
    elif case == "symlink":
        real = copy.parent / "elsewhere"
        shutil.move(copy / victim, real)
        os.symlink(real, copy / victim)
    with pytest.raises(error) as exc:
        verify_bundle(copy, keys["pub"])
    assert exc.value.file == expect
    assert expect in str(exc.value)


def test_wrong_public_key_fails(bundle, keys):
    with pytest.raises(BundleSignatureError, match="not with the given public key"):
        verify_bundle(bundle, keys["other_pub"])
    assert edge_main(["bundle", "verify", str(bundle), "--key", str(keys["other_pub"])]) == EXIT_FAIL


@pytest.mark.parametrize("args, code", [
    (["{missing}", "--key", "{pub}"], EXIT_ERROR),
    (["{bundle}", "--key", "{missing}"], EXIT_ERROR),
    (["{bundle}", "--key", "{not_a_key}"], EXIT_ERROR),
])
def test_cli_verify_errors_exit_2(bundle, keys, tmp_path, args, code):
    junk = tmp_path / "junk.pub"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n")
    fmt = {"missing": str(tmp_path / "nope"), "pub": str(keys["pub"]), "bundle": str(bundle), "not_a_key": str(junk)}
    assert edge_main(["bundle", "verify", *[a.format(**fmt) for a in args]]) == code


def test_archive_verifies_and_tampered_archive_fails(bundle, keys, tmp_path):
    archive = bundle.with_name(bundle.name + ".tar.gz")
    assert verify_bundle(archive, keys["pub"]).files == len(EXPECTED_FILES)
    assert edge_main(["bundle", "verify", str(archive), "--key", str(keys["pub"])]) == EXIT_OK
    # Rebuild the archive with one member altered.
    work = tmp_path / "x"
    with tarfile.open(archive) as tf:
        tf.extractall(work, filter="data")
    victim = work / bundle.name / EXPECTED_FILES[1]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(work / bundle.name, arcname=bundle.name)
    with pytest.raises(BundleIntegrityError) as exc:
        verify_bundle(bad, keys["pub"])
    assert exc.value.file == EXPECTED_FILES[1]


def test_archive_with_unsafe_member_is_refused(keys, tmp_path):
    bad = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(payload, arcname="../escape.txt")
    with pytest.raises(BundleIntegrityError, match="unsafe"):
        verify_bundle(bad, keys["pub"])
    assert not (tmp_path.parent / "escape.txt").exists()


def test_failed_build_leaves_no_half_bundle_and_keeps_previous(bundle, keys, tmp_path):
    target = tmp_path / "board"
    shutil.copytree(bundle, target)
    before = (target / MANIFEST).read_bytes()

    def boom(tmp_dir: Path) -> None:
        assert (tmp_dir / MANIFEST).is_file()  # the new bundle was complete and signed …
        raise RuntimeError("injected failure")  # … and still must not replace the old one

    with pytest.raises(RuntimeError, match="injected"):
        write_bundle(target, _entries(), profile="board", private_key=load_private_key(keys["priv"]),
                     report={}, report_md="", before_commit=boom)
    assert (target / MANIFEST).read_bytes() == before
    verify_bundle(target, keys["pub"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board"], "temporary directories were left behind"


def test_bad_entry_leaves_nothing(keys, tmp_path):
    bad = BundleEntry("classifier", tmp_path / "does_not_exist.tflite", get_card("mobilenet_v2_1.0_224_quant"))
    with pytest.raises(BundleWriteError, match="does_not_exist"):
        write_bundle(tmp_path / "b", [bad], profile="b", private_key=load_private_key(keys["priv"]),
                     report={}, report_md="")
    assert list(tmp_path.iterdir()) == []


def test_load_bundle_gives_cards_models_and_labels(bundle):
    b = load_bundle(bundle)
    assert b.profile == "testboard"
    m = b.model("classifier")
    assert m.model_path.is_file() and m.model_path.parent == bundle / "classifier"
    assert m.card.file == m.model_path.name
    labels = load_labels(m.card, base=m.model_path.parent)
    assert labels is not None and labels == load_labels(get_card(dict(ENTRIES)["classifier"]))
    assert b.model("face_detector").card.task == "face_detection"
    with pytest.raises(KeyError, match="liveness"):
        b.model("liveness")


def test_cli_info(bundle, capsys):
    assert edge_main(["bundle", "info", str(bundle)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "classifier" in out and "face_detector" in out


def test_keygen_modes_and_refuses_overwrite(tmp_path):
    from export.cli import main as export_main

    d = tmp_path / "k"
    assert export_main(["keygen", "--out", str(d)]) == 0
    priv = d / "bundle_signing.key"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    load_private_key(priv)
    before = priv.read_bytes()
    with pytest.raises(SigningKeyError, match="refusing to overwrite"):
        generate_keypair(d)
    assert export_main(["keygen", "--out", str(d)]) == 2
    assert priv.read_bytes() == before
    assert export_main(["keygen", "--out", str(d), "--force"]) == 0
    assert priv.read_bytes() != before
