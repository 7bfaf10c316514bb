"""Template store: key file, AES-GCM records on disk, integrity, staleness, export/import, kill -9."""

from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
import sys
import time
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptography")

from edge.errors import (  # noqa: E402
    KeyFileError, StaleEnrollmentError, StaleTemplateError, StoreKeyMismatchError, TemplateIntegrityError,
    TemplateStoreError, UnknownUserError, UserExistsError,
)
from edge.unlock.fsutil import PAUSE_AFTER_TEMP_ENV, SLOW_WRITE_ENV, TEMP_MARK, atomic_write  # noqa: E402
from edge.unlock.keys import FileKeyProvider, KeyProvider, StaticKeyProvider  # noqa: E402
from edge.unlock.store import KEY_CHECK_FILE, TemplateRecord, TemplateStore, validate_user  # noqa: E402
from edge.unlock.transfer import export_store, import_store, read_export  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHA_A = "a" * 64
SHA_B = "b" * 64
MODEL = "sface_2021dec_fp32"


def _vectors(seed: int, n: int = 3, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _record(user: str, seed: int = 0, **kw) -> TemplateRecord:
    return TemplateRecord(user, kw.pop("model_id", MODEL), kw.pop("sha", SHA_A), _vectors(seed), **kw)


@pytest.fixture
def keyfile(tmp_path) -> Path:
    return tmp_path / "etc" / "unlock.key"


@pytest.fixture
def store(tmp_path, keyfile) -> TemplateStore:
    return TemplateStore(tmp_path / "templates", FileKeyProvider(keyfile, create=True))


# -- key file ------------------------------------------------------------------------------------

def test_key_file_is_created_0600_with_32_random_bytes(keyfile):
    key = FileKeyProvider(keyfile, create=True).get_key()
    assert len(key) == 32
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert keyfile.read_bytes() == key
    assert FileKeyProvider(keyfile).get_key() == key  # read back by a fresh provider
    assert isinstance(FileKeyProvider(keyfile), KeyProvider)


def test_key_file_creation_refuses_to_overwrite(keyfile):
    FileKeyProvider.create_key_file(keyfile)
    with pytest.raises(KeyFileError, match="already exists"):
        FileKeyProvider.create_key_file(keyfile)


@pytest.mark.parametrize("mode, expectation", [
    (0o600, does_not_raise()),
    (0o400, does_not_raise()),
    (0o644, pytest.raises(KeyFileError, match="mode 0644.*chmod 600")),
    (0o640, pytest.raises(KeyFileError, match="group or others")),
    (0o604, pytest.raises(KeyFileError, match="group or others")),
    (0o620, pytest.raises(KeyFileError, match="group or others")),
])
def test_key_file_permissions(keyfile, mode, expectation):
    FileKeyProvider.create_key_file(keyfile)
    os.chmod(keyfile, mode)
    with expectation:
        assert len(FileKeyProvider(keyfile).get_key()) == 32


@pytest.mark.parametrize("content, match", [(b"", "32 bytes, found 0"), (b"x" * 31, "found 31"),
                                            (b"x" * 64, "found 33")])
def test_key_file_of_wrong_length_is_refused(keyfile, content, match):
    keyfile.parent.mkdir(parents=True)
    keyfile.write_bytes(content)
    os.chmod(keyfile, 0o600)
    with pytest.raises(KeyFileError, match=match):
        FileKeyProvider(keyfile).get_key()


def test_missing_key_file_is_not_created_unless_asked(keyfile):
    with pytest.raises(KeyFileError, match="not found"):
        FileKeyProvider(keyfile).get_key()
    assert not keyfile.exists()


# -- records -------------------------------------------------------------------------------------

@pytest.mark.parametrize("user, ok", [("alice", True), ("Zoë Müller", True), ("a" * 256, True),
                                      ("", False), (" bob", False), ("a/b", False), ("..", False),
                                      ("tab\there", False), ("a" * 257, False)])
def test_validate_user(user, ok):
    with does_not_raise() if ok else pytest.raises(ValueError):
        assert validate_user(user) == user


def test_round_trip_and_list(store):
    store.save(_record("alice", 1))
    store.save(_record("bob", 2))
    alice = store.load("alice")
    np.testing.assert_array_equal(alice.vectors, _vectors(1))
    assert (alice.model_id, alice.model_sha256) == (MODEL, SHA_A)
    listing = store.load_all()
    assert listing.users() == ["alice", "bob"] and not listing.problems


def test_store_on_disk_is_ciphertext(store, tmp_path):
    user = "ciphertext-probe-user"
    image = b"\xff\xd8\xff\xe0JFIF-not-really-a-face-but-must-not-leak" * 4
    store.save(_record(user, 7, images=(image,)))
    vectors = _vectors(7)
    files = [p for p in store.directory.iterdir() if p.suffix == ".tpl"]
    assert len(files) == 1
    assert sorted(p.name for p in store.directory.iterdir() if p.suffix != ".tpl") == [".store.lock", "store.keycheck"]
    blob = files[0].read_bytes()
    secrets = [user.encode(), user.encode("utf-16-le"), vectors.tobytes(), vectors[0].tobytes(),
               vectors[0, :4].tobytes(), base64.b64encode(vectors.astype("<f4").tobytes())[:24],
               image[:16], base64.b64encode(image)[:24], MODEL.encode()]
    for secret in secrets:
        assert secret not in blob
        assert secret.decode("latin-1") not in files[0].name
    assert store.load(user).images == (image,)


def test_no_image_stored_unless_opted_in(store):
    store.save(_record("alice", 1))
    assert store.load("alice").images == ()


@pytest.mark.parametrize("where", ["header", "meta", "payload", "last"])
def test_tampered_byte_gives_integrity_error_and_others_still_load(store, where):
    store.save(_record("alice", 1))
    store.save(_record("bob", 2))
    path = store.path_for("alice")
    data = bytearray(path.read_bytes())
    offset = {"header": 13, "meta": 30, "payload": len(data) - 40, "last": len(data) - 1}[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TemplateStoreError, match=str(path)) as err:
        store.load("alice")
    if where != "header":
        assert isinstance(err.value, TemplateIntegrityError)
        assert "integrity" in str(err.value) or "truncated" in str(err.value)
    np.testing.assert_array_equal(store.load("bob").vectors, _vectors(2))
    listing = store.load_all()
    assert listing.users() == ["bob"]
    assert [p.path for p in listing.problems] == [path]


def test_truncated_record_is_an_integrity_error(store):
    store.save(_record("alice", 1))
    path = store.path_for("alice")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TemplateIntegrityError):
        store.load("alice")


