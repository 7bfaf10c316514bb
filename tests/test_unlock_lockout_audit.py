"""Lockout back-off (injected clock, persisted across processes), audit log, SSH and lid guards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest

from edge.errors import LockedOutError, LockoutStateError, TemplateStoreError, UnlockRefused
from edge.unlock.audit import AuditEvent, AuditLog, read_audit
from edge.unlock.config import UnlockConfig
from edge.unlock.guards import check_guards, lid_closed, ssh_reason
from edge.unlock.fsutil import SLOW_WRITE_ENV
from edge.unlock.lockout import LockoutPolicy, LockoutTracker

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- lockout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("failures, delay", [(0, 0), (4, 0), (5, 30), (6, 60), (7, 120), (8, 240),
                                             (30, 86400), (10_000, 86400)])
def test_backoff_table(failures, delay):
    assert LockoutPolicy().delay_for(failures) == delay


def test_five_failures_lock_and_backoff_doubles_with_injected_clock(tmp_path):
    clock = FakeClock()
    tracker = LockoutTracker(tmp_path, clock=clock)
    for i in range(4):
        assert not tracker.record_failure("alice").locked
    status = tracker.record_failure("alice")  # the 5th
    assert status.locked and status.remaining_s == 30
    with pytest.raises(LockedOutError, match="30 s") as err:
        tracker.raise_if_locked("alice")
    assert err.value.until == clock.t + 30
    assert not tracker.check("bob").locked  # per user
    for expected in (60, 120, 240):
        clock.t += 29.9
        assert tracker.check("alice").locked
        clock.t += 0.2  # the lock expired: one more try is allowed …
        assert not tracker.check("alice").locked
        status = tracker.record_failure("alice")  # … and failing doubles the delay
        assert status.remaining_s == pytest.approx(expected)
        clock.t += expected - 30  # leave 30 s for the next loop's checks
    tracker.record_success("alice")
    status = tracker.check("alice")
    assert not status.locked and status.failures == 0


_FAIL_SCRIPT = """
import sys
from edge.unlock.lockout import LockoutTracker
t = LockoutTracker(sys.argv[1], clock=lambda: 5000.0)
s = t.record_failure("alice") if sys.argv[2] == "fail" else t.check("alice")
print(s.failures, s.locked, s.remaining_s)
"""


def test_lockout_is_persisted_across_processes(tmp_path):
    def run(what: str) -> str:
        return subprocess.run([sys.executable, "-c", _FAIL_SCRIPT, str(tmp_path), what], check=True,
                              capture_output=True, text=True, cwd=ROOT).stdout.split()

    outs = [run("fail") for _ in range(5)]
    assert [o[0] for o in outs] == ["1", "2", "3", "4", "5"]
    assert outs[-1][1] == "True"
    assert run("check") == ["5", "True", "30.0"]
    assert json.loads((tmp_path / "lockout.json").read_text())["users"]["alice"]["failures"] == 5


_RESERVE_SCRIPT = """
import os, sys, time
from edge.errors import LockedOutError
from edge.unlock.lockout import LockoutTracker
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.005)
try:
    r = LockoutTracker(sys.argv[1]).begin_attempt("alice")
    print("try", r.status.failures)
except LockedOutError:
    print("locked")
