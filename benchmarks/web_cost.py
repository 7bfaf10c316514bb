"""What serving the page costs the detection pipeline: frame rate with the page open and streaming,
against the same pipeline with no web service, in the same process, rounds interleaved.

Each round runs :class:`edge.detect.service.DetectionService` over the same frames twice (order
alternating between rounds, so a drifting machine load biases neither side):

1. **bare**: the pipeline with a JSONL sink, as ``edge detect`` runs it;
2. **web**: the same plus what ``edge serve`` adds: the :class:`~edge.web.live.LiveSink`, the FastAPI
   app served by uvicorn from a thread of this process, and clients in a separate process holding
   the page's two long-lived requests open: the MJPEG live view (``/api/stream.mjpg``, rendered at
   ``--stream-fps``) and the SSE event stream (``/api/events/stream``).

The pipeline processes every frame as fast as it can (``all`` policy), so its rate is the capacity
the web service eats into. Prints the steady frame rate (the service's own meter) of both, the ratio
web / bare per round and its median, and the live-view frames the client received. The client
process (on a real installation: the browser, on another machine) is timed separately.

Usage:
    .venv/bin/python benchmarks/web_cost.py [--source DIR] [--frames 80] [--rounds 3] [--threads 2]
        [--stream-fps 10] [--viewers 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import paths  # noqa: E402
from edge.cli.detect_cmd import TRACK_LOW_SCORE  # noqa: E402
from edge.detect import create_detector  # noqa: E402
from edge.detect.service import DetectionService, ServiceOptions  # noqa: E402
from edge.detect.sinks.jsonl import JsonlSink  # noqa: E402
from edge.detect.tracker import ByteTracker, TrackerConfig  # noqa: E402
from edge.sources import open_source  # noqa: E402

CLIENT = r"""
# Stands in for browsers on other machines: reads the streams as raw bytes and counts the parts,
# spending as little of the shared CPU as a client can.
import signal, socket, sys, threading
port, token, viewers = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
counts = [0] * viewers
stop = threading.Event()
def read(path, i=None):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    tail = b""
    while not stop.is_set():
        data = s.recv(1 << 16)
        if not data:
            return
        if i is not None:
            counts[i] += (tail + data).count(b"--frame\r\n")
            tail = data[-8:]
threads = [threading.Thread(target=read, args=("/api/stream.mjpg", i), daemon=True) for i in range(viewers)]
threads.append(threading.Thread(target=read, args=("/api/events/stream",), daemon=True))
for t in threads:
    t.start()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
print("connected", flush=True)
stop.wait()
print(sum(counts), flush=True)
"""


def _tracker(score: float) -> ByteTracker:
    return ByteTracker(TrackerConfig(high_score=score, low_score=min(TRACK_LOW_SCORE, score), new_track_score=score))


class _Web:
    """The web service of ``edge serve`` on a free port, with a client process streaming from it."""

    def __init__(self, stream_fps: float, viewers: int, zones) -> None:
        import uvicorn

        from edge.web.app import WebState, create_app
        from edge.web.auth import TokenVerifier, hash_token, new_token
        from edge.web.live import EventHub, FrameHub, LiveSink

        self.token = new_token()
        self.frames, self.events = FrameHub(zones), EventHub()
        self.sink = LiveSink(self.frames, self.events)
        state = WebState(verifier=TokenVerifier([hash_token(self.token)]), frames=self.frames, events=self.events,
                         stream_fps=stream_fps)
        self.server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), self.token, str(viewers)],
                                       stdout=subprocess.PIPE, text=True)
        assert self.client.stdout.readline().strip() == "connected"
        while state.streams < viewers:
            time.sleep(0.02)

    def stop(self) -> dict:
        self.client.terminate()
        received = int(self.client.stdout.readline().strip() or 0)
        self.client.wait(30)
        self.server.should_exit = True
        self.thread.join(30)
        return {"stream_frames_received": received, "rendered": self.frames.rendered}


def run_once(detector, source: str, frames: int, score: float, tmp: Path, web: dict | None) -> dict:
    sinks = [JsonlSink(tmp / "events.jsonl")]
    w = None
    if web is not None:
        from edge.detect.zones import ZoneConfig

        w = _Web(web["stream_fps"], web["viewers"], ZoneConfig.whole_frame())
        sinks.append(w.sink)
    with open_source(source, max_frames=frames) as src:
        service = DetectionService(src, detector, sinks=sinks, tracker=_tracker(score),
                                   options=ServiceOptions(frame_policy="all", device="bench"))
        t0, c0 = time.perf_counter(), time.process_time()
        summary = service.run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"fps": summary.metrics["fps"], "fps_wall": summary.frames_processed / wall, "wall_s": wall,
           "cpu_ms_per_frame": cpu * 1e3 / max(summary.frames_processed, 1)}
    if w is not None:
        out.update(w.stop())
        out["stream_fps_achieved"] = out["stream_frames_received"] / wall / web["viewers"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", help="image folder or video (default: ../shared/data/coco128/images)")
    ap.add_argument("--model", default="yolox_nano_416")
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stream-fps", type=float, default=10.0)
    ap.add_argument("--viewers", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    source = args.source or str(paths.data_dir() / "coco128" / "images")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, create_detector(args.model, threads=args.threads,
                                                               score_threshold=TRACK_LOW_SCORE) as det:
        score = 0.3
        run_once(det, source, min(10, args.frames), score, Path(tmp), None)  # warm-up
        web = {"stream_fps": args.stream_fps, "viewers": args.viewers}
        for r in range(args.rounds):
            order = ("bare", "web") if r % 2 == 0 else ("web", "bare")
            got = {k: run_once(det, source, args.frames, score, Path(tmp), web if k == "web" else None) for k in order}
            got["ratio"] = got["web"]["fps"] / got["bare"]["fps"]
            rows.append(got)
            print(f"round {r + 1}: bare {got['bare']['fps']:.2f} fps, web {got['web']['fps']:.2f} fps "
                  f"(ratio {got['ratio']:.3f}; live view {got['web']['stream_fps_achieved']:.1f} fps received, "
                  f"{got['web']['rendered']} pictures rendered); CPU ms/frame bare "
                  f"{got['bare']['cpu_ms_per_frame']:.1f}, web {got['web']['cpu_ms_per_frame']:.1f}", flush=True)
    ratios = [r["ratio"] for r in rows]
    summary = {"model": args.model, "threads": args.threads, "frames": args.frames, "rounds": args.rounds,
               "stream_fps": args.stream_fps, "viewers": args.viewers, "median_ratio": statistics.median(ratios),
               "ratios": ratios, "cost_pct": (1 - statistics.median(ratios)) * 100,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
               "rounds_detail": rows}
    print(f"median web/bare frame rate: {summary['median_ratio']:.3f} → cost {summary['cost_pct']:.1f} % "
          f"(target <= 5 %); {summary['machine']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