def test_wrong_key_is_refused_as_such_and_nothing_is_written(store, tmp_path):
    store.save(_record("alice", 1))
    before = {p.name: p.read_bytes() for p in store.directory.iterdir()}
    wrong = tmp_path / "wrong.key"
    FileKeyProvider.create_key_file(wrong)
    other = TemplateStore(store.directory, FileKeyProvider(wrong))
    for attempt in (other.load_all, lambda: other.load("alice"), lambda: other.save(_record("alice", 2)),
                    lambda: other.update("bob", lambda cur: _record("bob", 3)), lambda: other.remove("alice")):
        with pytest.raises(StoreKeyMismatchError, match=f"key file {wrong} does not open the template store"):
            attempt()
    assert {p.name: p.read_bytes() for p in store.directory.iterdir()} == before


def test_store_written_before_the_key_check_still_tells_a_wrong_key(store, tmp_path):
    store.save(_record("alice", 1))
    (store.directory / KEY_CHECK_FILE).unlink()  # as a store of an earlier version
    assert TemplateStore(store.directory, store._keys).load("alice").user == "alice"
    with pytest.raises(StoreKeyMismatchError, match="StaticKeyProvider"):
        TemplateStore(store.directory, StaticKeyProvider(os.urandom(32))).load("alice")


def test_store_path_that_is_not_a_directory_is_named(tmp_path, keyfile):
    path = tmp_path / "templates"
    path.write_text("a file")
    store = TemplateStore(path, FileKeyProvider(keyfile, create=True))
    for attempt in (store.load_all, lambda: store.save(_record("alice", 1)), lambda: store.exists("alice")):
        with pytest.raises(TemplateStoreError, match=f"template store {path} is not a directory"):
            attempt()
    assert path.read_text() == "a file"


def test_record_moved_to_another_users_file_is_detected(store):
    store.save(_record("alice", 1))
    store.save(_record("mallory", 2))
    store.path_for("mallory").write_bytes(store.path_for("alice").read_bytes())
    with pytest.raises(TemplateIntegrityError, match="another user"):
        store.load("mallory")


