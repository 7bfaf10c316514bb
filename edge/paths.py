"""Where edgesight looks for models, data and its cache.

Every location is configurable by an environment variable so tests and users never need a
hard-coded absolute path:

- ``EDGE_MODEL_DIR``: one or more model mirror directories (``os.pathsep``-separated). Default:
  ``../shared/models`` seen from the current directory or from the project checkout, when it exists.
- ``EDGE_DATA_DIR``: the data directory. Default: ``../shared/data`` likewise.
- ``EDGE_CACHE_DIR``: the user cache for downloaded models. Default:
  ``$XDG_CACHE_HOME/edgesight`` or ``~/.cache/edgesight``.
- liveness models (no variable here; ``edge unlock`` has ``--liveness-dir`` /
  ``EDGE_UNLOCK_LIVENESS_DIR``): ``sys.prefix/share/edgesight/liveness`` (where ``make demo``
  installs them into the virtualenv), then ``/usr/local/share`` and ``/usr/share``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _shared_candidates(sub: str) -> list[Path]:
    return [Path.cwd().parent / "shared" / sub, _PROJECT_ROOT.parent / "shared" / sub]


def _from_env(var: str) -> list[Path]:
    raw = os.environ.get(var, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def model_dirs() -> list[Path]:
    """Model mirror directories, in the order they are searched."""
    dirs = _from_env("EDGE_MODEL_DIR")
    if dirs:
        return dirs
    seen: list[Path] = []
    for c in _shared_candidates("models"):
        if c.is_dir() and c.resolve() not in [s.resolve() for s in seen]:
            seen.append(c)
    return seen


def data_dir() -> Path | None:
    """The data directory (images, face sets, coco128), or None when there is none."""
    dirs = _from_env("EDGE_DATA_DIR")
    if dirs:
        return dirs[0]
    for c in _shared_candidates("data"):
        if c.is_dir():
            return c
    return None


def cache_dir() -> Path:
    """The user cache where pulled models are stored."""
    env = os.environ.get("EDGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edgesight"


#: Where installed liveness models are looked for, in order (``make demo`` fills the first).
LIVENESS_SUBDIR = Path("share") / "edgesight" / "liveness"


def liveness_dirs() -> list[Path]:
    """Candidate directories of installed liveness models (they may not exist)."""
    return [Path(sys.prefix) / LIVENESS_SUBDIR, Path("/usr/local") / LIVENESS_SUBDIR, Path("/usr") / LIVENESS_SUBDIR]


def liveness_dir() -> Path | None:
    """The first installed liveness-model directory holding a card (``*.json``), or None."""
    for d in liveness_dirs():
        if d.is_dir() and any(d.glob("*.json")):
            return d
    return None
