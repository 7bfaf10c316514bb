"""``edge unlock serve`` as a real process: peers checked with SO_PEERCRED (other uids really
connect, from forked children), requests with deadlines (garbage, nothing, oversize), bounded
waiting, systemd socket activation through ``systemd-socket-activate``, and the unit files.

The PAM helper against the service is in test_unlock_pam.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests._unlock_helpers import EDGE_BIN, ROOT, WarmService, enrolled_store

pytest.importorskip("cryptography")
pytest.importorskip("onnxruntime")

from edge.unlock.audit import read_audit  # noqa: E402
from edge.unlock.client import (  # noqa: E402
    EXIT_UNAVAILABLE, MAX_LINE, ServiceUnavailable, ask, read_line, send_line,
)

USER = "alice"
PING = {"v": 1, "op": "ping"}
#: uids/gids the forked children take (no such accounts are needed for SO_PEERCRED).
ALLOWED_UID, ALLOWED_GID, STRANGER_ID = 64001, 64002, 64003

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="connecting as other uids needs root")


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, data_dir):
    return enrolled_store(tmp_path_factory, data_dir, USER, "serve")[:3]


@pytest.fixture(scope="module")
def service(enrolled):
    paths, live, _ = enrolled
    svc = WarmService(paths, live, "--socket-mode", "0666", "--read-timeout", "0.5", "--max-waiting", "1",
                      "--allow-user", str(ALLOWED_UID), "--allow-group", str(ALLOWED_GID)).wait_ready()
    yield svc
    assert svc.stop() == 0, svc.log
    assert not svc.socket.exists()


def _verify(path, source, user=USER, **extra) -> dict:
    return ask(str(path), {"v": 1, "op": "verify", "user": user, "source": str(source), "timeout": 4, **extra},
               ack_timeout=5, decision_timeout=60)


def _as(uid: int, gid: int, path: Path) -> dict:
    """Ping the service from a forked child running as uid/gid; returns its answer or failure."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid/gid for real, then connect
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                result = ask(str(path), PING, ack_timeout=5)
            except ServiceUnavailable as e:
                result = {"unavailable": str(e)}
            os.write(write, json.dumps({**result, "uid": os.getuid()}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_verifications_are_answered_warm(service, enrolled):
    _, _, people = enrolled
    answer = _verify(service.socket, people.genuine[0])
    assert (answer["status"], answer["exit"], answer["accepted"], answer["reason"]) == ("done", 0, True, "match")
    answer = _verify(service.socket, people.strangers[0])
    assert (answer["exit"], answer["reason"]) == (1, "no_match")
    assert "models loaded in" in service.log
    entry = read_audit(enrolled[0].audit)[-1]
    assert entry["via"] == "service" and entry["pid"] == service.proc.pid and entry["peer_pid"] == os.getpid()


def test_a_remote_login_forwarded_by_the_client_is_refused(service, enrolled):
    _, _, people = enrolled
    answer = _verify(service.socket, people.genuine[0], env={"PAM_RHOST": "203.0.113.9"})
    assert (answer["exit"], answer["accepted"]) == (1, False) and "SSH" in answer["message"]


def test_peers_other_than_root_and_the_allowed_ones_are_refused_and_logged(service, enrolled):
    assert _as(ALLOWED_UID, 100, service.socket)["status"] == "pong"  # allowed uid
    assert _as(STRANGER_ID, ALLOWED_GID, service.socket)["status"] == "pong"  # allowed group
    stranger = _as(STRANGER_ID, STRANGER_ID, service.socket)
    assert stranger["uid"] == STRANGER_ID and "service answered 'refused'" in stranger["unavailable"], stranger
    assert ask(str(service.socket), PING)["status"] == "pong"  # root
    time.sleep(0.2)
    assert "refused a client" in service.log and f"uid {STRANGER_ID} gid {STRANGER_ID}" in service.log
    refused = [e for e in read_audit(enrolled[0].audit) if e["action"] == "serve"]
    assert refused and refused[-1]["decision"] == "refused" and refused[-1]["peer_uid"] == STRANGER_ID


@pytest.mark.parametrize("payload, expected", [
    (b"", None),                                         # connects and sends nothing: dropped
    (b"\x00\xff not json\n", "bad request"),
    (b'{"v": 1, "op": "verify", "timeout": 1e400}\n', "timeout must be"),
    (b'{"v": 7, "op": "ping"}\n', "protocol version"),
    (b'{"v": 1, "op": "shell"}\n', "unknown op"),
    (b"x" * (MAX_LINE + 10), "longer than"),
    (b'{"v": 1, "op": "ping"}', None),                    # no newline: never a complete request
])
def test_the_service_survives_garbage_and_silent_clients(service, enrolled, payload, expected):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(service.socket))
    t0 = time.monotonic()
    try:
        conn.sendall(payload)
    except BrokenPipeError:
        pass
    data = b""
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    conn.close()
    if expected is None:
        assert data == b"" and time.monotonic() - t0 < 5  # the 0.5 s read deadline closed it
    else:
        answer = json.loads(data.splitlines()[0])
        assert answer["status"] == "error" and expected in answer["message"], answer
    assert ask(str(service.socket), PING)["status"] == "pong"
    assert service.proc.poll() is None


def test_clients_beyond_the_bound_are_told_busy_and_fall_back(service):
    """One verification running and --max-waiting 1 waiting (both acknowledged, so both hold their
    slot for the 3 s of an empty stream): the next client is told busy, and the CLI client exits 75."""
    holders = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(service.socket))
            send_line(s, {"v": 1, "op": "verify", "user": USER, "source": "synthetic:160x120", "timeout": 3})
            assert read_line(s, time.monotonic() + 10, bytearray())["status"] == "working"
            holders.append(s)
        with pytest.raises(ServiceUnavailable, match="busy"):
            ask(str(service.socket), PING)
        proc = subprocess.run([str(EDGE_BIN.parent / "python"), "-I", "-m", "edge.unlock.client", USER,
                               "--socket", str(service.socket)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == EXIT_UNAVAILABLE and "busy" in proc.stderr
        for s in holders:  # both are then decided: nobody in front of the camera
            answer = read_line(s, time.monotonic() + 30, bytearray())
            assert (answer["exit"], answer["reason"]) == (1, "timeout")
    finally:
        for s in holders:
            s.close()
    assert ask(str(service.socket), PING)["status"] == "pong"


def test_client_exits_unavailable_without_a_socket(tmp_path):
    proc = subprocess.run([str(EDGE_BIN.parent / "python"), "-I", "-m", "edge.unlock.client", USER,
                           "--socket", str(tmp_path / "none.sock")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == EXIT_UNAVAILABLE and "none.sock" in proc.stderr


def test_client_imports_no_heavy_module():
    code = ("import sys, edge.unlock.client as c; heavy = [m for m in ('numpy', 'cv2', 'onnxruntime', "
            "'cryptography', 'edge.unlock.app') if m in sys.modules]; print(heavy)")
    out = subprocess.run([str(EDGE_BIN.parent / "python"), "-I", "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_systemd_socket_activation(enrolled):
    """The socket made by systemd's own tool arrives as fd 3 with LISTEN_FDS/LISTEN_PID."""
    paths, live, people = enrolled
    svc = WarmService(paths, live, activate=True)
    try:
        deadline = time.monotonic() + 30
        while not svc.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        answer = _verify(svc.socket, people.genuine[1])  # the first connection starts the service
        assert answer["exit"] == 0, svc.log
        assert "the socket systemd passed" in svc.log
    finally:
        svc.stop()


def test_unit_files_pass_systemd_analyze(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    for name in ("edge-unlock.socket", "edge-unlock.service"):
        text = (ROOT / "packaging" / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/edgesight/venv/bin/edge", str(EDGE_BIN)))
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "edge-unlock.socket"),
                           str(tmp_path / "edge-unlock.service")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "edge-unlock" not in proc.stderr, proc.stderr
