"""``edge unlock`` run as several real processes at once, with a wrong key, and with a corrupt
lockout state: every sample of concurrent enrolments is kept, parallel prompts get exactly the
lockout limit's tries, and bad keys or state fail closed naming the file.

Liveness is off (``--no-liveness``) where it is not what is tested, so the processes load fewer
models on a shared machine; the store and lockout code paths are the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._unlock_helpers import ROOT, UnlockPaths, deepface_people, link_folder

pytest.importorskip("cryptography")
pytest.importorskip("onnxruntime")

from edge.unlock.fsutil import SLOW_WRITE_ENV, TEMP_MARK  # noqa: E402
from edge.unlock.keys import FileKeyProvider  # noqa: E402
from edge.unlock.store import TemplateStore  # noqa: E402

WAIT = 180.0


@pytest.fixture(scope="module")
def people(data_dir):
    return deepface_people(data_dir)


def _env(paths: UnlockPaths, proc_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_UNLOCK_", "SSH_", "PAM_"))}
    return {**env, **paths.env(EDGE_UNLOCK_PROC=str(proc_dir)), **extra}


def _edge(*argv, env, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge", "unlock", *map(str, argv)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(procs) -> list[tuple[int, str, str]]:
    outs = [p.communicate(timeout=WAIT) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outs)]


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, people):
    """Six `edge unlock enroll` processes at once (writes slowed): three add samples to the same
    user, three enrol different people. Returns (paths, env, results)."""
    base = tmp_path_factory.mktemp("concurrent")
    paths = UnlockPaths.under(base)
    (base / "proc").mkdir()
    env = _env(paths, base / "proc", **{SLOW_WRITE_ENV: "0.3"})
    same = people.photos("person00")[:6]
    jobs = [("carol", same[2 * i:2 * i + 2], ["--add"]) for i in range(3)]
    jobs += [(f"user-{p}", people.photos(p)[:2], []) for p in ("person07", "person09", "person10")]
    procs = [_edge("enroll", user, "--source", link_folder(base / f"photos{i}", photos), "-k", 2,
                   "--no-liveness", *flags, env=env) for i, (user, photos, flags) in enumerate(jobs)]
    return paths, env, _finish(procs)


def test_concurrent_enrolments_keep_every_sample(enrolled):
    paths, _, results = enrolled
    assert [r[0] for r in results] == [0] * 6, [r[2] for r in results]
    store = TemplateStore(paths.store, FileKeyProvider(paths.key))
    listing = store.load_all()
    assert not listing.problems
    counts = {r.user: r.vectors.shape[0] for r in listing.records}
    assert counts == {"carol": 6, "user-person07": 2, "user-person09": 2, "user-person10": 2}
    assert not [p for p in paths.store.iterdir() if TEMP_MARK in p.name]


def test_a_second_new_enrolment_of_the_same_user_is_refused_not_lost(enrolled, people, tmp_path):
    paths, env, _ = enrolled
    photos = people.photos("person11")
    results = _finish([_edge("enroll", "dave", "--source", p, "-k", 1, "--no-liveness", env=env) for p in photos])
    assert sorted(r[0] for r in results) == [0, 2], results
    refused = next(r[2] for r in results if r[0] == 2)  # told before or after its capture
    assert "already enrolled" in refused or "enrolled by another enrolment while this one ran" in refused
    assert TemplateStore(paths.store, FileKeyProvider(paths.key)).load("dave").vectors.shape[0] == 1


def test_parallel_prompts_get_exactly_the_lockout_limit(enrolled, people, tmp_path):
    """Six verifications of a stranger's face at once against the limit of 5 failures."""
    paths, env, _ = enrolled
    env = {**env, "EDGE_UNLOCK_STATE": str(tmp_path / "state"), SLOW_WRITE_ENV: "0.1"}
    stranger = people.photos("person12")[0]
    results = _finish([_edge("verify", "carol", "--source", stranger, "--no-liveness", env=env)
                       for _ in range(6)])
    assert sorted(r[0] for r in results) == [1, 1, 1, 1, 1, 3], [r[2] for r in results]
    assert "locked out" in next(r[2] for r in results if r[0] == 3)
    state = json.loads((tmp_path / "state" / "lockout.json").read_text())
    assert state["users"]["carol"]["failures"] == 5


def test_wrong_key_is_named_exit_2_and_nothing_is_written(enrolled, people, tmp_path):
    paths, env, _ = enrolled
    wrong = tmp_path / "wrong.key"
    FileKeyProvider.create_key_file(wrong)
    before = {p.name: p.read_bytes() for p in paths.store.iterdir()}
    env = {**env, "EDGE_UNLOCK_KEY": str(wrong)}
    photos = link_folder(tmp_path / "p", people.photos("person08")[:1])
    for argv in (["enroll", "carol", "--add", "--source", photos, "-k", 1, "--no-liveness"],
                 ["enroll", "erin", "--source", photos, "-k", 1, "--no-liveness"],
                 ["verify", "carol", "--source", people.photos("person08")[0], "--no-liveness"],
                 ["list"]):
        code, out, err = _finish([_edge(*argv, env=env)])[0]
        assert code == 2, (argv, out, err)
        assert f"key file {wrong} does not open the template store {paths.store}" in err, err
        assert "no templates" not in err
    assert {p.name: p.read_bytes() for p in paths.store.iterdir()} == before
    # a missing key beside an enrolled store is an error too, never a second key
    code, _, err = _finish([_edge("enroll", "erin", "--source", photos, "-k", 1, "--no-liveness",
                                  env={**env, "EDGE_UNLOCK_KEY": str(tmp_path / "none.key")})])[0]
    assert code == 2 and "not found, but the template store" in err and not (tmp_path / "none.key").exists()


@pytest.mark.parametrize("content", [b'{"users": {"carol": {"failures": NaN}}}', b"\xff garbage"])
def test_corrupt_lockout_state_locks_and_reset_moves_it_aside(enrolled, people, tmp_path, content):
    paths, env, _ = enrolled
    state = tmp_path / "state"
    state.mkdir()
    (state / "lockout.json").write_bytes(content)
    env = {**env, "EDGE_UNLOCK_STATE": str(state)}
    genuine = people.photos("person00")[6]
    code, _, err = _finish([_edge("verify", "carol", "--source", genuine, "--no-liveness", env=env)])[0]
    assert code == 3, err
    assert f"lockout state {state / 'lockout.json'} is unreadable or corrupt" in err and "edge unlock reset" in err
    code, out, err = _finish([_edge("reset", "carol", env=env)])[0]
    assert code == 0, err
    assert "moved to" in out and (state / "lockout.json").exists() is False
    assert [p.read_bytes() for p in state.glob("lockout.json.corrupt-*")] == [content]
    code, out, err = _finish([_edge("verify", "carol", "--source", genuine, "--no-liveness", env=env)])[0]
    assert code == 0, (out, err)


def test_store_path_that_is_a_file_is_named(enrolled, tmp_path, people):
    _, env, _ = enrolled
    store = tmp_path / "templates"
    store.write_text("not a directory")
    code, _, err = _finish([_edge("list", env={**env, "EDGE_UNLOCK_STORE": str(store)})])[0]
    assert code == 2 and f"template store {store} is not a directory" in err
    assert store.read_text() == "not a directory"
