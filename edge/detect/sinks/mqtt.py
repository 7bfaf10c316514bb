"""``mqtt://[USER[:PASSWORD]@]HOST[:PORT]/PREFIX``: events to an MQTT broker (paho-mqtt 2.x), QoS 1.

Topics (Home Assistant friendly):

- ``<prefix>/<device>/event``: one JSON event per message (QoS 1, not retained). The JSON has
  an ``event_type`` key, as Home Assistant's MQTT ``event`` entity expects.
- ``<prefix>/<device>/availability``: retained ``online`` once connected (birth) and ``offline``
  (last will, sent by the broker if the process dies; published by a clean shutdown too).

Delivery: every event is first appended to a :class:`~edge.detect.sinks.buffer.DiskBuffer`; a
background thread publishes from the head of that buffer, in order, with up to ``window``
messages in flight, and removes each one when the broker's PUBACK arrives. When the connection
drops, everything not acknowledged stays on disk; the thread reconnects with exponential backoff
and republishes from the oldest unacknowledged event. So nothing is lost while the broker is
away (up to the buffer limit, beyond which the oldest are dropped and counted) and events
arrive in order; a message whose PUBACK was lost with the connection is sent again, which is
QoS 1's "at least once" — consumers drop duplicates by ``event_id``.

The password may be given as ``EDGE_MQTT_PASSWORD`` in the environment instead of in the URL,
to keep it out of process listings and unit files.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from edge.detect.sinks.base import Backoff, EventBatch, Sink
from edge.detect.sinks.buffer import DEFAULT_BUFFER_LIMIT, DiskBuffer

__all__ = ["MqttSink", "MqttTarget", "parse_mqtt_url", "ONLINE", "OFFLINE"]

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
QOS_AT_LEAST_ONCE = 1
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
DEFAULT_PREFIX = "edgesight"
DEFAULT_KEEPALIVE = 30
#: Messages published but not yet acknowledged, at most.
DEFAULT_WINDOW = 32
#: Seconds to wait for the broker's CONNACK.
CONNECT_TIMEOUT = 5.0
#: Seconds one network-loop call may block (also the latency of a newly buffered event).
LOOP_POLL = 0.05
#: Seconds to wait for the PUBACK of the "offline" message on a clean shutdown.
OFFLINE_ACK_TIMEOUT = 2.0
PASSWORD_ENV = "EDGE_MQTT_PASSWORD"
_TOPIC_LEVEL = re.compile(r"[^/#+\x00]+")


@dataclass(frozen=True)
class MqttTarget:
    """A parsed ``mqtt://`` URL."""

    host: str
    port: int
    prefix: str
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse ``mqtt://`` or ``mqtts://`` ``[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]``.

    Raises:
        ValueError: naming the part of the URL that is wrong.

    Example:
        >>> parse_mqtt_url("mqtt://broker.lan:1884/home/cams")
        MqttTarget(host='broker.lan', port=1884, prefix='home/cams', tls=False, username=None, password=None)
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r} has no host (expected mqtt://HOST[:PORT]/PREFIX)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"MQTT URL {url!r} has an invalid port") from None
    if "#" in url or "?" in url:  # urlsplit would silently drop a '#...' fragment or '?...' query
        raise ValueError(f"MQTT URL {url!r} must not contain '#' or '?': the prefix cannot hold topic "
                         "wildcards and no query options are supported")
    tls = parts.scheme == "mqtts"
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if not all(_TOPIC_LEVEL.fullmatch(level) for level in prefix.split("/")):
        raise ValueError(f"MQTT topic prefix {prefix!r} must not contain '+', '#' or empty levels")
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if parts.username and password is None:
        password = os.environ.get(PASSWORD_ENV)
    return MqttTarget(parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), prefix, tls,
                      urllib.parse.unquote(parts.username) if parts.username else None, password)


