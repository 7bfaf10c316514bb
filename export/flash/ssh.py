"""Reaching a device: ``ssh://user@host[:port]`` targets and the system OpenSSH client.

Why the system ``ssh`` rather than a Python SSH library (paramiko, asyncssh): it adds no
dependency, and it honours everything a user already has set up for their boards —
``~/.ssh/config`` (aliases, jump hosts, ``ProxyCommand``), the agent, hardware keys and their
``known_hosts``. Ansible drives the same client, so one device behaves the same whether it is
flashed alone or in a fleet.

Options always set: ``BatchMode=yes`` (never a password prompt: a flash is unattended),
``StrictHostKeyChecking=accept-new`` (the first contact records the board's host key, a changed key
is refused), ``ServerAliveInterval`` (a dead link is noticed in about 20 s instead of hanging).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SshTarget", "SshOptions", "ssh_argv"]

_TARGET = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\s\[\]]+)(?::(?P<port>\d{1,5}))?/?$")


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> "SshTarget":
        """``ssh://user@host[:port]`` (user optional: then OpenSSH's default). Raises ``ValueError`` naming --target."""
        m = _TARGET.match(text.strip())
        if not m or not 0 < int(m.group("port") or 22) < 65536:
            raise ValueError(f"--target must be ssh://user@host[:port] (e.g. ssh://pi@raspberrypi.local), got {text!r}")
        return cls(host=m.group("host").strip("[]"), user=m.group("user"), port=int(m.group("port") or 22))

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"{self.destination}:{self.port}"


@dataclass(frozen=True)
class SshOptions:
    identity: Path | None = None  # -i KEY (with IdentitiesOnly: only that key is offered)
    known_hosts: Path | None = None  # UserKnownHostsFile (default: OpenSSH's own)
    connect_timeout_s: int = 15
    extra: tuple[str, ...] = ()  # more -o options, e.g. ("ProxyJump=bastion",)


def ssh_argv(target: SshTarget, opts: SshOptions, remote: list[str]) -> list[str]:
    """The ``ssh`` command line running ``remote`` (each word quoted for the device's shell)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"ConnectTimeout={opts.connect_timeout_s}", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=4", "-p", str(target.port)]
    if opts.identity is not None:
        argv += ["-i", str(opts.identity), "-o", "IdentitiesOnly=yes"]
    if opts.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={opts.known_hosts}"]
    for o in opts.extra:
        argv += ["-o", o]
    return argv + [target.destination, "--", " ".join(shlex.quote(w) for w in remote)]
