"""Where face unlock keeps its state, read once from options, then environment, then defaults.

Every path is configurable both ways so tests and users can run unprivileged:

====================  =========================  ==================================
option                environment variable       default
====================  =========================  ==================================
``--store DIR``       ``EDGE_UNLOCK_STORE``      ``/var/lib/edgesight/templates``
``--key FILE``        ``EDGE_UNLOCK_KEY``        ``/etc/edgesight/unlock.key``
``--audit FILE``      ``EDGE_UNLOCK_AUDIT``      ``/var/log/edgesight/audit.jsonl``
``--state DIR``       ``EDGE_UNLOCK_STATE``      ``/var/lib/edgesight/state``
(none)                ``EDGE_UNLOCK_PROC``       ``/proc`` (SSH and lid checks; tests)
====================  =========================  ==================================

The defaults above (the Filesystem Hierarchy Standard: variable state in ``/var/lib``, host
configuration — the key — in ``/etc``, logs in ``/var/log``) are root's: the PAM helper runs as
root. Anyone else trying face unlock gets per-user defaults under the XDG base directories:

==============  ================================================
setting         default when not run as root
==============  ================================================
store           ``$XDG_STATE_HOME/edgesight/templates``
key             ``$XDG_CONFIG_HOME/edgesight/unlock.key``
audit           ``$XDG_STATE_HOME/edgesight/audit.jsonl``
state           ``$XDG_STATE_HOME/edgesight/state``
==============  ================================================

with ``$XDG_STATE_HOME`` defaulting to ``~/.local/state`` and ``$XDG_CONFIG_HOME`` to
``~/.config`` (relative values are ignored, as the XDG specification says).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["UnlockConfig", "PATH_SETTINGS", "DEFAULT_STORE", "DEFAULT_KEY", "DEFAULT_AUDIT",
           "DEFAULT_STATE", "default_paths"]

DEFAULT_STORE = Path("/var/lib/edgesight/templates")
DEFAULT_KEY = Path("/etc/edgesight/unlock.key")
DEFAULT_AUDIT = Path("/var/log/edgesight/audit.jsonl")
DEFAULT_STATE = Path("/var/lib/edgesight/state")
DEFAULT_PROC = Path("/proc")

#: field name → (environment variable, default). Option names are the field names.
PATH_SETTINGS: dict[str, tuple[str, Path]] = {
    "store_dir": ("EDGE_UNLOCK_STORE", DEFAULT_STORE),
    "key_file": ("EDGE_UNLOCK_KEY", DEFAULT_KEY),
    "audit_file": ("EDGE_UNLOCK_AUDIT", DEFAULT_AUDIT),
    "state_dir": ("EDGE_UNLOCK_STATE", DEFAULT_STATE),
    "proc_dir": ("EDGE_UNLOCK_PROC", DEFAULT_PROC),
}


#: field name → the command-line option that sets it (error messages name the option).
_OPTIONS = {"store_dir": "--store", "key_file": "--key", "audit_file": "--audit", "state_dir": "--state",
            "proc_dir": "EDGE_UNLOCK_PROC"}
#: field name → (XDG variable, its fallback under $HOME, path inside it) for users other than root.
_USER_PATHS: dict[str, tuple[str, str, str]] = {
    "store_dir": ("XDG_STATE_HOME", ".local/state", "edgesight/templates"),
    "key_file": ("XDG_CONFIG_HOME", ".config", "edgesight/unlock.key"),
    "audit_file": ("XDG_STATE_HOME", ".local/state", "edgesight/audit.jsonl"),
    "state_dir": ("XDG_STATE_HOME", ".local/state", "edgesight/state"),
}


def default_paths(euid: int | None = None, env: Mapping[str, str] | None = None) -> dict[str, Path]:
    """The default of every path setting: FHS paths for root (``euid == 0``), XDG paths otherwise.

    Args:
        euid: the effective user id (default: the process's).
        env: the environment (default ``os.environ``), for ``XDG_*_HOME`` and ``HOME``.
    """
    euid = os.geteuid() if euid is None else euid
    out = {name: default for name, (_, default) in PATH_SETTINGS.items()}
    if euid == 0:
        return out
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    for name, (var, fallback, sub) in _USER_PATHS.items():
        raw = env.get(var) or ""
        base = Path(raw) if os.path.isabs(raw) else home / fallback
        out[name] = base / sub
    return out


@dataclass(frozen=True)
class UnlockConfig:
    """The resolved state locations and policy switches of one ``edge unlock`` run.

    Attributes:
        store_dir: encrypted template records.
        key_file: the 32-byte template key (used by the default key provider).
        audit_file: the JSONL audit log.
        state_dir: lockout state.
        proc_dir: the /proc root read by the SSH and lid checks.
        refuse_ssh: refuse face unlock in an SSH session.
        refuse_lid_closed: refuse with the laptop lid closed.

    Example:
        >>> cfg = UnlockConfig.resolve({"store_dir": "/tmp/s"}, env={}, euid=0)
        >>> str(cfg.store_dir), str(cfg.key_file)
        ('/tmp/s', '/etc/edgesight/unlock.key')
    """

    store_dir: Path = DEFAULT_STORE
    key_file: Path = DEFAULT_KEY
    audit_file: Path = DEFAULT_AUDIT
    state_dir: Path = DEFAULT_STATE
    proc_dir: Path = DEFAULT_PROC
    refuse_ssh: bool = True
    refuse_lid_closed: bool = True

    @classmethod
    def resolve(cls, options: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None,
                *, refuse_ssh: bool = True, refuse_lid_closed: bool = True,
                euid: int | None = None) -> "UnlockConfig":
        """Build a config: an option that is not None wins, then the environment, then the default
        (:func:`default_paths`: root's FHS paths, or the user's XDG directories).

        Args:
            options: field name → value (e.g. ``{"store_dir": args.store}``); unknown names raise.
            env: the environment (default ``os.environ``).
            euid: the effective user id deciding the defaults (default: the process's).

        Raises:
            ValueError: an unknown option name, or an empty path.
        """
        options = dict(options or {})
        env = os.environ if env is None else env
        unknown = set(options) - set(PATH_SETTINGS)
        if unknown:
            raise ValueError(f"unknown unlock setting(s) {sorted(unknown)}; valid: {sorted(PATH_SETTINGS)}")
        values = {}
        defaults = default_paths(euid, env)
        for name, (var, _) in PATH_SETTINGS.items():
            default = defaults[name]
            raw = options.get(name)
            if raw is None:
                raw = env.get(var) or None
            if raw is not None and not str(raw).strip():
                raise ValueError(f"the {_OPTIONS.get(name, name)} path (option or {var}) is empty")
            values[name] = Path(str(raw)).expanduser() if raw is not None else default
        return cls(**values, refuse_ssh=refuse_ssh, refuse_lid_closed=refuse_lid_closed)
