"""Test helper: a "device" = a real OpenSSH server (Debian ``openssh-server``) on 127.0.0.1 with a
throwaway host key and one authorized test key, a temporary device root laid out like a Raspberry
Pi OS root, and the device's service: a real ``edge serve`` (health endpoint) that a restart
command stops and starts again, as ``systemctl restart edge-web.service`` would.

Remote commands see the device root through ``EDGE_DEVICE_ROOT`` set in ``authorized_keys``
(``environment=``, with ``PermitUserEnvironment yes``), and this checkout's Python and tree through
``PATH`` / ``PYTHONPATH``: the same ``edge`` a real device runs, under another ``/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from _mosquitto import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def make_client_key(directory: Path) -> Path:
    """A throwaway ed25519 key pair for the tests' SSH client (``<dir>/id_ed25519``)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "edgesight-test", "-f", str(key)], check=True)
    return key


def _device_env(root: Path) -> dict[str, str]:
    python_dir = str(Path(sys.executable).parent)
    return {"EDGE_DEVICE_ROOT": str(root), "PYTHONPATH": str(ROOT), "PATH": f"{root / 'usr/local/bin'}:{python_dir}:/usr/bin:/bin",
            "EDGE_CACHE_DIR": str(root / "var/cache/edgesight"), "EDGE_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


#: Settings of the machine running the tests that must not reach the device (conftest sets some).
_HOST_ONLY = ("EDGE_RELEASES_DIR", "EDGE_BUNDLE", "EDGE_TRUST")


def _local_env(device_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}
    return {**env, **device_env}


class Device:
    """One device: sshd on a free loopback port, a device root, and its ``edge serve`` service."""

    def __init__(self, workdir: Path, name: str, client_key: Path, trust: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.root = workdir / "root"
        for d in ("etc/edgesight", "etc/systemd/system", "var/lib/edgesight", "run", "opt", "usr/local/bin", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
                                                  'VERSION_CODENAME=bookworm\n')
        (self.root / "etc/hostname").write_text(f"{name}\n")
        self.trust = trust
        self.env = _device_env(self.root)
        self.port = free_port()
        self.web_port = free_port()
        self.health_url = f"http://127.0.0.1:{self.web_port}/api/health"
        self._sshd_dir = workdir / "sshd"
        self._sshd_dir.mkdir()
        self._write_service_scripts()
        self._start_sshd(client_key)

    # -- sshd ------------------------------------------------------------------------------------------
    def _start_sshd(self, client_key: Path) -> None:
        d = self._sshd_dir
        host_key = d / "ssh_host_ed25519_key"
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        env_opts = ",".join(f'environment="{k}={v}"' for k, v in self.env.items())
        pub = Path(f"{client_key}.pub").read_text().strip()
        (d / "authorized_keys").write_text(f"{env_opts} {pub}\n")
        os.chmod(d / "authorized_keys", 0o600)
        config = d / "sshd_config"
        config.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitUserEnvironment yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
""")
        if not Path("/run/sshd").is_dir():  # the privilege-separation directory sshd insists on
            try:
                Path("/run/sshd").mkdir()
            except OSError as e:
                raise AssertionError(f"sshd needs /run/sshd ({e}): run `sudo mkdir -p /run/sshd` once") from None
        self._sshd_log = open(d / "sshd.log", "wb")
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=self._sshd_log,
                                     stderr=subprocess.STDOUT)

        def listening() -> bool:
            if self.sshd.poll() is not None:
                raise AssertionError(f"sshd exited {self.sshd.returncode}: {(d / 'sshd.log').read_text()[-2000:]}")
            import socket

            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, timeout=30, what=f"sshd on 127.0.0.1:{self.port}")

    @property
    def target(self) -> str:
        import getpass

        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    # -- the service -----------------------------------------------------------------------------------
    def _write_service_scripts(self) -> None:
        run = self.root / "run"
        self.token_hash = self.root / "etc/edgesight/web_token.sha256"
        subprocess.run([sys.executable, "-m", "edge", "serve", "--init-token", "--token-hash-file", str(self.token_hash)],
                       env=_local_env(self.env), capture_output=True, check=True)
        serve = (f"{sys.executable} -m edge serve --source synthetic:160x120 --fps 2 --no-faces --threads 1 "
                 f"--listen 127.0.0.1:{self.web_port} --token-hash-file {self.token_hash}")
        # Stands in for `systemctl restart edge-web.service`: stop the running service (its pid file),
        # start a new one detached (its own session, output to a log) and return at once.
        self.restart_cmd = str(self.root / "usr/local/bin/restart-edge-web")
        Path(self.restart_cmd).write_text(f"""#!/bin/sh
PIDFILE={run}/edge-web.pid
if [ -f "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null
  i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  kill -9 "$pid" 2>/dev/null
fi
# the new process records its own pid before it becomes edge serve: a kill of this script cannot
# leave a service nobody knows about
env {' '.join(f'-u {k}' for k in _HOST_ONLY)} {' '.join(f'{k}={v}' for k, v in self.env.items())} setsid sh -c 'echo $$ >> {run}/edge-web.pids; echo $$ > '"$PIDFILE"'; exec {serve}' >>{run}/edge-web.log 2>&1 </dev/null &
""")
        os.chmod(self.restart_cmd, 0o755)

    def restart_service(self) -> None:
        subprocess.run([self.restart_cmd], check=True, env=_local_env(self.env))

    def health(self) -> dict | None:
        import json

        try:
            with urllib.request.urlopen(self.health_url, timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def wait_release(self, rid: str, timeout: float = 60) -> dict:
        return wait_until(lambda: (h := self.health()) and h.get("release") == rid and h,
                          timeout=timeout, what=f"{self.name} health to report {rid}", poll=0.1)

    # -- state -----------------------------------------------------------------------------------------
    @property
    def releases(self) -> Path:
        return self.root / "var/lib/edgesight/releases"

    def current(self) -> str | None:
        link = self.releases / "current"
        return os.readlink(link) if link.is_symlink() else None

    def edge(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``edge ARGS`` run on the device (locally, under its root)."""
        return subprocess.run([sys.executable, "-m", "edge", *args], env=_local_env(self.env),
                              capture_output=True, text=True, check=check)

    def stop(self) -> None:
        pids = self.root / "run/edge-web.pids"
        for line in (pids.read_text().split() if pids.exists() else []):
            try:
                os.kill(int(line), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
        self._sshd_log.close()

