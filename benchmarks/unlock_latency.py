"""How long ``edge unlock verify`` takes: cold command, and per frame / per stage in a stream.

Enrols one deepface person into a temporary store, then measures in one run:

- **cold**: wall time of ``edge unlock verify USER --source PHOTO`` as a new process (Python
  start, imports, model loading with sha256 checks, one frame, lockout and audit writes) — what
  a ``sudo`` user waits for through PAM;
- **stream**: the decision on a 640×480 frame sequence (their photos letterboxed to 640×480, as
  a camera delivers them) with the default 3-of-5 rule: per-frame milliseconds of every stage
  (detect, align, quality, liveness, embed, match) and the time to the decision;
- **PAM attempt, cold vs warm**: wall time of the PAM helper (``packaging/pam/edge-pam-unlock``,
  run as pam_exec runs it: PAM_USER, PAM_TYPE, a root-owned conf) from its start to its exit
  status, on a still photo, with ``EDGE_UNLOCK_SOCKET=off`` (cold: ``edge unlock verify`` in a
  new process) and with ``edge unlock serve`` running (warm: the stdlib client and one round
  trip), and the same through ``pamtester`` when it is installed and this runs as root; plus the
  warm time to decision on a 640×480 MJPEG video of the same frames. ``ratio`` is cold / warm.

Prints one JSON object. Figures depend on the machine and its load; compare them within a run.

    python benchmarks/unlock_latency.py --liveness-dir DIR [--runs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import paths  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.unlock.app import PipelineOptions, UnlockApp  # noqa: E402
from edge.unlock.config import UnlockConfig  # noqa: E402
from edge.unlock.verify import VerifyPolicy  # noqa: E402

PERSON = "person01"
FRAME_W, FRAME_H = 640, 480


def _photos(data: Path) -> list[Path]:
    import csv

    with open(data / "faces" / "deepface_identities.csv", newline="") as f:
        files = [r["file"] for r in csv.DictReader(f) if r["identity"] == PERSON]
    return [data / "faces" / "deepface" / n for n in sorted(files, key=lambda n: int("".join(filter(str.isdigit, n))))]


def _letterbox(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(FRAME_W / w, FRAME_H / h)
    small = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    out = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    y, x = (FRAME_H - small.shape[0]) // 2, (FRAME_W - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def _timed(cmd: list[str], env: dict, expect: int = 0) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    ms = (time.perf_counter() - t0) * 1e3
    if proc.returncode != expect:
        sys.exit(f"{' '.join(cmd[:3])}… exited {proc.returncode}, expected {expect}: {proc.stderr}{proc.stdout}")
    return ms


def _summary(cold: list[float], warm: list[float]) -> dict:
    c, w = statistics.median(cold), statistics.median(warm)
    return {"cold_median": round(c, 1), "warm_median": round(w, 1), "warm_min": round(min(warm), 1),
            "ratio": round(c / w, 2), "runs": len(warm)}


def _pam_cold_vs_warm(tmp: Path, env: dict, frames: Path, runs: int, threads: int) -> dict:
    """The PAM helper on a still photo, in-process vs through a running `edge unlock serve`."""
    import shutil
    import uuid

    helper = ROOT / "packaging" / "pam" / "edge-pam-unlock"
    edge_bin = Path(sys.executable).parent / "edge"
    sock = tmp / "sock" / "unlock.sock"
    video = tmp / "stream.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (FRAME_W, FRAME_H))
    for f in sorted(frames.glob("*.png")):
        writer.write(cv2.imread(str(f)))
    writer.release()

    def conf(socket: str) -> Path:
        path = tmp / f"pam-{'off' if socket == 'off' else 'warm'}.conf"
        lines = [f"EDGE_BIN={edge_bin}", "EDGE_UNLOCK_TIMEOUT=4", "EDGE_UNLOCK_ACK_TIMEOUT=1",
                 f"EDGE_UNLOCK_SOURCE={frames / '000.png'}", f"EDGE_UNLOCK_SOCKET={socket}",
                 f"EDGE_UNLOCK_ARGS=--threads {threads}",
                 *(f"{k}={v}" for k, v in env.items() if k.startswith("EDGE_UNLOCK_") and k != "EDGE_UNLOCK_SOURCE")]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)
        return path

    pam_env = {"PAM_USER": "bench", "PAM_TYPE": "auth", "PAM_SERVICE": "bench", "PATH": os.environ["PATH"]}
    cold_conf, warm_conf = conf("off"), conf(str(sock))
    server = subprocess.Popen([str(edge_bin), "unlock", "serve", "--socket", str(sock), "--client-source",
                               "--threads", str(threads)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:
            if "listening on" in line:
                break
        else:
            sys.exit(f"edge unlock serve did not start (exit {server.wait()})")
        client = [sys.executable, "-I", "-m", "edge.unlock.client", "bench", "--socket", str(sock)]
        _timed(client + ["--source", str(frames / "000.png")], env)  # first request: caches warm
        cold = [_timed([str(helper), "--conf", str(cold_conf)], pam_env) for _ in range(runs)]
        warm = [_timed([str(helper), "--conf", str(warm_conf)], pam_env) for _ in range(max(runs, 10))]
        out = {"helper_still": _summary(cold, warm)}
        stream_warm = [_timed(client + ["--source", str(video)], env) for _ in range(runs)]
        stream_cold = [_timed([str(edge_bin), "unlock", "verify", "bench", "--source", str(video), "--threads",
                               str(threads)], env) for _ in range(runs)]
        out["video_stream_decision"] = _summary(stream_cold, stream_warm)
        if os.geteuid() == 0 and shutil.which("pamtester") and Path("/etc/pam.d").is_dir():
            service = Path("/etc/pam.d") / f"edgesight-bench-{uuid.uuid4().hex[:8]}"
            try:
                rows = {}
                for name, c in (("cold", cold_conf), ("warm", warm_conf)):
                    service.write_text(f"auth required pam_exec.so quiet {helper} --conf {c}\n"
                                       "account required pam_permit.so\n")
                    n = runs if name == "cold" else max(runs, 10)
                    rows[name] = [_timed(["pamtester", service.name, "bench", "authenticate"], pam_env)
                                  for _ in range(n)]
                out["pamtester_still"] = _summary(rows["cold"], rows["warm"])
            finally:
                service.unlink(missing_ok=True)
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--liveness-dir", type=Path, help="MiniFASNet ONNX + cards (default: exported now)")
    p.add_argument("--runs", type=int, default=5, help="cold command runs (default 5)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    data = paths.data_dir()
    if data is None:
        sys.exit("no data directory (EDGE_DATA_DIR)")
    photos = _photos(data)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        live = args.liveness_dir
        if live is None:
            from export.sources.liveness import export_liveness

            live = tmp / "liveness"
            export_liveness(live)
        config = UnlockConfig.resolve({"store_dir": tmp / "store", "key_file": tmp / "key",
                                       "audit_file": tmp / "audit.jsonl", "state_dir": tmp / "state"}, env={})
        enrol = tmp / "enrol"
        enrol.mkdir()
        for ph in photos[:5]:
            (enrol / ph.name).symlink_to(ph)
        app = UnlockApp(config, PipelineOptions(liveness_dir=live, threads=args.threads))
        app.enroll("bench", str(enrol))
        frames = tmp / "frames"
        frames.mkdir()
        for i, ph in enumerate(photos[5:] * 2):
            cv2.imwrite(str(frames / f"{i:03d}.png"), _letterbox(load_image(ph)))
        outcome = app.verify("bench", str(frames), VerifyPolicy())
        app.close()
        d = outcome.decision

        env = {**os.environ, "EDGE_UNLOCK_STORE": str(config.store_dir), "EDGE_UNLOCK_KEY": str(config.key_file),
               "EDGE_UNLOCK_AUDIT": str(config.audit_file), "EDGE_UNLOCK_STATE": str(config.state_dir),
               "EDGE_UNLOCK_LIVENESS_DIR": str(live)}
        cold = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "edge", "unlock", "verify", "bench", "--source",
                                   str(frames / "000.png"), "--threads", str(args.threads)],
                                  env=env, cwd=ROOT, capture_output=True, text=True)
            cold.append((time.perf_counter() - t0) * 1e3)
            if proc.returncode != 0:
                sys.exit(f"verify failed ({proc.returncode}): {proc.stderr}")
        pam = _pam_cold_vs_warm(tmp, env, frames, args.runs, args.threads)
    print(json.dumps({
        "threads": args.threads, "frame": f"{FRAME_W}x{FRAME_H}",
        "pam_attempt_ms": pam,
        "stream": {"accepted": d.accepted, "rule": f"{d.k} of {d.n}", "frames": len(d.frames),
                   "decision_ms": round(d.elapsed_ms, 1), "model_load_ms": round(outcome.load_ms, 1),
                   "per_frame_ms": {k: round(v, 2) for k, v in d.latency_ms().items()}},
        "cold_command_ms": {"median": round(statistics.median(cold), 1), "min": round(min(cold), 1),
                            "runs": len(cold)},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
