"""``edge unlock`` end to end with the real models and the shared face images.

One person of the deepface set is enrolled from five of their photos; their other photos must
verify (exit 0), other people must not (exit 1), the spoof photos must be rejected by liveness,
and six wrong faces must lock the user out (exit 3), also in a new process. Most calls go through
``edge.cli.main`` in-process (the real argument parsing and exit codes); the lockout persistence
and the SIGKILL test use real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._unlock_helpers import (
    LIVE, ROOT, SPOOFS, UnlockPaths, deepface_people, link_folder, liveness_models,
)

pytest.importorskip("cryptography")
pytest.importorskip("onnxruntime")

from edge.cli import main  # noqa: E402
from edge.unlock.audit import read_audit  # noqa: E402
from edge.unlock.fsutil import PAUSE_AFTER_TEMP_ENV  # noqa: E402
from edge.unlock.keys import FileKeyProvider  # noqa: E402
from edge.unlock.store import TemplateStore  # noqa: E402

USER = "alice"
#: Seconds any wait on a subprocess may take before the test fails (the machine is shared).
WAIT = 120.0
_STATE_VARS = ("EDGE_UNLOCK_STORE", "EDGE_UNLOCK_KEY", "EDGE_UNLOCK_AUDIT", "EDGE_UNLOCK_STATE",
               "EDGE_UNLOCK_SOURCE", "EDGE_UNLOCK_LIVENESS_DIR", "EDGE_UNLOCK_BUNDLE", "EDGE_UNLOCK_PROFILE",
               "EDGE_UNLOCK_PROC", "EDGE_UNLOCK_PASSPHRASE", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY",
               "PAM_RHOST", PAUSE_AFTER_TEMP_ENV)


@pytest.fixture(scope="module")
def live_dir(tmp_path_factory) -> Path:
    return liveness_models(tmp_path_factory)


@pytest.fixture(scope="module")
def people(data_dir):
    return deepface_people(data_dir)


@pytest.fixture(scope="module")
def fake_proc(tmp_path_factory) -> Path:
    """An empty /proc: no lid, no sshd ancestor, even when the tests run inside an SSH session."""
    return tmp_path_factory.mktemp("proc")


def _env(paths: UnlockPaths, live_dir: Path, fake_proc: Path, **extra) -> dict[str, str]:
    return paths.env(EDGE_UNLOCK_LIVENESS_DIR=str(live_dir), EDGE_UNLOCK_PROC=str(fake_proc), **extra)


class Cli:
    """Runs ``edge`` in-process with a given environment; returns (exit code, stdout, stderr)."""

    def __init__(self, monkeypatch, capsys, env: dict[str, str]) -> None:
        self.monkeypatch, self.capsys, self.env = monkeypatch, capsys, env

    def __call__(self, *argv: str, **env: str) -> tuple[int, str, str]:
        with self.monkeypatch.context() as m:
            for var in _STATE_VARS:
                m.delenv(var, raising=False)
            for k, v in {**self.env, **env}.items():
                m.setenv(k, str(v))
            self.capsys.readouterr()
            code = main([str(a) for a in argv])
            out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, people, live_dir, fake_proc):
    """Enrol USER from five photos through the CLI (a folder source); returns the state paths."""
    base = tmp_path_factory.mktemp("unlock")
    paths = UnlockPaths.under(base)
    photos = link_folder(base / "enrol-photos", people.enrol)
    env = {**os.environ, **_env(paths, live_dir, fake_proc)}
    for var in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "PAM_RHOST"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "edge", "unlock", "enroll", USER, "--source", photos,
                           "--explain"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    assert f"enrolled {USER}: 5 templates" in proc.stdout
    return paths


@pytest.fixture
def cli(monkeypatch, capsys, enrolled, live_dir, fake_proc, tmp_path):
    """The CLI on the enrolled store, with a fresh lockout state for each test."""
    paths = UnlockPaths.under(enrolled.store.parent, state=tmp_path / "state")
    return Cli(monkeypatch, capsys, _env(paths, live_dir, fake_proc))


def _last_audit(paths_or_env) -> dict:
    return read_audit(paths_or_env["EDGE_UNLOCK_AUDIT"])[-1]


# -- the done-means cases ------------------------------------------------------------------------

def test_enrolment_made_a_0600_key_and_a_ciphertext_store(enrolled):
    assert stat.S_IMODE(enrolled.key.stat().st_mode) == 0o600
    store = TemplateStore(enrolled.store, FileKeyProvider(enrolled.key))
    record = store.load(USER)
    assert record.vectors.shape == (5, 128) and record.images == ()
    assert record.model_id == "sface_2021dec_fp32"
    blobs = b"".join(p.read_bytes() for p in enrolled.store.iterdir())
    names = " ".join(p.name for p in enrolled.store.iterdir())
    assert USER.encode() not in blobs and USER not in names
    for v in record.vectors:
        assert v.tobytes()[:16] not in blobs
    entry = [e for e in read_audit(enrolled.audit) if e["action"] == "enroll"][-1]
    assert entry["decision"] == "enrolled" and entry["templates"] == 5


def test_their_other_photos_are_accepted(cli, people):
    assert people.genuine, "the enrolled person needs photos beyond the enrolment ones"
    for photo in people.genuine:
        code, out, err = cli("unlock", "verify", USER, "--source", photo)
        assert code == 0, (photo, out, err)
        assert out.startswith(f"accepted: {USER}")
    entry = _last_audit(cli.env)
    assert entry["decision"] == "accept" and entry["reason"] == "match"
    assert entry["scores"][0] >= entry["threshold"] and entry["liveness"][0]["live"] is True
    assert entry["models"]["embedder"] == "sface_2021dec_fp32"


def test_other_people_are_rejected(cli, people):
    for photo in people.strangers:
        code, out, err = cli("unlock", "verify", USER, "--source", photo)
        assert code == 1, (photo, out, err)
        entry = _last_audit(cli.env)
        assert (entry["decision"], entry["reason"]) == ("reject", "no_match")
        assert entry["scores"][0] < entry["threshold"]


@pytest.mark.parametrize("spoof", SPOOFS)
def test_spoof_photos_are_rejected_by_liveness(cli, data_dir, spoof):
    code, out, err = cli("unlock", "verify", USER, "--source", data_dir / "antispoof" / spoof, "--json")
    assert code == 1, err
    decision = json.loads(out)
    assert decision["reason"] == "liveness"
    assert decision["frames"][0]["live"] is False
    assert _last_audit(cli.env)["liveness"][0]["live"] is False


@pytest.mark.parametrize("live", LIVE)
def test_live_samples_pass_liveness_but_are_strangers(cli, data_dir, live):
    code, out, _ = cli("unlock", "verify", USER, "--source", data_dir / "antispoof" / live, "--json")
    decision = json.loads(out)
    assert code == 1 and decision["reason"] == "no_match"
    assert decision["frames"][0]["live"] is True


def test_six_wrong_faces_lock_the_user_out_across_processes(cli, people):
    stranger = people.strangers[0]
    for attempt in range(5):
        code, _, err = cli("unlock", "verify", USER, "--source", stranger)
        assert code == 1, (attempt, err)
    env = {**os.environ, **cli.env}
    for var in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "PAM_RHOST"):
        env.pop(var, None)
    for photo in (stranger, people.genuine[0]):  # a new process; even the right face is refused now
        proc = subprocess.run([sys.executable, "-m", "edge", "unlock", "verify", USER, "--source", photo],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
        assert proc.returncode == 3, proc.stderr
        assert "locked out" in proc.stderr
    entries = read_audit(cli.env["EDGE_UNLOCK_AUDIT"])[-7:]
    assert [e["decision"] for e in entries] == ["reject"] * 5 + ["locked_out"] * 2
    assert entries[4]["failures"] == 5 and entries[4]["locked_until"] > entries[4]["epoch"]
    raw = Path(cli.env["EDGE_UNLOCK_AUDIT"]).read_bytes()
    assert max(len(line) for line in raw.splitlines()) < 4096  # numbers and ids, no images
    code, _, _ = cli("unlock", "reset", USER)
    assert code == 0
    assert cli("unlock", "verify", USER, "--source", people.genuine[0])[0] == 0


def test_a_stream_is_decided_k_of_n(cli, people, tmp_path):
    good = link_folder(tmp_path / "good", people.genuine)  # 3 frames, all passing: 3 of 5
    code, out, _ = cli("unlock", "verify", USER, "--source", good, "--json")
    decision = json.loads(out)
    assert code == 0 and decision["k"] == 3 and len(decision["frames"]) == 3
    code, out, _ = cli("unlock", "verify", USER, "--source", good, "--frames-needed", "4", "--window", "4", "--json")
    assert code == 1 and json.loads(out)["reason"] == "source_ended"  # 3 passing frames, 4 needed


def test_timeout_without_a_face_is_a_reject_that_does_not_count(cli):
    code, out, _ = cli("unlock", "verify", USER, "--source", "synthetic:160x120", "--timeout", "0.3", "--json")
    assert code == 1 and json.loads(out)["reason"] == "timeout"
    state = Path(cli.env["EDGE_UNLOCK_STATE"]) / "lockout.json"  # reserved when it started, given back
    assert USER not in json.loads(state.read_text())["users"]


def test_explain_prints_scores_and_stage_latency(cli, people):
    code, out, _ = cli("unlock", "verify", USER, "--source", people.genuine[0], "--explain")
    assert code == 0
    assert "decision: ACCEPT (match)" in out
    assert "latency per frame (ms): detect" in out and "embed" in out and "liveness" in out
    assert "models loaded in" in out


def test_ssh_session_is_refused(cli, people):
    photo = people.genuine[0]
    code, _, err = cli("unlock", "verify", USER, "--source", photo, SSH_CONNECTION="10.0.0.9 50000 10.0.0.1 22")
    assert code == 1 and "SSH" in err
    assert _last_audit(cli.env)["decision"] == "refused"
    code, _, _ = cli("unlock", "verify", USER, "--source", photo, "--allow-ssh", SSH_CONNECTION="10.0.0.9 5 10.0.0.1 22")
    assert code == 0


def test_closed_lid_is_refused(cli, people, tmp_path):
    lid = tmp_path / "proc" / "acpi" / "button" / "lid" / "LID0"
    lid.mkdir(parents=True)
    (lid / "state").write_text("state:      closed\n")
    code, _, err = cli("unlock", "verify", USER, "--source", people.genuine[0], EDGE_UNLOCK_PROC=tmp_path / "proc")
    assert code == 1 and "lid" in err
    (lid / "state").write_text("state:      open\n")
    assert cli("unlock", "verify", USER, "--source", people.genuine[0], EDGE_UNLOCK_PROC=tmp_path / "proc")[0] == 0


# -- errors and administration -------------------------------------------------------------------

def test_unknown_user_is_rejected_and_errors_exit_2(cli, people, tmp_path):
    code, _, err = cli("unlock", "verify", "nobody", "--source", people.genuine[0])
    assert code == 1 and "nobody" in err
    code, _, err = cli("unlock", "verify", USER, "--source", people.genuine[0], "--key", tmp_path / "none.key")
    assert code == 2 and "key file" in err
    code, _, err = cli("unlock", "verify", USER, "--source", people.genuine[0], EDGE_UNLOCK_LIVENESS_DIR=tmp_path)
    assert code == 2 and "liveness" in err


def test_no_liveness_is_explicit_and_audited(cli, people):
    code, _, err = cli("unlock", "verify", USER, "--source", people.genuine[0], "--no-liveness")
    assert code == 0
    assert "liveness is DISABLED" in err
    assert _last_audit(cli.env)["insecure"] == ["no_liveness"]


def test_stale_templates_after_an_embedder_change(cli, people):
    code, _, err = cli("unlock", "verify", USER, "--source", people.genuine[0], "--embedder", "mobilefacenet_128d")
    assert code == 2 and "stale" in err and "re-enrol" in err
    code, out, _ = cli("unlock", "list", "--embedder", "mobilefacenet_128d", "--json")
    assert code == 0 and json.loads(out)["users"][0]["stale"] is True
    code, out, _ = cli("unlock", "list", "--json")
    assert json.loads(out)["users"][0]["stale"] is False


def test_duplicate_face_is_refused_unless_allowed(cli, people, tmp_path):
    photos = link_folder(tmp_path / "same", people.genuine)
    code, _, err = cli("unlock", "enroll", "mallory", "--source", photos, "-k", "2")
    assert code == 2 and f"already matches enrolled user '{USER}'" in err
    code, out, _ = cli("unlock", "list", "--json")
    assert [u["user"] for u in json.loads(out)["users"]] == [USER]
    code, _, err = cli("unlock", "enroll", "mallory", "--source", photos, "-k", "2", "--allow-duplicate",
                       "--keep-images")
    assert code == 0 and "also matches" in err
    store = TemplateStore(Path(cli.env["EDGE_UNLOCK_STORE"]), FileKeyProvider(Path(cli.env["EDGE_UNLOCK_KEY"])))
    crops = store.load("mallory").images  # opted in: the aligned crops, encrypted with the templates
    assert len(crops) == 2
    assert cv2.imdecode(np.frombuffer(crops[0], np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)
    assert crops[0][:64] not in store.path_for("mallory").read_bytes()
    assert cli("unlock", "remove", "mallory")[0] == 0


def test_enrolment_needs_distinct_single_face_samples(cli, people, samples, tmp_path):
    folder = tmp_path / "poor"
    folder.mkdir()
    for i in range(3):  # one photo three times: one sample, then "too similar"
        (folder / f"a{i}.jpg").symlink_to(people.genuine[0])
    (folder / "b.jpg").symlink_to(samples / "group_t1.jpg")  # six faces
    code, _, err = cli("unlock", "enroll", "carol", "--source", folder, "-k", "2")
    assert code == 2
    assert "only 1 of 2 good samples" in err and "too_similar ×2" in err and "several_faces ×1" in err
    assert cli("unlock", "list", "--json")[1].count('"user"') == 1  # nothing stored for carol


def test_admin_commands_and_export_import(cli, tmp_path):
    code, out, _ = cli("unlock", "rename", USER, "bob")
    assert code == 0
    try:
        code, out, _ = cli("unlock", "list")
        assert code == 0 and out.startswith("bob ") and "5 templates" in out
        export = tmp_path / "store.edgeunlock"
        code, _, _ = cli("unlock", "export", export, EDGE_UNLOCK_PASSPHRASE="correct horse battery")
        assert code == 0 and b"bob" not in export.read_bytes()
        other = UnlockPaths.under(tmp_path / "device2")
        code, _, err = cli("unlock", "import", export, "--store", other.store, "--key", other.key,
                           EDGE_UNLOCK_PASSPHRASE="wrong passphrase")
        assert code == 2 and "passphrase" in err
        code, out, _ = cli("unlock", "import", export, "--store", other.store, "--key", other.key,
                           EDGE_UNLOCK_PASSPHRASE="correct horse battery")
        assert code == 0 and "bob" in out
        assert other.key.read_bytes() != cli_key(cli)
        code, out, _ = cli("unlock", "list", "--store", other.store, "--key", other.key, "--json")
        assert [u["user"] for u in json.loads(out)["users"]] == ["bob"]
    finally:
        assert cli("unlock", "rename", "bob", USER)[0] == 0
    assert cli("unlock", "remove", "nobody")[0] == 2


def cli_key(cli) -> bytes:
    return Path(cli.env["EDGE_UNLOCK_KEY"]).read_bytes()


def test_enrolment_killed_during_the_write_keeps_the_previous_store(cli, people, tmp_path):
    """A real ``kill -9`` of ``edge unlock enroll --replace`` with the new record written to its
    temporary file but not yet renamed: the previous templates must load unchanged."""
    store = TemplateStore(Path(cli.env["EDGE_UNLOCK_STORE"]), FileKeyProvider(Path(cli.env["EDGE_UNLOCK_KEY"])))
    before = store.load(USER).vectors.copy()
    marker = tmp_path / "paused"
    photos = link_folder(tmp_path / "new-photos", people.genuine)
    env = {**os.environ, **cli.env, PAUSE_AFTER_TEMP_ENV: str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "unlock", "enroll", USER, "--replace", "-k", "3",
                             "--source", photos], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + WAIT
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate()[1].decode() if proc.poll() is not None else "never paused"
        assert Path(marker.read_text()).stat().st_size > 0  # the new record is complete in its temp file
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fresh = TemplateStore(store.directory, FileKeyProvider(Path(cli.env["EDGE_UNLOCK_KEY"])))
    np.testing.assert_array_equal(fresh.load(USER).vectors, before)
    listing = fresh.load_all()
    assert listing.users() == [USER] and not listing.problems
    assert cli("unlock", "verify", USER, "--source", people.genuine[0])[0] == 0


# -- liveness modes, quality, defaults (issue 12) -------------------------------------------------

def _strict_profile(tmp_path: Path, **quality) -> Path:
    """The x86_dev profile with a [quality] table."""
    from edge.profile import profiles_dir

    text = (profiles_dir() / "x86_dev.toml").read_text(encoding="utf-8")
    table = "\n".join(f"{k} = {v}" for k, v in quality.items())
    path = tmp_path / "strict.toml"
    path.write_text(f"{text}\n[quality]\n{table}\n", encoding="utf-8")
    return path


def test_liveness_modes_on_the_command_line(cli, people, tmp_path):
    grey = tmp_path / "grey.png"  # what an IR or monochrome camera delivers: one channel
    cv2.imwrite(str(grey), cv2.imread(str(people.genuine[0]), cv2.IMREAD_GRAYSCALE))
    code, out, err = cli("unlock", "verify", USER, "--source", grey, "--explain")
    assert code == 0, out + err
    assert "liveness auto→ir; ir: face_level" in out  # the modality decided and the check's figures
    code, out, _ = cli("unlock", "verify", USER, "--source", grey, "--liveness", "rgb", "--json")
    assert code == 1 and json.loads(out)["reason"] == "liveness"  # the RGB pair on a grey face
    code, _, err = cli("unlock", "verify", USER, "--source", people.genuine[0], "--liveness", "ir")
    assert code == 2 and "IR is required but the frames are colour" in err
    assert cli("unlock", "verify", USER, "--source", grey, "--liveness", "infrared")[0] == 2
    code, _, err = cli("unlock", "verify", USER, "--source", grey, "--liveness", "rgb", "--no-liveness")
    assert code == 2 and "not allowed with" in err
    code, _, err = cli("unlock", "verify", USER, "--source", people.genuine[0], "--liveness", "off")
    assert code == 0 and "liveness is DISABLED" in err and _last_audit(cli.env)["insecure"] == ["no_liveness"]


def test_an_unusable_frame_answers_retry_and_does_not_count(cli, people, tmp_path):
    profile = _strict_profile(tmp_path, min_face_px=2000)
    code, out, err = cli("unlock", "verify", USER, "--source", people.genuine[0], "--profile", profile, "--json")
    assert code == 4, err
    decision = json.loads(out)
    assert decision["reason"] == "retry" and decision["frames"][0]["similarity"] is None  # never matched
    state = Path(cli.env["EDGE_UNLOCK_STATE"]) / "lockout.json"  # reserved when it started, given back
    assert not state.exists() or USER not in json.loads(state.read_text())["users"]
    assert cli("unlock", "verify", USER, "--source", people.genuine[0], "--profile", profile, "--liveness", "auto",
               "--explain")[1].count("too_small") == 1


def test_enrolment_keeps_the_best_and_explains_each_photo(cli, people, samples, tmp_path):
    folder = link_folder(tmp_path / "mixed", people.enrol)
    (folder / "group.jpg").symlink_to(samples / "group_t1.jpg")
    cv2.imwrite(str(folder / "wall.png"), np.full((240, 320), 128, np.uint8))
    code, out, err = cli("unlock", "enroll", "dave", "--source", folder, "-k", "3", "--allow-duplicate", "--explain")
    assert code == 0, err
    assert "enrolled dave: 3 templates from 7 frames" in out
    assert "group.jpg: several faces (6)" in out and "wall.png: no face" in out
    assert out.count(": kept (quality score") == 3 and out.count("good, but not among the best") == 2
    assert cli("unlock", "remove", "dave")[0] == 0
    code, out, err = cli("unlock", "enroll", "erin", "--source", folder, "--profile",
                         _strict_profile(tmp_path, min_face_px=2000), "--explain")
    assert code == 2 and "only 0 of 5 good samples (at least 3 needed)" in err
    assert "face too small:" in out and "px < 2000" in out
    assert '"erin"' not in cli("unlock", "list", "--json")[1]


def test_installed_liveness_models_are_found_without_options(cli, people, live_dir, tmp_path, monkeypatch):
    import shutil

    prefix = tmp_path / "venv"
    shutil.copytree(live_dir, prefix / "share" / "edgesight" / "liveness")
    monkeypatch.setattr(sys, "prefix", str(prefix))
    env = {k: v for k, v in cli.env.items() if k != "EDGE_UNLOCK_LIVENESS_DIR"}
    bare = type(cli)(cli.monkeypatch, cli.capsys, env)
    code, out, err = bare("unlock", "verify", USER, "--source", people.genuine[0], "--explain")
    assert code == 0, err
    assert "liveness minifasnet_v1se_scale4.0+minifasnet_v2_scale2.7" in out
