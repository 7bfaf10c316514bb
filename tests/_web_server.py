"""Test helper: a real ``edge serve`` process on 127.0.0.1 over a looping folder of COCO images,
with its own token, template store and liveness models, and small HTTP helpers (stdlib only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from _mosquitto import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
#: COCO images with people in them (the detector fires on them: events).
PEOPLE_IMAGES = ("000000012280.jpg", "000000011699.jpg", "000000010707.jpg", "000000009769.jpg")


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def multipart(fields: list[tuple[str, str, bytes]], extra: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body of files ``(field, filename, data)`` and plain ``extra`` fields."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in (extra or {}).items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in fields:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


class WebServer:
    """``edge serve`` in a subprocess; :meth:`request` speaks HTTP to it."""

    def __init__(self, workdir: Path, source: Path, *, liveness_dir: Path | None, extra: list[str] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hash_file = workdir / "web_token.sha256"
        out = subprocess.run([sys.executable, "-m", "edge", "serve", "--init-token", "--token-hash-file",
                              str(self.hash_file)], capture_output=True, text=True, check=True)
        self.token = out.stdout.strip()
        self.env = {**os.environ, "EDGE_UNLOCK_STORE": str(workdir / "templates"),
                    "EDGE_UNLOCK_KEY": str(workdir / "unlock.key"), "EDGE_UNLOCK_AUDIT": str(workdir / "audit.jsonl"),
                    "EDGE_UNLOCK_STATE": str(workdir / "state")}
        self.env.pop("EDGE_WEB_TOKEN", None)
        args = [sys.executable, "-m", "edge", "serve", "--source", str(source), "--loop", "--fps", "4",
                "--listen", f"127.0.0.1:{self.port}", "--token-hash-file", str(self.hash_file), "--threads", "1",
                "--device", "testcam", "--classes", "person",
                # each looped image's people are new tracks again (with the default 30 frames they
                # would live through the 4-image loop and events would stop after the first round)
                "--max-age", "1", *extra]
        args += ["--liveness-dir", str(liveness_dir)] if liveness_dir is not None else ["--no-liveness"]
        self.log = workdir / "serve.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_until(self._up, timeout=120, what=f"edge serve on {self.url}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"edge serve exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            return self.request("GET", "/api/health", auth=False).status == 200
        except OSError:
            return False

    def request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                auth: bool | str = True, headers: dict | None = None, timeout: float = 120) -> Response:
        h = dict(headers or {})
        if auth:
            h["Authorization"] = f"Bearer {self.token if auth is True else auth}"
        if content_type:
            h["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def upload(self, path: str, files: list[tuple[str, str, bytes]], extra: dict | None = None, **kw) -> Response:
        body, ctype = multipart(files, extra)
        return self.request("POST", path, body=body, content_type=ctype, **kw)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


def people_folder(data_dir: Path, target: Path) -> Path:
    """A folder of (links to) COCO images with people."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PEOPLE_IMAGES:
        (target / name).symlink_to(data_dir / "coco128" / "images" / name)
    return target


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def wait_for(predicate, what: str, timeout: float = 60.0):
    return wait_until(predicate, timeout=timeout, what=what, poll=0.2)


__all__ = ["WebServer", "Response", "multipart", "people_folder", "artifact", "wait_for", "time"]
