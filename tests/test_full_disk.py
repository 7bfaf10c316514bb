"""A full disk while events are written: reported, and nothing already stored is lost.

Each case runs in a child process inside its own mount namespace (``unshare``) on a tiny tmpfs
that really fills up: the errors are the kernel's ENOSPC, not a simulation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_on_full_disk(tmp_path: Path, body: str, size_kib: int = 256) -> dict:
    """Run ``body`` (Python; ``DISK`` is the tmpfs path) on a ``size_kib`` tmpfs; return the
    JSON object it prints last."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed for the full-disk tests"
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "case.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\nDISK = {str(disk)!r}\n"
                      + textwrap.dedent(body))
    shell = f"mount -t tmpfs -o size={size_kib}k tmpfs '{disk}' && exec '{sys.executable}' '{script}'"
    proc = subprocess.run([unshare, "--map-root-user", "--mount", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FILL = """
import os
def fill(path, reserve=0):
    # take every free byte but ``reserve``
    st = os.statvfs(DISK)
    free = st.f_bavail * st.f_frsize - reserve
    with open(path, "wb") as f:
        try:
            f.write(b"\\0" * max(free, 0))
        except OSError:
            pass
"""


def test_jsonl_sink_reports_a_full_disk_and_keeps_every_earlier_line(tmp_path):
    out = _run_on_full_disk(tmp_path, FILL + """
import json, os
import numpy as np
from edge.detect.events import Event, EventType
from edge.detect.sinks.base import EventBatch
from edge.detect.sinks.jsonl import JsonlSink
from edge.errors import SinkError
from edge.types import Detections, Frame

def batch(i, n):
    ev = tuple(Event(event_type=EventType.ENTERED, class_name="person", class_id=0, track_id=i * 100 + k,
                     zone="door" * 80, score=0.9, box=(1.0, 2.0, 30.0, 40.0), time=1.0e9 + i,
                     frame_time=float(i), frame_index=i, device="cam") for k in range(n))
    return EventBatch(Frame(np.zeros((4, 4, 3), np.uint8), timestamp=float(i), index=i, source_id="cam"),
                      Detections.empty(), ev, ("person",))

path = os.path.join(DISK, "events.jsonl")
sink = JsonlSink(path)
sink.emit(batch(0, 3))
fill(os.path.join(DISK, "ballast"), reserve=2048)
errors = []
for i in range(1, 20):
    try:
        sink.emit(batch(i, 4))
    except SinkError as exc:
        errors.append(str(exc))
os.remove(os.path.join(DISK, "ballast"))
sink.emit(batch(99, 1))          # space again: the sink goes on
sink.close()
lines = open(path, encoding="utf-8").read().splitlines()
parsed = [json.loads(l) for l in lines]   # raises on a half-written line
print(json.dumps({"errors": errors, "frames": [p["frame_index"] for p in parsed], "written": sink.written}))
""")
    assert out["errors"], "the full disk was never reported"
    assert "events.jsonl" in out["errors"][0] and "No space left" in out["errors"][0]
    frames = out["frames"]
    assert frames[:3] == [0, 0, 0] and frames[-1] == 99
    # whole batches only: every frame other than 0 and 99 appears 4 times or not at all
    for f in set(frames) - {0, 99}:
        assert frames.count(f) == 4
    assert out["written"] == len(frames)


def test_event_buffer_reports_a_full_disk_and_keeps_what_it_held(tmp_path):
    out = _run_on_full_disk(tmp_path, FILL + """
import json, os
from edge.detect.sinks.buffer import DiskBuffer
from edge.errors import SinkError

path = os.path.join(DISK, "q.sqlite")
buf = DiskBuffer(path, limit=100000)
kept = buf.append([("event-%d-" % i + "y" * 200).encode() for i in range(20)])
fill(os.path.join(DISK, "ballast"), reserve=0)
error = None
for i in range(200):
    try:
        buf.append([("more-%d-" % i + "z" * 2000).encode()])
    except SinkError as exc:
        error = str(exc)
        break
buf.close()
os.remove(os.path.join(DISK, "ballast"))
again = DiskBuffer(path, limit=100000)
again.append([b"after-space-freed"])
held = [p.decode().split("-y")[0] for _, p in again.peek(1000) if p.startswith(b"event-")]
print(json.dumps({"error": error, "held": held, "last": again.peek(1000)[-1][1].decode()}))
""", size_kib=512)
    assert out["error"] and "q.sqlite" in out["error"]
    assert out["held"] == [f"event-{i}" for i in range(20)]
    assert out["last"] == "after-space-freed"
