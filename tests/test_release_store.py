"""The device's release store (edge/release_store.py): verified directories renamed into place, an
atomic `current` symlink, rollback, keep-N, the lock, and what killed writers leave behind.

Two small signed bundles (one shared quantised MobileNet, two build dates) are written per module;
the flashing procedure built on this store is tested end to end in test_flash.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from edge.errors import BundleError, BundleIntegrityError  # noqa: E402
from edge.release_store import ReleaseStore, ReleaseStoreError, StoreBusyError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, model_dir):
    from edge.registry import get_card, resolve_file, resolve_model
    from export.bundle.keys import generate_keypair, load_private_key
    from export.bundle.write import BundleEntry, write_bundle

    d = tmp_path_factory.mktemp("store-bundles")
    priv, pub = generate_keypair(d / "keys")
    card = get_card("mobilenet_v2_1.0_224_quant")
    labels = resolve_file(card.labels.file, card.labels.sha256) if card.labels else None
    out = {"pub": pub}
    for name, created in (("a", "2026-01-01T00:00:00Z"), ("b", "2026-01-02T00:00:00Z"), ("c", "2026-01-03T00:00:00Z")):
        write_bundle(d / name / "board", [BundleEntry("classifier", resolve_model(card), card, labels)],
                     profile="board", private_key=load_private_key(priv), report={"profile": "board"},
                     report_md="# report\n", archive=True, created=created)
        out[name] = d / name / "board.tar.gz"
    return out


def _names(store: ReleaseStore) -> set[str]:
    return {p.name for p in store.root.iterdir()}


def test_install_activate_rollback_and_keep(bundles, tmp_path):
    store = ReleaseStore(tmp_path / "releases")
    pub = bundles["pub"]
    with store.lock():
        a, info, already = store.install(bundles["a"], pub)
        assert not already and a == f"board-20260101T000000Z-{a[-8:]}" and info.profile == "board"
        assert store.current() is None  # installed is not active
        assert store.activate(a, pub) is None
        b, _, _ = store.install(bundles["b"], pub)
        assert store.activate(b, pub) == a
        assert os.readlink(store.root / "current") == b  # relative: the store can be mounted elsewhere
        assert (store.current(), store.previous()) == (b, a)
        assert store.rollback(pub) == (b, a) and store.current() == a
        assert store.install(bundles["a"], pub)[2]  # the same release again: already there
        with pytest.raises(ReleaseStoreError, match="active release"):
            store.remove(a)
        c, _, _ = store.install(bundles["c"], pub)
        store.activate(c, pub)  # current c, previous a; b is the oldest unpinned
        assert store.prune(2) == [b]
        assert [r.id for r in store.list()] == [c, a]
    assert not [n for n in _names(store) if n.startswith(".incoming-")]


def test_a_refused_archive_leaves_the_store_as_it_was(bundles, tmp_path):
    import tarfile

    store = ReleaseStore(tmp_path / "releases")
    with store.lock():
        a, _, _ = store.install(bundles["a"], bundles["pub"])
        store.activate(a, bundles["pub"])
    before = _names(store)
    bad = tmp_path / "bad.tar.gz"  # one flipped byte in the model, signature as it was
    src = tmp_path / "src"
    with tarfile.open(bundles["b"]) as tf:
        tf.extractall(src, filter="data")
    model = next((src / "board" / "classifier").glob("*.tflite"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(src / "board", arcname="board")
    with store.lock():
        with pytest.raises(BundleIntegrityError, match="sha256 differs"):
            store.install(bad, bundles["pub"])
    assert _names(store) == before and store.current() == a


def test_current_only_moves_to_a_release_that_verifies_again(bundles, tmp_path):
    store = ReleaseStore(tmp_path / "releases")
    pub = bundles["pub"]
    with store.lock():
        a, _, _ = store.install(bundles["a"], pub)
        b, _, _ = store.install(bundles["b"], pub)
        store.activate(a, pub)
        (store.root / b / "classifier" / "extra.bin").write_bytes(b"not in the manifest")
        with pytest.raises(BundleError, match="not in the signed manifest"):
            store.activate(b, pub)
        for bad in (".incoming-x", "current", "../a", ""):
            with pytest.raises(ReleaseStoreError):
                store.activate(bad, pub)
    assert store.current() == a


def test_what_a_killed_writer_leaves_is_never_listed_and_swept_by_the_next(bundles, tmp_path):
    store = ReleaseStore(tmp_path / "releases")
    with store.lock():
        a, _, _ = store.install(bundles["a"], bundles["pub"])
        store.activate(a, bundles["pub"])
    half = store.root / ".incoming-killed" / "board"  # an unpack cut short
    half.mkdir(parents=True)
    (half / "manifest.json").write_text("{")
    os.symlink("nowhere", store.root / ".current.tmp-12345")  # a switch cut short before its rename
    assert [r.id for r in store.list()] == [a] and store.current() == a
    with store.lock():
        pass
    assert _names(store) == {a, "current", ".lock"}


def test_one_writer_at_a_time(tmp_path):
    store = ReleaseStore(tmp_path / "releases")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from edge.release_store import ReleaseStore\n"
        f"with ReleaseStore({str(store.root)!r}).lock():\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match=f"pid {holder.pid}"):
            with store.lock(timeout_s=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with store.lock(timeout_s=5):  # the kernel dropped the dead holder's lock
        pass


def test_release_cli_lists_and_refuses_with_a_message(bundles, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_RELEASES_DIR": str(tmp_path / "releases"),
           "EDGE_TRUST": str(bundles["pub"])}

    def edge(*args):
        return subprocess.run([sys.executable, "-m", "edge", "release", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    r = edge("install", str(bundles["a"]))
    assert r.returncode == 0, r.stderr
    rid = r.stdout.split()[1]
    assert edge("activate", rid).returncode == 0
    doc = json.loads(edge("list", "--json").stdout)
    assert doc["current"] == rid and [x["id"] for x in doc["releases"]] == [rid]
    r = edge("activate", "board-nope")
    assert r.returncode == 2 and "no release 'board-nope'" in r.stderr and rid in r.stderr
    r = edge("rollback")
    assert r.returncode == 2 and "nothing to roll back to" in r.stderr
    assert json.loads(edge("list", "--json").stdout)["current"] == rid