class MqttSink(Sink):
    """Publish events to an MQTT broker through a disk buffer.

    Args:
        url: see :func:`parse_mqtt_url`.
        device: device name, the topic level after the prefix (no ``/``, ``+`` or ``#``).
        buffer_path: SQLite file of the disk buffer.
        buffer_limit: undelivered events kept (oldest dropped and counted beyond it).
        window: unacknowledged messages in flight at most.
        keepalive: MQTT keepalive, seconds.
        backoff: reconnect delays (default 0.2 s doubling to 5 s).

    Raises:
        ImportError: paho-mqtt is not installed (``pip install edgesight[mqtt]``).
        ValueError: bad URL or device name.

    Example:
        >>> sink = MqttSink("mqtt://127.0.0.1:1883/home", device="porch",          # doctest: +SKIP
        ...                 buffer_path="/var/lib/edgesight/mqtt.sqlite")
        >>> sink.event_topic                                                         # doctest: +SKIP
        'home/porch/event'
    """

    kind = "mqtt"

    def __init__(self, url: str, *, device: str, buffer_path: str | Path,
                 buffer_limit: int = DEFAULT_BUFFER_LIMIT, window: int = DEFAULT_WINDOW,
                 keepalive: int = DEFAULT_KEEPALIVE, backoff: Backoff | None = None) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise ImportError("the mqtt sink needs paho-mqtt 2.x: pip install 'edgesight[mqtt]'") from exc
        if not hasattr(mqtt, "CallbackAPIVersion"):
            raise ImportError(f"the mqtt sink needs paho-mqtt >= 2.0, found {getattr(mqtt, '__version__', '?')}")
        self._mqtt = mqtt
        self.target = parse_mqtt_url(url)
        if not _TOPIC_LEVEL.fullmatch(device or ""):
            raise ValueError(f"MQTT device name {device!r} must be non-empty without '/', '+' or '#'")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        t = self.target  # the name leaves out credentials: it shows up in logs and /metrics
        super().__init__(f"mqtt{'s' if t.tls else ''}://{t.host}:{t.port}/{t.prefix}")
        self.device = device
        base = f"{self.target.prefix}/{device}"
        self.event_topic, self.availability_topic = f"{base}/event", f"{base}/availability"
        self.client_id = f"edgesight-{device}"
        self.window, self.keepalive = window, keepalive
        self.buffer = DiskBuffer(buffer_path, limit=buffer_limit)
        self._backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._drain_deadline = 0.0
        self._client = None
        self._inflight: dict[int, int] = {}  # mid -> buffer seq
        self._acked: list[int] = []
        self._cursor = 0  # highest seq published on this connection
        self._connack: bool | None = None
        self._lost = False
        self._offline_mid: int | None = None
        self.state = "connecting"
        self.published = self.connections = self.connect_failures = 0
        self.last_error: str | None = None  # why the last connection attempt failed, for the summary
        self._thread = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._thread.start()

    # -- called from the pipeline ------------------------------------------------------------
    def emit(self, batch: EventBatch) -> None:
        if batch.events:
            self.buffer.append(e.to_json() for e in batch.events)

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.buffer) and self._thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(LOOP_POLL)
        return not len(self.buffer)

    def close(self, timeout: float | None = 5.0) -> None:
        """Deliver what the broker will take within ``timeout`` s, publish ``offline``, disconnect.

        Events not delivered by then stay in the disk buffer and go first on the next start.
        """
        if self._stop.is_set():
            return
        self._drain_deadline = time.monotonic() + (timeout or 0.0)
        self._stop.set()
        self._thread.join()
        self.buffer.close()
        self.state = "closed"

    def stats(self) -> dict:
        return {"state": self.state, "buffered": len(self.buffer), "dropped": self.buffer.dropped,
                "published": self.published, "inflight": len(self._inflight),
                "connections": self.connections, "connect_failures": self.connect_failures,
                "last_error": self.last_error}

    # -- paho callbacks (run inside client.loop(), on the sender thread) ----------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = not reason_code.is_failure
        if reason_code.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.target.host, self.target.port, reason_code)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._lost = True

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._acked.append(seq)
        elif mid == self._offline_mid:
            self._offline_mid = None

    # -- sender thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                if self._stop.is_set():
                    if self._client is None or (not len(self.buffer) and not self._inflight) \
                            or time.monotonic() >= self._drain_deadline:
                        break
                if self._client is None:
                    if self._stop.is_set():
                        break
                    if not self._connect() and self._backoff.wait(self._stop):
                        break
                    continue
                self._pump()
        except Exception:  # never die silently: the buffer keeps the events for the next start
            log.exception("MQTT sender thread failed")
        finally:
            self._goodbye()

    def _new_client(self):
        mqtt = self._mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        client.max_inflight_messages_set(self.window)
        client.will_set(self.availability_topic, OFFLINE, qos=QOS_AT_LEAST_ONCE, retain=True)
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set()
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect(self) -> bool:
        self.state = "connecting"
        client = self._new_client()
        self._connack, self._lost = None, False
        try:
            client.connect(self.target.host, self.target.port, self.keepalive)
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while self._connack is None and not self._lost and not self._stop.is_set() \
                    and time.monotonic() < deadline:
                if client.loop(LOOP_POLL) != self._mqtt.MQTT_ERR_SUCCESS:
                    break
        except (OSError, ValueError) as exc:
            self.last_error = f"broker {self.target.host}:{self.target.port} unreachable: {exc}"
            # The first failure is worth a warning; the retries that follow are only logged.
            (log.warning if not self.connect_failures else log.info)("MQTT %s", self.last_error)
        if self._connack is not True:
            if self._connack is False:
                self.last_error = f"broker {self.target.host}:{self.target.port} refused the connection"
            elif self.last_error is None:
                self.last_error = f"broker {self.target.host}:{self.target.port} did not answer"
            self.connect_failures += 1
            self.state = "disconnected"
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - a half-open client may fail in any way here
                pass
            return False
        self._client = client
        self._inflight.clear()
        self._cursor = 0
        self.connections += 1
        self.state = "connected"
        self._backoff.reset()
        client.publish(self.availability_topic, ONLINE, qos=QOS_AT_LEAST_ONCE, retain=True)
        log.info("MQTT connected to %s:%d", self.target.host, self.target.port)
        return True

    def _pump(self) -> None:
        client = self._client
        room = self.window - len(self._inflight)
        if room > 0 and not self._lost:
            for seq, payload in self.buffer.peek(room, after=self._cursor):
                info = client.publish(self.event_topic, payload, qos=QOS_AT_LEAST_ONCE)
                if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                    self._lost = True
                    break
                self._inflight[info.mid] = seq
                self._cursor = seq
        rc = client.loop(LOOP_POLL) if not self._lost else None
        if self._acked:
            acked, self._acked = self._acked, []
            self.buffer.remove(acked)
            self.published += len(acked)
        if self._lost or rc != self._mqtt.MQTT_ERR_SUCCESS:
            log.warning("MQTT connection to %s:%d lost; %d event(s) held on disk", self.target.host,
                        self.target.port, len(self.buffer))
            self._client = None
            self._inflight.clear()
            self.state = "disconnected"
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001
                pass

    def _goodbye(self) -> None:
        """Clean shutdown: retained ``offline`` (a clean disconnect does not fire the will)."""
        client, self._client = self._client, None
        if client is None:
            self.state = "disconnected"
            return
        try:
            info = client.publish(self.availability_topic, OFFLINE, qos=QOS_AT_LEAST_ONCE, retain=True)
            self._offline_mid = info.mid
            deadline = time.monotonic() + OFFLINE_ACK_TIMEOUT
            while self._offline_mid is not None and not self._lost and time.monotonic() < deadline:
                if client.loop(LOOP_POLL) != self._mqtt.MQTT_ERR_SUCCESS:
                    break
            if self._acked:  # PUBACKs that came in while waiting
                self.buffer.remove(self._acked)
                self.published += len(self._acked)
                self._acked = []
            client.disconnect()
            client.loop(LOOP_POLL)
        except Exception:  # noqa: BLE001 - shutting down; the will covers a failed goodbye
            log.debug("MQTT goodbye failed", exc_info=True)
        self.state = "disconnected"
