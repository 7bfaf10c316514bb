"""Test helpers for face unlock: liveness models exported once per session, the deepface people,
and an isolated set of unlock state paths.

The liveness ONNX files are written by the real exporter (``export.liveness``, which needs torch)
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
            from export.liveness import export_liveness

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
