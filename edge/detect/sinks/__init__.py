"""Event sinks, chosen on the command line with ``--sink`` (repeatable).

=================================  ==========================================================
``jsonl:PATH``                      JSON lines appended to a file (``jsonl:-``: standard output)
``mqtt://[U[:P]@]HOST[:PORT]/PFX``  MQTT, QoS 1, buffered on disk (``mqtts://`` for TLS)
``http://URL``, ``https://URL``     webhook POST per event, buffered on disk, retried
``snapshots:DIR``                   JPEG per frame with events, boxes drawn
=================================  ==========================================================

Example:
    >>> spec = parse_sink_spec("mqtt://127.0.0.1:1883/home")
    >>> spec.kind, spec.target
    ('mqtt', 'mqtt://127.0.0.1:1883/home')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from edge.detect.sinks.base import Backoff, EventBatch, Sink
from edge.detect.sinks.buffer import DEFAULT_BUFFER_LIMIT, DiskBuffer

__all__ = ["Sink", "EventBatch", "Backoff", "DiskBuffer", "SinkSpec", "parse_sink_spec", "open_sink",
           "SINK_FORMS", "DEFAULT_BUFFER_LIMIT"]

SINK_FORMS = ("jsonl:PATH (jsonl:- for stdout)", "mqtt://[USER[:PASSWORD]@]HOST[:PORT]/PREFIX (or mqtts://)",
              "http://URL or https://URL (webhook)", "snapshots:DIR")


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``--sink`` value: ``kind`` is jsonl, mqtt, http or snapshots."""

    kind: str
    target: str


def parse_sink_spec(spec: str) -> SinkSpec:
    """Recognise a ``--sink`` value.

    Raises:
        ValueError: the spec matches no form (the message lists them).
    """
    s = spec.strip()
    low = s.lower()
    if low.startswith("jsonl:") and len(s) > len("jsonl:"):
        return SinkSpec("jsonl", s[len("jsonl:"):])
    if low.startswith("snapshots:") and len(s) > len("snapshots:"):
        return SinkSpec("snapshots", s[len("snapshots:"):])
    if low.startswith(("mqtt://", "mqtts://")):
        return SinkSpec("mqtt", s)
    if low.startswith(("http://", "https://")):
        return SinkSpec("http", s)
    raise ValueError(f"unrecognised sink {spec!r}; accepted forms:\n  " + "\n  ".join(SINK_FORMS))


def _buffer_file(buffer_dir: Path, kind: str, target: str, device: str) -> Path:
    """One buffer file per sink target and device, stable across restarts."""
    digest = hashlib.sha256(f"{target}|{device}".encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", target.split("@")[-1])[:48]
    return buffer_dir / f"{kind}-{readable}-{digest}.sqlite"


def open_sink(spec: str | SinkSpec, *, device: str, buffer_dir: str | Path,
              buffer_limit: int = DEFAULT_BUFFER_LIMIT, backoff: Backoff | None = None) -> Sink:
    """Create the sink a ``--sink`` value names.

    Args:
        spec: the value, or a parsed :class:`SinkSpec`.
        device: device name (MQTT topics, events).
        buffer_dir: directory of the disk buffers of network sinks.
        buffer_limit: events each network sink keeps while its peer is away.
        backoff: retry delays of network sinks.

    Raises:
        ValueError: bad spec. ImportError: a sink whose package is not installed.
        SinkError: a file or directory that cannot be opened.
    """
    s = parse_sink_spec(spec) if isinstance(spec, str) else spec
    if s.kind == "jsonl":
        from edge.detect.sinks.jsonl import JsonlSink
        return JsonlSink(s.target)
    if s.kind == "snapshots":
        from edge.detect.sinks.snapshots import SnapshotSink
        return SnapshotSink(s.target)
    path = _buffer_file(Path(buffer_dir), s.kind, s.target, device)
    if s.kind == "mqtt":
        from edge.detect.sinks.mqtt import MqttSink
        return MqttSink(s.target, device=device, buffer_path=path, buffer_limit=buffer_limit, backoff=backoff)
    from edge.detect.sinks.http import HttpSink
    return HttpSink(s.target, buffer_path=path, buffer_limit=buffer_limit, backoff=backoff)
