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

The defaults follow the Filesystem Hierarchy Standard: variable state in ``/var/lib``, host
configuration (the key) in ``/etc``, logs in ``/var/log``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["UnlockConfig", "PATH_SETTINGS", "DEFAULT_STORE", "DEFAULT_KEY", "DEFAULT_AUDIT",
           "DEFAULT_STATE"]

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
        >>> cfg = UnlockConfig.resolve({"store_dir": "/tmp/s"}, env={})
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
                *, refuse_ssh: bool = True, refuse_lid_closed: bool = True) -> "UnlockConfig":
        """Build a config: an option that is not None wins, then the environment, then the default.

        Args:
            options: field name → value (e.g. ``{"store_dir": args.store}``); unknown names raise.
            env: the environment (default ``os.environ``).

        Raises:
            ValueError: an unknown option name, or an empty path.
        """
        options = dict(options or {})
        env = os.environ if env is None else env
        unknown = set(options) - set(PATH_SETTINGS)
        if unknown:
            raise ValueError(f"unknown unlock setting(s) {sorted(unknown)}; valid: {sorted(PATH_SETTINGS)}")
        values = {}
        for name, (var, default) in PATH_SETTINGS.items():
            raw = options.get(name)
            if raw is None:
                raw = env.get(var) or None
            if raw is not None and not str(raw).strip():
                raise ValueError(f"the {name} path (option or {var}) is empty")
            values[name] = Path(str(raw)).expanduser() if raw is not None else default
        return cls(**values, refuse_ssh=refuse_ssh, refuse_lid_closed=refuse_lid_closed)
