"""Test helpers: a real Mosquitto broker on 127.0.0.1 and a collecting paho subscriber.

The broker runs Debian's ``/usr/sbin/mosquitto`` with a generated config (one loopback
listener, persistence off). It can be stopped and started again on the same port, and started
*gated*: anonymous clients (the device under test) are refused while the test's subscriber,
which has a password, gets in and subscribes; :meth:`Mosquitto.open_gate` then reloads the
config (SIGHUP) to admit everyone. Without the gate a restarted broker would race the device's
reconnect against the subscriber's resubscription, and a non-persistent broker drops messages
for topics nobody is subscribed to yet.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
PROBE_USER, PROBE_PASSWORD = "probe", "probe-secret"
#: Seconds any wait in these tests may take before it fails (generous: the machine is shared).
WAIT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = WAIT, what: str = "condition",
               poll: float = 0.02) -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


class Mosquitto:
    """A broker process on a fixed port that can be stopped and restarted."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.passwords = self.workdir / "passwords"
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(self.passwords), PROBE_USER, PROBE_PASSWORD],
                       check=True, capture_output=True)
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "mosquitto.log"

    def _write_conf(self, anonymous: bool) -> None:
        # Started as root, mosquitto switches to user "mosquitto", who cannot read pytest's
        # private tmp dir; run it as whoever runs the tests (ignored when that is not root).
        self.conf.write_text(f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                             f"listener {self.port} 127.0.0.1\n"
                             f"allow_anonymous {'true' if anonymous else 'false'}\n"
                             f"password_file {self.passwords}\n"
                             "persistence false\n")

    def start(self, *, gated: bool = False) -> "Mosquitto":
        assert self.proc is None, "broker already running"
        self._write_conf(anonymous=not gated)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)

        def accepting() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False

        wait_until(accepting, what=f"mosquitto to listen on port {self.port}")
        return self

    def open_gate(self) -> None:
        """Admit anonymous clients (config reload; connected clients are not affected)."""
        self._write_conf(anonymous=True)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=WAIT)
            self.proc = None


class Subscriber:
    """A paho client (with the probe password) that records every message on ``topic``.

    It reconnects on its own and subscribes again on every connection; :attr:`subscriptions`
    counts the SUBACKs so a test can wait for the subscription to be in place.
    """

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscriptions = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:12]}")
        self.client.username_pw_set(PROBE_USER, PROBE_PASSWORD)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        wait_until(lambda: self.subscriptions >= 1, what=f"subscription to {topic}")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            self.subscriptions += 1

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def payloads(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def event_ids(self) -> list[str]:
        """Event ids in arrival order, duplicates included."""
        return [json.loads(p)["event_id"] for p in self.payloads("/event")]

    def availability(self) -> list[str]:
        return [p.decode() for p in self.payloads("/availability")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