"""


def test_parallel_attempts_against_the_limit_get_exactly_that_many_tries(tmp_path):
    """Eight real processes released at once against the limit of 5; every write is slowed so a
    check-then-act would let them all through."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), SLOW_WRITE_ENV: "0.1"}
    procs = [subprocess.Popen([sys.executable, "-c", _RESERVE_SCRIPT, str(tmp_path / "state"), str(go)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    time.sleep(1.0)  # let the interpreters start and wait on the go file
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    lines = sorted(o[0].strip() for o in outs)
    assert lines == ["locked"] * 3 + [f"try {i}" for i in range(1, 6)]
    status = LockoutTracker(tmp_path / "state").check("alice")
    assert status.failures == 5 and status.locked


def test_a_reservation_is_given_back_and_a_success_resets(tmp_path):
    clock = FakeClock()
    tracker = LockoutTracker(tmp_path, clock=clock)
    for _ in range(4):
        tracker.begin_attempt("alice")
    fifth = tracker.begin_attempt("alice")
    assert fifth.status.locked and fifth.status.failures == 5
    tracker.release(fifth)  # it saw no face: not an attempt
    status = tracker.check("alice")
    assert (status.failures, status.locked) == (4, False)
    tracker.record_success("alice")
    assert tracker.check("alice").failures == 0


@pytest.mark.parametrize("content, why", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[]", "no 'users' object"),
    (b'{"users": []}', "no 'users' object"),
    (b'{"users": {"alice": 3}}', "users.alice is int"),
    (b'{"users": {"alice": {"failures": NaN}}}', "failures is nan"),
    (b'{"users": {"alice": {"failures": "9"}}}', "failures is '9'"),
    (b'{"users": {"alice": {"failures": true}}}', "failures is True"),
    (b'{"users": {"alice": {"failures": -1}}}', "failures is -1"),
    (b'{"users": {"alice": {"failures": 1, "locked_until": NaN}}}', "locked_until is nan"),
    (b'{"users": {"alice": {"failures": 1, "locked_until": 1e400}}}', "locked_until is inf"),
    (b'{"users": {"alice": {"failures": 1, "locked_until": 1e300}}}', "locked_until is 1e+300"),
    (b'{"users": {"bob": {"failures": 0, "last_failure": "yesterday"}}}', "last_failure is 'yesterday'"),
])
def test_unreadable_or_absurd_lockout_state_fails_closed(tmp_path, content, why):
    state = tmp_path / "lockout.json"
    state.write_bytes(content)
    tracker = LockoutTracker(tmp_path)
    for attempt in (lambda: tracker.begin_attempt("alice"), lambda: tracker.check("carol"),
                    lambda: tracker.record_failure("alice"), lambda: tracker.record_success("alice")):
        with pytest.raises(LockoutStateError, match="corrupt") as err:
            attempt()
        assert isinstance(err.value, LockedOutError)  # locked, not an error the caller may pass over
        assert why in str(err.value) and str(state) in str(err.value) and "edge unlock reset" in str(err.value)
    assert state.read_bytes() == content  # nothing rewritten
    aside = tracker.reset("alice")
    assert Path(aside).read_bytes() == content and not state.exists()
    assert tracker.begin_attempt("alice").status.failures == 1


def test_lockout_state_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "state").write_text("x")
    with pytest.raises(TemplateStoreError, match=f"{tmp_path / 'state'} is not a directory"):
        LockoutTracker(tmp_path / "state").begin_attempt("alice")


# -- audit ---------------------------------------------------------------------------------------

def test_audit_lines_are_appended_never_lost(tmp_path):
    path = tmp_path / "log" / "audit.jsonl"
    log = AuditLog(path, clock=FakeClock(1_700_000_000.0))
    log.append(AuditEvent("verify", "alice", "accept", reason="match", scores=(0.71, np.float32(0.69)),
                          liveness={"score": 0.93, "live": True},
                          models={"embedder": "sface_2021dec_fp32"}))
    path.write_bytes(path.read_bytes() + b'{"torn":')  # a crash in the middle of a line
    AuditLog(path).append(AuditEvent("verify", "bob", "reject", reason="no_match", scores=(0.1,)))
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[1] == '{"torn":'
    entries = read_audit(path)
    assert [e["user"] for e in entries] == ["alice", "bob"]
    first = entries[0]
    assert first["time"].startswith("2023-11-14T22:13:20") and first["decision"] == "accept"
    assert first["scores"] == [pytest.approx(0.71), pytest.approx(0.69)]
    assert first["liveness"]["live"] is True and first["models"]["embedder"] == "sface_2021dec_fp32"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("field, value", [
    ("liveness", np.zeros((112, 112, 3), np.uint8)),
    ("extra", {"crop": b"\xff\xd8jpeg"}),
    ("extra", {"embedding": np.ones(128, np.float32)}),
    ("scores", tuple(float(x) for x in np.ones(128))),
])
def test_audit_refuses_images_and_embeddings(tmp_path, field, value):
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(TypeError, match="no images|no embeddings|no images or embeddings"):
        log.append(AuditEvent("verify", "alice", "reject", **{field: value}))
    assert not (tmp_path / "a.jsonl").exists() or read_audit(tmp_path / "a.jsonl") == []


# -- guards --------------------------------------------------------------------------------------

def _fake_proc(root: Path, chain: list[tuple[int, str, int]], lid: str | None = None) -> Path:
    for pid, name, ppid in chain:
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560 0 0\n")
    if lid is not None:
        d = root / "acpi" / "button" / "lid" / "LID0"
        d.mkdir(parents=True)
        (d / "state").write_text(f"state:      {lid}\n")
    return root


@pytest.mark.parametrize("env, chain, expected", [
    ({}, [(100, "python", 50), (50, "bash", 1)], None),
    ({"SSH_CONNECTION": "10.0.0.2 5555 10.0.0.1 22"}, [], "SSH_CONNECTION"),
    ({"SSH_CLIENT": "10.0.0.2 5555 22"}, [], "SSH_CLIENT"),
    ({"SSH_TTY": "/dev/pts/3"}, [], "SSH_TTY"),
    ({"PAM_RHOST": "attacker.example"}, [], "PAM_RHOST"),
    ({"PAM_RHOST": "localhost"}, [(100, "python", 1)], None),
    ({"PAM_RHOST": ""}, [(100, "python", 1)], None),
    # sudo typed in an SSH session: pam_exec passes no SSH_* variable, the ancestry gives it away
    ({}, [(100, "edge-pam-unlock", 90), (90, "sudo", 80), (80, "bash", 70), (70, "sshd-session", 1)],
     "sshd-session"),
    ({}, [(100, "python", 90), (90, "sudo (odd) name", 70), (70, "sshd", 1)], "sshd"),
])
def test_ssh_detection(tmp_path, env, chain, expected):
    proc = _fake_proc(tmp_path / "proc", chain)
    reason = ssh_reason(env, proc, pid=chain[0][0] if chain else 100)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason


@pytest.mark.parametrize("state, closed", [("open", False), ("closed", True), (None, False)])
def test_lid_state_from_a_fake_proc(tmp_path, state, closed):
    proc = _fake_proc(tmp_path / "proc", [], lid=state)
    assert lid_closed(proc) is closed
    expectation = pytest.raises(UnlockRefused, match="lid") if closed else does_not_raise()
    with expectation:
        check_guards(refuse_ssh=False, refuse_lid_closed=True, proc_dir=proc)
    check_guards(refuse_ssh=False, refuse_lid_closed=False, proc_dir=proc)  # switched off: never


def test_check_guards_refuses_ssh_unless_allowed(tmp_path):
    env = {"SSH_CONNECTION": "1 2 3 4"}
    with pytest.raises(UnlockRefused, match="SSH"):
        check_guards(refuse_ssh=True, refuse_lid_closed=False, env=env, proc_dir=tmp_path)
    check_guards(refuse_ssh=False, refuse_lid_closed=False, env=env, proc_dir=tmp_path)


# -- config --------------------------------------------------------------------------------------

def test_config_option_beats_environment_beats_default():
    env = {"EDGE_UNLOCK_STORE": "/env/store", "EDGE_UNLOCK_AUDIT": "/env/audit.jsonl",
           "EDGE_UNLOCK_STATE": "", "EDGE_UNLOCK_PROC": "/fake/proc"}
    cfg = UnlockConfig.resolve({"store_dir": "/opt/store", "key_file": None}, env)
    assert cfg.store_dir == Path("/opt/store")
    assert cfg.audit_file == Path("/env/audit.jsonl")
    assert cfg.key_file == Path("/etc/edgesight/unlock.key")
    assert cfg.state_dir == Path("/var/lib/edgesight/state")  # empty variable = unset
    assert cfg.proc_dir == Path("/fake/proc")
    with pytest.raises(ValueError, match="unknown"):
        UnlockConfig.resolve({"stor": "/x"}, env)
    with pytest.raises(Exception):
        cfg.store_dir = Path("/x")  # frozen
    assert os.environ is not env
