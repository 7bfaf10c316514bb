"""Policy checks made before the camera is opened: no unlock over SSH, none with the lid closed.

Howdy has the same two switches (``abort_if_ssh``, ``abort_if_lid_closed``). A face in front of
the laptop must not unlock a session opened from elsewhere, and a closed lid means the camera
sees nothing useful (or someone else is using the machine through an external display).

SSH is detected three ways, because ``pam_exec`` gives its helper only the PAM environment, not
the environment of the program asking (sudo, login):

- ``SSH_CONNECTION``, ``SSH_CLIENT`` or ``SSH_TTY`` in the environment (a direct call);
- a non-empty ``PAM_RHOST`` (set by sshd and by remote logins);
- an ``sshd`` process (``sshd``, or ``sshd-session`` since OpenSSH 9.8) among the ancestors of
  the process, read from ``/proc/<pid>/stat`` — this is what catches ``sudo`` typed in an SSH
  session, where neither of the above reaches the helper.

The ``/proc`` root is injectable, so tests use a fake tree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from edge.errors import UnlockRefused

__all__ = ["ssh_reason", "lid_closed", "check_guards", "SSH_ENV_VARS", "SSHD_NAMES", "LID_GLOB"]

#: Environment variables OpenSSH sets in a session.
SSH_ENV_VARS = ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")
#: Process names of the OpenSSH server (per-session process renamed in OpenSSH 9.8).
SSHD_NAMES = frozenset({"sshd", "sshd-session"})
#: ACPI lid state files below the /proc root; their content is e.g. ``state:      closed``.
LID_GLOB = "acpi/button/lid/*/state"
#: Hosts PAM_RHOST may name without the login being remote.
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_MAX_ANCESTORS = 64


def _parent_and_name(proc: Path, pid: int) -> tuple[int, str] | None:
    try:
        stat = (proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses, so split at the last ')'.
    open_, close = stat.find("("), stat.rfind(")")
    if open_ < 0 or close < open_:
        return None
    fields = stat[close + 1:].split()
    try:
        return int(fields[1]), stat[open_ + 1:close]
    except (IndexError, ValueError):
        return None


def ssh_ancestor(proc_dir: str | Path = "/proc", pid: int | None = None) -> str | None:
    """The name and pid of an sshd process among the ancestors of ``pid``, or None."""
    proc = Path(proc_dir)
    current = os.getpid() if pid is None else pid
    for _ in range(_MAX_ANCESTORS):
        found = _parent_and_name(proc, current)
        if found is None:
            return None
        parent, name = found
        if name in SSHD_NAMES:
            return f"{name} (pid {current})"
        if parent <= 1:
            return None
        current = parent
    return None


def ssh_reason(env: Mapping[str, str], proc_dir: str | Path = "/proc", pid: int | None = None) -> str | None:
    """Why this looks like an SSH session, or None if it does not."""
    for var in SSH_ENV_VARS:
        if env.get(var):
            return f"{var} is set"
    rhost = env.get("PAM_RHOST", "").strip()
    if rhost and rhost not in _LOCAL_HOSTS:
        return f"PAM_RHOST is {rhost!r} (a remote login)"
    ancestor = ssh_ancestor(proc_dir, pid)
    if ancestor is not None:
        return f"running under {ancestor}"
    return None


def lid_closed(proc_dir: str | Path = "/proc") -> bool:
    """True when an ACPI lid state file under ``proc_dir`` says ``closed``."""
    for state in sorted(Path(proc_dir).glob(LID_GLOB)):
        try:
            if "closed" in state.read_text(encoding="utf-8", errors="replace").lower():
                return True
        except OSError:
            continue
    return False


def check_guards(*, refuse_ssh: bool, refuse_lid_closed: bool, env: Mapping[str, str] | None = None,
                 proc_dir: str | Path = "/proc", pid: int | None = None) -> None:
    """Raise :class:`~edge.errors.UnlockRefused` if policy forbids face unlock right now.

    Args:
        refuse_ssh: refuse in an SSH session.
        refuse_lid_closed: refuse while the laptop lid is closed.
        env: the environment to inspect (default ``os.environ``).
        proc_dir: the /proc root (tests pass a fake tree).
        pid: the process whose ancestors are searched for sshd (default: this one; the warm
            service passes its client's, from the socket's peer credentials).
    """
    env = os.environ if env is None else env
    if refuse_ssh:
        reason = ssh_reason(env, proc_dir, pid)
        if reason is not None:
            raise UnlockRefused(f"face unlock is disabled over SSH ({reason})")
    if refuse_lid_closed and lid_closed(proc_dir):
        raise UnlockRefused(f"face unlock is disabled while the lid is closed ({Path(proc_dir) / LID_GLOB})")