def test_unknown_user(store):
    with pytest.raises(UnknownUserError, match="'nobody'"):
        store.load("nobody")
    with pytest.raises(UnknownUserError):
        store.remove("nobody")


def test_stale_templates_are_reported_not_compared(store):
    store.save(_record("alice", 1, sha=SHA_A))
    assert store.templates_for("alice", MODEL, SHA_A).user == "alice"
    for model_id, sha in [(MODEL, SHA_B), ("mobilefacenet_128d", SHA_A)]:
        with pytest.raises(StaleEnrollmentError, match="re-enrol") as err:
            store.templates_for("alice", model_id, sha)
        assert isinstance(err.value, StaleTemplateError)


def test_remove_and_rename(store):
    store.save(_record("alice", 1))
    store.save(_record("bob", 2))
    with pytest.raises(UserExistsError):
        store.rename("alice", "bob")
    renamed = store.rename("alice", "carol")
    assert renamed.user == "carol"
    assert store.load_all().users() == ["bob", "carol"]
    np.testing.assert_array_equal(store.load("carol").vectors, _vectors(1))
    with pytest.raises(UnknownUserError):
        store.load("alice")
    store.remove("bob")
    assert store.load_all().users() == ["carol"]


def test_save_without_replace_refuses_existing(store):
    store.save(_record("alice", 1))
    with pytest.raises(UserExistsError):
        store.save(_record("alice", 2), replace=False)
    np.testing.assert_array_equal(store.load("alice").vectors, _vectors(1))


# -- export / import -----------------------------------------------------------------------------

def test_export_import_round_trip_to_a_device_with_another_key(store, tmp_path):
    store.save(_record("alice", 1, images=(b"jpeg-bytes",)))
    store.save(_record("bob", 2))
    out = tmp_path / "backup.edgeunlock"
    summary = export_store(store, out, "correct horse battery")
    assert summary.users == ("alice", "bob")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert b"alice" not in out.read_bytes()
    target = TemplateStore(tmp_path / "other", StaticKeyProvider(os.urandom(32)))
    assert import_store(target, out, "correct horse battery").users == ("alice", "bob")
    np.testing.assert_array_equal(target.load("bob").vectors, _vectors(2))
    assert target.load("alice").images == (b"jpeg-bytes",)


def test_import_refuses_wrong_passphrase_tampering_and_clashes(store, tmp_path):
    store.save(_record("alice", 1))
    out = tmp_path / "backup.edgeunlock"
    export_store(store, out, "correct horse battery")
    with pytest.raises(TemplateIntegrityError, match="passphrase"):
        read_export(out, "wrong passphrase!")
    data = bytearray(out.read_bytes())
    data[-5] ^= 0x80
    bad = tmp_path / "bad.edgeunlock"
    bad.write_bytes(bytes(data))
    with pytest.raises(TemplateIntegrityError):
        read_export(bad, "correct horse battery")
    store.save(_record("alice", 9))  # now differs from the export
    with pytest.raises(UserExistsError, match="alice"):
        import_store(store, out, "correct horse battery")
    np.testing.assert_array_equal(store.load("alice").vectors, _vectors(9))  # untouched
    import_store(store, out, "correct horse battery", replace=True)
    np.testing.assert_array_equal(store.load("alice").vectors, _vectors(1))


@pytest.mark.parametrize("content, error", [(b"not an export", TemplateStoreError),
                                            (b"EDGEUNLX\n\xff\xff\xff\xff", TemplateIntegrityError)])
def test_import_of_garbage_is_a_clear_error(tmp_path, content, error):
    path = tmp_path / "x.edgeunlock"
    path.write_bytes(content)
    with pytest.raises(error, match=str(path)):
        read_export(path, "whatever123")


def test_export_needs_a_real_passphrase_and_records(store, tmp_path):
    with pytest.raises(TemplateStoreError, match="nothing to export"):
        export_store(store, tmp_path / "x", "long enough passphrase")
    store.save(_record("alice", 1))
    with pytest.raises(ValueError, match="at least 8"):
        export_store(store, tmp_path / "x", "short")


# -- crash safety --------------------------------------------------------------------------------

