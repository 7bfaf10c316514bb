"""Home Assistant entities over MQTT discovery, on the MQTT sink's own connection.

:class:`HomeAssistantSink` *is* an :class:`~edge.detect.sinks.mqtt.MqttSink` (same client, disk
buffer, in-order QoS 1 events, retained ``online`` birth and ``offline`` last will on
``<prefix>/<device>/availability``); on every connection it also publishes, retained, one
discovery message per entity under ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``
as Home Assistant documents MQTT discovery, so the entities appear without any YAML:

- ``sensor`` per zone and label: objects of that label in the zone now (``<base>/zone/<zone>/<label>``,
  retained, updated when a track enters or leaves);
- ``sensor`` "last recognised face": the user name, with similarity and time as attributes
  (``<base>/face/last``, retained JSON);
- ``binary_sensor`` (device class ``connectivity``) on the availability topic itself;
- ``event`` entity on the sink's event topic (``event_type`` is the key it reads).

Every entity names the availability topic, so Home Assistant greys them out when the broker
delivers the last will. ``<base>`` is ``<prefix>/<device>``. States are published from the sink's
sender thread (paho's client is driven by that one thread); other threads queue them.

Example:
    >>> sink = HomeAssistantSink("mqtt://127.0.0.1/edgesight", device="porch",      # doctest: +SKIP
    ...                          buffer_path="/var/lib/edgesight/ha.sqlite", zones=["door"], labels=["person"])
    >>> sink.publish_face("alice", 0.71)                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence

from edge import __version__
from edge.detect.events import EventType
from edge.detect.sinks.base import EventBatch
from edge.detect.sinks.mqtt import OFFLINE, ONLINE, QOS_AT_LEAST_ONCE, MqttSink, parse_mqtt_url

__all__ = ["HomeAssistantSink", "DEFAULT_DISCOVERY_PREFIX", "object_id", "EVENT_TYPES"]

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
EVENT_TYPES = tuple(t.value for t in EventType)
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def object_id(*parts: str) -> str:
    """A discovery ``object_id`` / ``node_id``: only ``[a-zA-Z0-9_-]``, as Home Assistant requires."""
    return "_".join(_UNSAFE.sub("_", p).strip("_") or "x" for p in parts)


class HomeAssistantSink(MqttSink):
    """An MQTT sink that also makes Home Assistant entities (see the module docstring).

    Args:
        url, device, buffer_path, **kw: as :class:`~edge.detect.sinks.mqtt.MqttSink`.
        zones: zone names announced from the start (others are announced when first seen).
        labels: labels announced from the start for every zone.
        discovery_prefix: Home Assistant's discovery prefix (``homeassistant`` by default).
        faces: also announce the "last recognised face" sensor.
    """

    kind = "homeassistant"

    def __init__(self, url: str, *, device: str, buffer_path, zones: Sequence[str] = (), labels: Sequence[str] = (),
                 discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX, faces: bool = True, **kw) -> None:
        if not discovery_prefix or any(c in discovery_prefix for c in "+#") or discovery_prefix.strip("/") != discovery_prefix:
            raise ValueError(f"Home Assistant discovery prefix {discovery_prefix!r} must be a topic without "
                             "'+', '#' or surrounding '/'")
        self.discovery_prefix = discovery_prefix
        self.node_id = object_id("edgesight", device)
        self.faces = faces
        self._state_lock = threading.Lock()
        self._pairs: set[tuple[str, str]] = {(z, lab) for z in zones for lab in labels}
        self._inside: dict[tuple[str, str], set[int]] = {p: set() for p in self._pairs}
        self._pending_configs: dict[str, str] = {}
        self._pending_states: dict[str, str] = {}
        self._last_face: str | None = None
        self.discovery_published = 0
        self.base = f"{parse_mqtt_url(url).prefix}/{device}"  # before the sender thread starts
        super().__init__(url, device=device, buffer_path=buffer_path, **kw)

    # -- topics and payloads -----------------------------------------------------------------
    def zone_topic(self, zone: str, label: str) -> str:
        return f"{self.base}/zone/{object_id(zone)}/{object_id(label)}"

    @property
    def face_topic(self) -> str:
        return f"{self.base}/face/last"

    def config_topic(self, component: str, oid: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{oid}/config"

    def _common(self, oid: str, name: str) -> dict:
        return {"name": name, "unique_id": f"{self.node_id}_{oid}", "object_id": f"{self.node_id}_{oid}",
                "availability_topic": self.availability_topic, "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "device": {"identifiers": [self.node_id], "name": f"edgesight {self.device}",
                           "manufacturer": "edgesight", "model": "edge device", "sw_version": __version__},
                "origin": {"name": "edgesight", "sw_version": __version__}}

    def discovery_messages(self) -> dict[str, dict]:
        """Every entity's discovery topic → payload, for the zones and labels known now."""
        msgs = {}
        oid = "availability"
        msgs[self.config_topic("binary_sensor", oid)] = {
            **self._common(oid, "Online"), "state_topic": self.availability_topic, "payload_on": ONLINE,
            "payload_off": OFFLINE, "device_class": "connectivity", "entity_category": "diagnostic"}
        oid = "events"
        msgs[self.config_topic("event", oid)] = {**self._common(oid, "Detection events"),
                                                 "state_topic": self.event_topic, "event_types": list(EVENT_TYPES)}
        if self.faces:
            oid = "last_face"
            msgs[self.config_topic("sensor", oid)] = {
                **self._common(oid, "Last recognised face"), "state_topic": self.face_topic,
                "value_template": "{{ value_json.user }}", "json_attributes_topic": self.face_topic,
                "icon": "mdi:face-recognition"}
        with self._state_lock:
            pairs = sorted(self._pairs)
        for zone, label in pairs:
            oid = object_id(zone, label, "count")
            msgs[self.config_topic("sensor", oid)] = {
                **self._common(oid, f"{label} in {zone}"), "state_topic": self.zone_topic(zone, label),
                "unit_of_measurement": "objects", "state_class": "measurement", "icon": "mdi:counter"}
        return msgs

    # -- state changes (any thread) ------------------------------------------------------------
    def emit(self, batch: EventBatch) -> None:
        super().emit(batch)
        if not batch.events:
            return
        with self._state_lock:
            for e in batch.events:
                if e.event_type not in (EventType.ENTERED, EventType.LEFT):
                    continue
                pair = (e.zone, e.class_name)
                if pair not in self._pairs:  # a zone/label seen for the first time: announce it
                    self._pairs.add(pair)
                    self._inside[pair] = set()
                    oid = object_id(e.zone, e.class_name, "count")
                    self._pending_configs[self.config_topic("sensor", oid)] = ""  # filled by the sender thread
                inside = self._inside[pair]
                (inside.add if e.event_type is EventType.ENTERED else inside.discard)(e.track_id)
                self._pending_states[self.zone_topic(*pair)] = str(len(inside))

    def publish_face(self, user: str | None, similarity: float | None) -> None:
        """Set the "last recognised face" state (published retained from the sender thread)."""
        payload = json.dumps({"user": user, "similarity": None if similarity is None else round(float(similarity), 4),
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        with self._state_lock:
            self._last_face = payload
            self._pending_states[self.face_topic] = payload

    def counts(self) -> dict[str, dict[str, int]]:
        """Objects in each zone now, per label."""
        with self._state_lock:
            out: dict[str, dict[str, int]] = {}
            for (zone, label), ids in self._inside.items():
                out.setdefault(zone, {})[label] = len(ids)
            return out

    # -- sender thread -------------------------------------------------------------------------
    def _all_states(self) -> dict[str, str]:
        with self._state_lock:
            states = {self.zone_topic(*p): str(len(ids)) for p, ids in self._inside.items()}
            if self._last_face is not None:
                states[self.face_topic] = self._last_face
        return states

    def _connect(self) -> bool:
        if not super()._connect():
            return False
        # Every connection: a broker that lost its retained messages gets the entities again.
        for topic, payload in self.discovery_messages().items():
            self._client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=QOS_AT_LEAST_ONCE, retain=True)
            self.discovery_published += 1
        for topic, payload in self._all_states().items():
            self._client.publish(topic, payload, qos=QOS_AT_LEAST_ONCE, retain=True)
        with self._state_lock:
            self._pending_configs.clear()
            self._pending_states.clear()
        return True

    def _pump(self) -> None:
        client = self._client
        with self._state_lock:
            configs, self._pending_configs = self._pending_configs, {}
            states, self._pending_states = self._pending_states, {}
        if configs:
            messages = self.discovery_messages()
            for topic in configs:
                client.publish(topic, json.dumps(messages[topic], separators=(",", ":")), qos=QOS_AT_LEAST_ONCE,
                               retain=True)
                self.discovery_published += 1
        for topic, payload in states.items():
            client.publish(topic, payload, qos=QOS_AT_LEAST_ONCE, retain=True)
        super()._pump()

    def stats(self) -> dict:
        return {**super().stats(), "discovery_published": self.discovery_published}
