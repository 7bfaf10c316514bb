"""PAM for real: a throw-away /etc/pam.d service using pam_exec and the packaged helper,
driven by Debian's ``pamtester`` with still-image sources.

Needs root (to write /etc/pam.d) and pamtester; the tests skip with the reason otherwise. The
service file is removed afterwards whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests._unlock_helpers import EDGE_BIN, ROOT, SPOOFS, UnlockPaths, WarmService, enrolled_store

pytest.importorskip("cryptography")
pytest.importorskip("onnxruntime")

HELPER = ROOT / "packaging" / "pam" / "edge-pam-unlock"
PAM_DIR = Path("/etc/pam.d")
USER = "alice"
#: Seconds one pamtester run may take (model loading on a shared machine included).
WAIT = 120.0


def _pam_exec_available() -> bool:
    return any(Path(d, "security", "pam_exec.so").is_file()
               for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                         "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"))


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="writing a PAM service file in /etc/pam.d needs root"),
    pytest.mark.skipif(shutil.which("pamtester") is None, reason="pamtester not installed (apt-get install pamtester)"),
    pytest.mark.skipif(not _pam_exec_available(), reason="pam_exec.so not found (libpam-modules)"),
    pytest.mark.skipif(not EDGE_BIN.is_file(), reason=f"no edge command at {EDGE_BIN} (pip install -e .)"),
]


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, data_dir):
    """USER enrolled from five photos through the library (the CLI is tested elsewhere)."""
    return enrolled_store(tmp_path_factory, data_dir, USER, "pam")


def _write_conf(path: Path, paths: UnlockPaths, live: Path, source: Path, fake_proc: Path | None,
                socket: str = "off") -> Path:
    lines = [f"EDGE_BIN={EDGE_BIN}", "EDGE_UNLOCK_TIMEOUT=4", "EDGE_UNLOCK_LOAD_GRACE=90",
             *(f"{k}={v}" for k, v in paths.env().items()),
             f"EDGE_UNLOCK_LIVENESS_DIR={live}", f"EDGE_UNLOCK_SOURCE={source}",
             f"EDGE_UNLOCK_SOCKET={socket}", "EDGE_UNLOCK_ACK_TIMEOUT=0.5"]
    if fake_proc is not None:
        lines.append(f"EDGE_UNLOCK_PROC={fake_proc}")
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def pam_service(enrolled, tmp_path):
    """Write /etc/pam.d/edgesight-test-<random>; yields (service name, conf path, writer)."""
    paths, live, people, _ = enrolled
    from edge.unlock.guards import ssh_ancestor

    # A developer running the tests over SSH would be (rightly) refused: give the helper an
    # empty /proc then. CI and local consoles keep the real one.
    fake_proc = tmp_path / "proc" if ssh_ancestor() is not None else None
    if fake_proc is not None:
        fake_proc.mkdir()
    state = UnlockPaths.under(paths.store.parent, state=tmp_path / "state")
    conf = tmp_path / "pam-unlock.conf"
    name = f"edgesight-test-{uuid.uuid4().hex[:12]}"
    service = PAM_DIR / name

    def configure(source: Path, stack: str = "required", socket: str = "off") -> str:
        _write_conf(conf, state, live, source, fake_proc, socket)
        lines = {"required": [f"auth required pam_exec.so quiet {HELPER} --conf {conf}"],
                 # the documented snippet, with pam_deny standing in for the password module
                 "sufficient": [f"auth sufficient pam_exec.so quiet stdout {HELPER} --conf {conf}",
                                "auth required pam_deny.so"]}[stack]
        service.write_text("\n".join(lines + ["account required pam_permit.so"]) + "\n")
        return name

    try:
        yield configure, state, people
    finally:
        service.unlink(missing_ok=True)


def _pamtester(service: str, user: str = USER) -> subprocess.CompletedProcess:
    return subprocess.run(["pamtester", service, user, "authenticate"], capture_output=True, text=True,
                          timeout=WAIT, stdin=subprocess.DEVNULL)


def test_pamtester_accepts_the_enrolled_face(pam_service):
    configure, state, people = pam_service
    proc = _pamtester(configure(people.genuine[0]))
    assert proc.returncode == 0, proc.stderr
    assert "successfully authenticated" in proc.stdout + proc.stderr
    from edge.unlock.audit import read_audit

    entry = read_audit(state.audit)[-1]
    assert (entry["decision"], entry["user"]) == ("accept", USER)


def test_pamtester_rejects_a_stranger_and_spoofs(pam_service, data_dir):
    configure, state, people = pam_service
    from edge.unlock.audit import read_audit

    cases = [(people.strangers[0], "no_match")] + [(data_dir / "antispoof" / s, "liveness") for s in SPOOFS]
    for source, reason in cases:
        proc = _pamtester(configure(source))
        assert proc.returncode != 0, (source, proc.stdout)
        assert "successfully authenticated" not in proc.stdout
        entry = read_audit(state.audit)[-1]
        assert (entry["decision"], entry["reason"]) == ("reject", reason), source


def test_documented_snippet_face_is_sufficient_and_failure_falls_through(pam_service):
    configure, _, people = pam_service
    proc = _pamtester(configure(people.genuine[1], stack="sufficient"))
    assert proc.returncode == 0, proc.stderr
    assert "Face recognised." in proc.stdout  # the helper's stdout reaches the PAM conversation
    proc = _pamtester(configure(people.strangers[1], stack="sufficient"))
    assert proc.returncode != 0  # fell through to the next module (pam_deny here, the password normally)


def _run_helper(conf: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELPER), "--conf", str(conf)], env=env, capture_output=True, text=True, timeout=WAIT)


@pytest.mark.parametrize("mode, env, code, message", [
    (0o666, {"PAM_USER": USER, "PAM_TYPE": "auth"}, 2, "writable by group or others"),
    (0o664, {"PAM_USER": USER, "PAM_TYPE": "auth"}, 2, "writable by group or others"),
    (0o644, {"PAM_USER": USER, "PAM_TYPE": "account"}, 2, ""),
    (0o644, {"PAM_TYPE": "auth"}, 2, ""),
    (0o644, {"PAM_USER": USER, "PAM_TYPE": "auth", "PAM_RHOST": "203.0.113.7"}, 1, ""),
])
def test_helper_refuses_unsafe_conf_and_odd_calls(enrolled, tmp_path, mode, env, code, message):
    paths, live, people, _ = enrolled
    conf = _write_conf(tmp_path / "c.conf", UnlockPaths.under(paths.store.parent, state=tmp_path / "s"),
                       live, people.genuine[0], tmp_path)
    os.chmod(conf, mode)
    proc = _run_helper(conf, env)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr


# -- the warm service (edge unlock serve) ---------------------------------------------------------

@pytest.fixture(scope="module")
def warm(enrolled):
    """`edge unlock serve` on the enrolled store, as a real process on a temporary socket."""
    paths, live, _, _ = enrolled
    svc = WarmService(paths, live).wait_ready()
    yield svc
    svc.stop()


def test_pamtester_is_answered_by_the_warm_service(pam_service, warm):
    configure, state, people = pam_service
    from edge.unlock.audit import read_audit

    proc = _pamtester(configure(people.genuine[2], stack="sufficient", socket=str(warm.socket)))
    assert proc.returncode == 0, proc.stderr
    assert "Face recognised." in proc.stdout
    entry = read_audit(state.audit)[-1]
    assert (entry["decision"], entry["via"], entry["pid"]) == ("accept", "service", warm.proc.pid)
    proc = _pamtester(configure(people.strangers[2], socket=str(warm.socket)))
    assert proc.returncode != 0
    entry = read_audit(state.audit)[-1]
    assert (entry["decision"], entry["reason"], entry["pid"]) == ("reject", "no_match", warm.proc.pid)


def test_helper_decides_in_process_when_the_service_is_down(pam_service, tmp_path):
    configure, state, people = pam_service
    from edge.unlock.audit import read_audit

    proc = _pamtester(configure(people.genuine[0], socket=str(tmp_path / "absent.sock")))
    assert proc.returncode == 0, proc.stderr
    entry = read_audit(state.audit)[-1]
    assert entry["decision"] == "accept" and "via" not in entry


def test_helper_decides_in_process_when_the_service_does_not_answer(pam_service, tmp_path):
    """A socket that accepts connections (the kernel's backlog) but never answers."""
    import socket as sk
    import time

    configure, state, people = pam_service
    from edge.unlock.audit import read_audit

    mute = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen(4)
    try:
        t0 = time.monotonic()
        proc = _pamtester(configure(people.genuine[1], socket=str(tmp_path / "mute.sock")))
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - t0 > 0.5  # it waited for the acknowledgement first
    finally:
        mute.close()
    entry = read_audit(state.audit)[-1]
    assert entry["decision"] == "accept" and "via" not in entry