def test_atomic_write_failure_leaves_target_and_no_temp(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")

    with pytest.raises(TypeError):
        atomic_write(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


_SAVE_SCRIPT = """
import sys, numpy as np
from edge.unlock.keys import FileKeyProvider
from edge.unlock.store import TemplateRecord, TemplateStore
store = TemplateStore(sys.argv[1], FileKeyProvider(sys.argv[2]))
v = np.ones((4, 128), np.float32) / np.sqrt(128)
store.save(TemplateRecord("alice", "sface_2021dec_fp32", "c" * 64, v))
print("saved")
"""


def test_sigkill_during_a_save_leaves_the_previous_record_and_its_temp_is_removed(store, keyfile, tmp_path):
    """A real SIGKILL while the new record sits complete in its temporary file, before rename;
    the next open of the store removes that file (never one of a writer still running)."""
    store.save(_record("alice", 1))
    before = store.path_for("alice").read_bytes()
    marker = tmp_path / "paused"
    env = {**os.environ, PAUSE_AFTER_TEMP_ENV: str(marker), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _SAVE_SCRIPT, str(store.directory), str(keyfile)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no pause"
        temp = Path(marker.read_text())
        assert temp.exists() and TEMP_MARK in temp.name and temp.stat().st_size > 0
        TemplateStore(store.directory, FileKeyProvider(keyfile)).load_all()  # writer alive: kept
        assert temp.exists()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert store.path_for("alice").read_bytes() == before and temp.exists()
    # a temporary file whose pid now belongs to a process started after it was written (pid reuse)
    reused = store.directory / f".x.tpl{TEMP_MARK}{os.getpid()}-0000"
    reused.write_bytes(b"old")
    os.utime(reused, (1_000_000, 1_000_000))
    fresh = TemplateStore(store.directory, FileKeyProvider(keyfile))
    np.testing.assert_array_equal(fresh.load("alice").vectors, _vectors(1))
    assert not temp.exists() and not reused.exists()
    assert fresh.load_all().users() == ["alice"] and not fresh.load_all().problems
    # and without the hook the same script does replace the record
    env.pop(PAUSE_AFTER_TEMP_ENV)
    subprocess.run([sys.executable, "-c", _SAVE_SCRIPT, str(store.directory), str(keyfile)],
                   env=env, check=True, capture_output=True)
    assert fresh.load("alice").model_sha256 == "c" * 64


# -- concurrency and killed writers --------------------------------------------------------------

_ADD_SCRIPT = """
import os, sys, time
import numpy as np
from edge.unlock.keys import FileKeyProvider
from edge.unlock.store import TemplateRecord, TemplateStore
directory, key, user, seed, go = sys.argv[1:]
while not os.path.exists(go):
    time.sleep(0.005)
store = TemplateStore(directory, FileKeyProvider(key))
v = np.random.default_rng(int(seed)).standard_normal((2, 128)).astype(np.float32)
mine = v / np.linalg.norm(v, axis=1, keepdims=True)
def add(cur):
    if cur is None:
        return TemplateRecord(user, "sface_2021dec_fp32", "a" * 64, mine)
    return TemplateRecord(user, cur.model_id, cur.model_sha256, np.concatenate([cur.vectors, mine]),
                          created=cur.created)
store.update(user, add)
"""


@pytest.mark.parametrize("users", [["alice"] * 6, [f"user{i}" for i in range(6)]], ids=["same-user", "different-users"])
def test_concurrent_writers_keep_every_sample(store, keyfile, tmp_path, users):
    """Six real processes released at once add two samples each; every write is slowed so that a
    read-modify-write without the lock would lose some."""
    store.save(_record("bystander", 9))
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), SLOW_WRITE_ENV: "0.15"}
    procs = [subprocess.Popen([sys.executable, "-c", _ADD_SCRIPT, str(store.directory), str(keyfile), user,
                               str(100 + i), str(go)], env=env, stderr=subprocess.PIPE, text=True)
             for i, user in enumerate(users)]
    time.sleep(1.0)
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    fresh = TemplateStore(store.directory, FileKeyProvider(keyfile))
    listing = fresh.load_all()
    assert not listing.problems
    kept = np.concatenate([fresh.load(u).vectors for u in sorted(set(users))])
    assert kept.shape == (12, 128)
    for i in range(6):  # each writer's own two samples, bit for bit
        v = np.random.default_rng(100 + i).standard_normal((2, 128)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        assert any(np.array_equal(kept[j:j + 2], v) for j in range(0, 12, 2)), i
    assert sorted(listing.users()) == sorted({"bystander", *users})
    assert not [p for p in store.directory.iterdir() if TEMP_MARK in p.name]
