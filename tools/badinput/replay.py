"""Replay the bad inputs of the 'bad input never crashes, lies or loses data' issue and count outcomes.

Each case runs the real command line in a fresh process with a time limit and is classed as:
``refused`` (documented non-zero exit, no traceback, the message names the file/option/field),
``unnamed`` (refused without naming it), ``accepted`` (exit 0 where a refusal was expected),
``traceback``, ``hang`` or ``signal``. Stored files a case starts from are compared before and
after (``lost``). Usage::

    python tools/badinput/replay.py [--models ../shared/models] [--data ../shared/data]

Prints one line per case and the counts; exits 1 when any case is not ``refused``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


def _card(models: Path, **change) -> dict:
    doc = json.loads((ROOT / "edge/registry/cards/mobilenet_v2_1.0_224_quant.json").read_text())
    doc["file"] = str(models / doc["file"])
    for key, value in change.items():
        if key.startswith("in_"):
            if value is _DEL:
                doc["inputs"][0].pop(key[3:])
            else:
                doc["inputs"][0][key[3:]] = value
        elif value is _DEL:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


_DEL = object()


def cases(tmp: Path, models: Path, data: Path) -> list[tuple[str, list[str], str, dict, list[Path]]]:
    """``(label, argv, needle, env, stored files)``."""
    image = str(sorted((data / "imagenet_samples").glob("*.jpg"))[0])
    out = []

    def card(label, needle, **change):
        p = tmp / f"{label}.json"
        p.write_text(json.dumps(_card(models, **change)))
        out.append((f"card {label}", ["edge", "run", str(p), image], needle, {}, []))

    card("file-7", "file", file=7)
    card("inputs-empty", "inputs", inputs=[])
    card("inputs-null", "inputs", inputs=None)
    card("labels-object", "labels", labels={"first": "zero"})
    card("resize-shorter-big", "resize_shorter", in_resize_shorter="big")
    card("shape-zero", "shape", in_shape=[1, 0, 224, 3])
    card("shape-negative", "shape", in_shape=[1, -224, 224, 3])
    card("dtype-contradicts", "dtype", in_dtype="float32")
    card("std-zero", "std", in_std=[0, 0, 0])
    card("no-outputs", "outputs", outputs=_DEL)
    latin = tmp / "latin1-card.json"
    latin.write_bytes(json.dumps(_card(models)).encode() + b" \xe9")
    out.append(("card non-UTF-8", ["edge", "run", str(latin), image], "latin1-card.json", {}, []))

    base = (ROOT / "firmware_configs/rpi4.toml").read_text()

    def profile(label, key, value, needle):
        lines = base.splitlines()
        for i, line in enumerate(lines):
            if line.split("=", 1)[0].strip() == key:
                lines[i] = f"{key} = {value}"
                break
        else:
            lines.append(f"{key} = {value}")
        p = tmp / f"profile-{label}.toml"
        p.write_text("\n".join(lines) + "\n")
        out.append((f"profile {label}", ["edge-export", "profiles", "--check", str(p)], needle, {}, []))
        out.append((f"profile {label} (unlock)", ["edge", "unlock", "list", "--profile", str(p)], needle,
                    {"EDGE_UNLOCK_STORE": str(tmp / "store-p"), "EDGE_UNLOCK_KEY": str(tmp / "key-p")}, []))

    profile("target_far-list", "target_far", "[0.001]", "target_far")
    profile("cores-list", "cores", "[2]", "cores")
    profile("threads-list", "threads", "[1, 2]", "threads")
    profile("zones-int", "zones", "5", "zones")
    latin_p = tmp / "latin1.toml"
    latin_p.write_bytes(base.encode() + b"\n# caf\xe9\n")
    out.append(("profile non-UTF-8", ["edge-export", "profiles", "--check", str(latin_p)], "latin1.toml", {}, []))

    for label, state in [("users-int", '{"users": {"alice": 5}}'), ("failures-1e400", '{"users": {"alice": {"failures": 1e400}}}'),
                         ("locked_until-NaN", '{"users": {"alice": {"failures": 9, "locked_until": NaN}}}'),
                         ("non-UTF-8", b'{"users": {"\xe9": {}}}')]:
        d = tmp / f"state-{label}"
        d.mkdir()
        f = d / "lockout.json"
        f.write_bytes(state if isinstance(state, bytes) else state.encode())
        out.append((f"lockout {label}", ["edge", "unlock", "verify", "alice", "--source", image, "--state", str(d)],
                    "lockout.json", {"EDGE_UNLOCK_STORE": str(tmp / "store-l"), "EDGE_UNLOCK_KEY": str(tmp / "key-l")},
                    [f]))

    model = "mobilenet_v2_1.0_224_quant"
    out += [("cli --threads 1000", ["edge", "run", model, image, "--threads", "1000"], "--threads", {}, []),
            ("cli synthetic:100000x100000", ["edge", "detect", "--source", "synthetic:100000x100000",
                                             "--max-frames", "1"], "100000", {}, []),
            ("cli --health-port 99999", ["edge", "detect", "--source", "synthetic", "--health-port", "99999"],
             "--health-port", {}, []),
            ("cli --nms-iou 5", ["edge", "detect", "--source", "synthetic", "--nms-iou", "5"], "--nms-iou", {}, []),
            ("cli -k -1", ["edge", "unlock", "enroll", "bob", "-k", "-1"], "--samples", {}, [])]
    fifo = tmp / "camera.jpg"
    os.mkfifo(fifo)
    out.append(("named pipe as image", ["edge", "run", model, str(fifo)], "camera.jpg", {}, []))
    bomb = tmp / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo("rpi4/zeros.bin")
        info.size = 2 << 30
        tar.addfile(info, io.BufferedReader(_Zeros(info.size)))
    from export.bundle.keys import generate_keypair

    _, pub = generate_keypair(tmp / "keys")
    out.append(("tar bomb as --bundle", ["edge", "run", "classifier", image, "--bundle", str(bomb), "--trust",
                                         str(pub)], "bomb.tar.gz", {}, []))
    plain = tmp / "store-is-a-file"
    plain.write_text("x")
    out.append(("--store is a file", ["edge", "unlock", "list", "--store", str(plain), "--key", str(tmp / "k")],
                "store-is-a-file", {}, [plain]))
    out.append(("MQTT sink on a closed port", ["edge", "detect", "--source", "synthetic", "--max-frames", "3",
                                               "--sink", "mqtt://127.0.0.1:9/edge"], "127.0.0.1:9", {}, []))
    inventory = tmp / "fleet.ini"
    inventory.write_bytes(b"garbage [[[\n\xff\xfe\n")
    out.append(("fleet inventory garbage", ["edge-export", "flash", str(bomb), "--inventory", str(inventory)],
                "fleet.ini", {}, []))
    out.append(("flash target not ssh://", ["edge-export", "flash", str(bomb), "--target", "ftp://pi@127.0.0.1"],
                "--target", {}, []))
    rep = tmp / "latin1-report.json"
    rep.write_bytes(b'{"kind": "caf\xe9"}')
    out.append(("bench report non-UTF-8", ["edge", "bench", "compare", str(rep), str(rep)], "latin1-report.json", {}, []))
    return out


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def run_case(argv: list[str], env: dict, cwd: Path) -> tuple[str, int | None, str]:
    tool = {"edge": "edge", "edge-export": "export.cli"}[argv[0]]
    cmd = [sys.executable, "-m", tool, *argv[1:]]
    full_env = {**os.environ, **env, "HOME": str(cwd)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=full_env, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "hang", None, ""
    if "Traceback (most recent call last)" in proc.stderr:
        return "traceback", proc.returncode, proc.stderr
    if proc.returncode < 0:
        return "signal", proc.returncode, proc.stderr
    if proc.returncode == 0:
        return "accepted", 0, proc.stdout + proc.stderr
    return "refused", proc.returncode, proc.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT.parent / "shared/models")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    args = ap.parse_args(argv)
    counts = Counter()
    with tempfile.TemporaryDirectory(prefix="edge-badinput-") as t:
        tmp = Path(t)
        for label, case_argv, needle, env, stored in cases(tmp, args.models.resolve(), args.data.resolve()):
            before = {p: p.read_bytes() for p in stored}
            outcome, code, text = run_case(case_argv, {"EDGE_MODEL_DIR": str(args.models.resolve()), **env}, tmp)
            if outcome == "refused" and needle not in text:
                outcome = "unnamed"
            if any(not p.exists() or p.read_bytes() != b for p, b in before.items()):
                outcome = "lost"
            counts[outcome] += 1
            last = (text.strip().splitlines() or [""])[-1][:150]
            print(f"{outcome:9s} exit {code!s:4s} {label}: {last}")
    total = sum(counts.values())
    print(f"\n{total} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0 if counts["refused"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
