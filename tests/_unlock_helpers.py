"""Test helpers for face unlock: liveness models exported once per session, the deepface people,
and an isolated set of unlock state paths.

The liveness ONNX files are written by the real exporter (``export.sources.liveness``, which needs torch)
into the session's temporary directory, once, and shared by every unlock test module.
"""

from __future__ import annotations

import csv
import fcntl
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The person enrolled by the end-to-end tests: every one of their 8 photos shows one live,
#: good-quality face (checked with the pipeline when the tests were written).
ENROLLED_PERSON = "person01"
#: How many of their photos are used for enrolment; the rest verify.
ENROL_PHOTOS = 5
#: One photo each of other people (strangers to the enrolled person).
STRANGERS = ("person02", "person06", "person12")
#: Photos of a face shown to the camera (spoofs) and of live faces, in ../shared/data/antispoof.
SPOOFS = ("image_F1.jpg", "image_F2.jpg")
LIVE = ("image_T1.jpg", "image_T2.jpg")

ROOT = Path(__file__).resolve().parent.parent
#: The ``edge`` command the PAM helper runs: the project's virtualenv, else the one on PATH
#: (pam_exec gives the helper no environment, so it needs an absolute path).
EDGE_BIN = next((p for p in (Path(sys.executable).parent / "edge", ROOT / ".venv" / "bin" / "edge",
                             Path(shutil.which("edge") or "/nonexistent")) if p.is_file()),
                ROOT / ".venv" / "bin" / "edge")


def liveness_models(tmp_path_factory) -> Path:
    """Export the MiniFASNet pair once per session (skips when torch is not installed)."""
    pytest.importorskip("torch", reason="exporting the liveness models needs torch (the export extra)")
    out = tmp_path_factory.getbasetemp() / "unlock-liveness"
    out.mkdir(exist_ok=True)
    with open(out.parent / "unlock-liveness.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if len(list(out.glob("*.onnx"))) < 2:
            from export.sources.liveness import export_liveness

            export_liveness(out)
    return out


@dataclass(frozen=True)
class People:
    """Photos of the deepface set grouped by identity."""

    folder: Path
    by_person: dict

    def photos(self, person: str) -> list[Path]:
        def number(name: str) -> int:
            return int("".join(filter(str.isdigit, name)) or 0)

        return [self.folder / f for f in sorted(self.by_person[person], key=number)]

    @property
    def enrol(self) -> list[Path]:
        return self.photos(ENROLLED_PERSON)[:ENROL_PHOTOS]

    @property
    def genuine(self) -> list[Path]:
        return self.photos(ENROLLED_PERSON)[ENROL_PHOTOS:]

    @property
    def strangers(self) -> list[Path]:
        return [self.photos(p)[0] for p in STRANGERS]


def deepface_people(data_dir: Path) -> People:
    folder = data_dir / "faces" / "deepface"
    table = data_dir / "faces" / "deepface_identities.csv"
    if not table.is_file():
        pytest.skip(f"no {table}")
    groups: dict = defaultdict(list)
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            groups[row["identity"]].append(row["file"])
    return People(folder, dict(groups))


def link_folder(target: Path, photos: list[Path]) -> Path:
    """A folder holding (symlinks to) exactly ``photos``: a folder source."""
    target.mkdir(parents=True, exist_ok=True)
    for p in photos:
        (target / p.name).symlink_to(p)
    return target


@dataclass(frozen=True)
class UnlockPaths:
    """Isolated state locations for one test (or one module)."""

    store: Path
    key: Path
    audit: Path
    state: Path

    @classmethod
    def under(cls, base: Path, *, state: Path | None = None) -> "UnlockPaths":
        return cls(base / "templates", base / "etc" / "unlock.key", base / "log" / "audit.jsonl",
                   state or base / "state")

    def env(self, **extra: str) -> dict[str, str]:
        return {"EDGE_UNLOCK_STORE": str(self.store), "EDGE_UNLOCK_KEY": str(self.key),
                "EDGE_UNLOCK_AUDIT": str(self.audit), "EDGE_UNLOCK_STATE": str(self.state), **extra}


def enrolled_store(tmp_path_factory, data_dir: Path, user: str, name: str):
    """``user`` enrolled from the five enrolment photos through the library, in a fresh state
    under a temporary ``name`` folder; returns (paths, liveness dir, people, base folder)."""
    from edge.unlock.app import PipelineOptions, UnlockApp
    from edge.unlock.config import UnlockConfig

    live = liveness_models(tmp_path_factory)
    people = deepface_people(data_dir)
    base = tmp_path_factory.mktemp(name)
    paths = UnlockPaths.under(base)
    config = UnlockConfig.resolve({"store_dir": paths.store, "key_file": paths.key,
                                   "audit_file": paths.audit, "state_dir": paths.state}, env={})
    app = UnlockApp(config, PipelineOptions(liveness_dir=live))
    try:
        app.enroll(user, str(link_folder(base / "photos", people.enrol)))
    finally:
        app.close()
    return paths, live, people, base


class WarmService:
    """``edge unlock serve`` as a real process on a socket in a fresh directory that every user
    may enter (so a test can connect as another uid); stopped with SIGTERM by :meth:`stop`."""

    def __init__(self, paths: UnlockPaths, live: Path, *args: str, env: dict | None = None,
                 activate: bool = False) -> None:
        import os
        import subprocess
        import tempfile
        import threading

        self.dir = Path(tempfile.mkdtemp(prefix="edge-unlock-sock-"))
        os.chmod(self.dir, 0o755)
        self.socket = self.dir / "unlock.sock"
        full_env = {k: v for k, v in (env or os.environ).items()
                    if not k.startswith(("EDGE_UNLOCK_", "SSH_", "PAM_", "LISTEN_"))}
        full_env.update(paths.env(EDGE_UNLOCK_LIVENESS_DIR=str(live)))
        from edge.unlock.guards import ssh_ancestor

        if ssh_ancestor() is not None:  # a developer over SSH: an empty /proc, as the PAM tests do
            full_env["EDGE_UNLOCK_PROC"] = str(self.dir)
        cmd = [str(EDGE_BIN), "unlock", "serve", "--client-source", *args]
        if activate:  # systemd's own tool makes the socket and passes it as fd 3
            passed = [f"--setenv={k}={v}" for k, v in full_env.items()]  # it passes no other variable
            cmd = [shutil.which("systemd-socket-activate") or "systemd-socket-activate", "-l", str(self.socket),
                   *passed, *cmd]
        else:
            cmd += ["--socket", str(self.socket)]
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "listening on" in line:
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout: float = 120.0) -> "WarmService":
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise AssertionError(f"edge unlock serve did not start: {''.join(self.lines)}")
        return self

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            code = self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return code
