"""``edge serve`` for real: a subprocess over a looping folder of COCO images with people, spoken to
over HTTP. Authentication, limits and bad uploads, events (history and SSE), the MJPEG live view,
detections and face recognition of uploaded images, and the face library."""

from __future__ import annotations

import http.client
import json
import time
import os
import stat
import struct
import subprocess
import sys
import urllib.request
import zlib
from pathlib import Path

import pytest

from _unlock_helpers import deepface_people, liveness_models
from _web_server import WebServer, people_folder, wait_for

pytest.importorskip("fastapi", reason="the web extra: pip install 'edgesight[web]'")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def people(data_dir):
    return deepface_people(data_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    work = tmp_path_factory.mktemp("web-api")
    srv = WebServer(work, people_folder(data_dir, work / "source"), liveness_dir=liveness_models(tmp_path_factory),
                    extra=["--bench-dir", str(work / "bench")])
    yield srv
    assert srv.stop() == 0, srv.log.read_text()[-3000:]


def test_init_token_stores_only_a_hash_and_never_overwrites(tmp_path):
    path = tmp_path / "etc" / "web_token.sha256"
    run = lambda *a: subprocess.run([sys.executable, "-m", "edge", "serve", "--init-token", "--token-hash-file",
                                     str(path), *a], capture_output=True, text=True)
    first = run()
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    stored = path.read_text()
    assert len(token) >= 40 and token not in stored and stored.startswith("sha256:")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = run()
    assert again.returncode == 2 and "already exists" in again.stderr and path.read_text() == stored
    assert run("--force").returncode == 0 and path.read_text() != stored


def test_serve_refuses_to_start_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_WEB_TOKEN", "EDGE_WEB_TOKEN_HASH")}
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--source", "synthetic", "--listen", "127.0.0.1:0",
                        "--token-hash-file", str(tmp_path / "missing.sha256")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "missing.sha256" in r.stderr and "Traceback" not in r.stderr
    loose = tmp_path / "token"
    loose.write_text("x" * 30)
    loose.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--source", "synthetic", "--token-file", str(loose)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "chmod 600" in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--source", "synthetic", "--listen", "nohost"],
                       capture_output=True, text=True, env={**env, "EDGE_WEB_TOKEN": "y" * 30})
    assert r.returncode == 2 and "--listen must be HOST:PORT" in r.stderr


@pytest.mark.parametrize("path", ["/api/events", "/api/faces", "/api/frame.jpg", "/api/release", "/api/attempts",
                                  "/api/stream.mjpg", "/api/events/stream"])
def test_protected_endpoints_need_the_token(server, path):
    assert server.request("GET", path, auth=False).status == 401
    bad = server.request("GET", path, auth="not-the-token-at-all")
    assert bad.status == 401 and bad.json()["error"] == "invalid token"
    assert bad.headers.get("WWW-Authenticate") == "Bearer"


def test_health_page_and_openapi_are_public(server):
    assert server.request("GET", "/api/health", auth=False).json()["status"] == "ok"
    page = server.request("GET", "/", auth=False)
    assert page.status == 200 and b"/static/app.js" in page.body
    spec = server.request("GET", "/api/openapi.json", auth=False).json()
    assert "/api/recognize" in spec["paths"] and "multipart/form-data" in json.dumps(spec["paths"]["/api/recognize"])


def test_state_changes_refuse_the_cookie_without_the_bearer_token(server):
    login = server.request("POST", "/api/session", body=json.dumps({"token": server.token}).encode(),
                           content_type="application/json", auth=False)
    cookie = login.headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=strict" in login.headers["set-cookie"]
    assert server.request("GET", "/api/events?limit=1", auth=False, headers={"Cookie": cookie}).status == 200
    assert server.request("DELETE", "/api/faces/anyone", auth=False, headers={"Cookie": cookie}).status == 401
    assert server.request("POST", "/api/session", body=b'{"token": "guess"}', content_type="application/json",
                          auth=False).status == 401


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` (a decompression bomb's signature) with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 64


@pytest.mark.parametrize("endpoint", ["/api/recognize", "/api/detect"])
@pytest.mark.parametrize("data, status, needle", [
    (b"", 400, "is empty"),
    (b"GIF89a not really an image" * 10, 415, "not a decodable image"),
    (b"\xff\xd8\xff\xe0 truncated jpeg", 415, "not a decodable image"),
    (_png_header(50_000, 50_000), 413, "50000×50000"),
])
def test_broken_and_huge_images_get_a_clear_4xx(server, endpoint, data, status, needle):
    r = server.upload(endpoint, [("image", "upload.bin", data)])
    assert r.status == status, r.body
    body = r.json()
    assert needle in body["error"] and "upload.bin" in body["error"] and b"Traceback" not in r.body


def test_oversized_bodies_and_missing_fields(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", "/api/recognize")  # announces 1 GiB; answered before any of it is sent
    for k, v in (("Authorization", f"Bearer {server.token}"), ("Content-Length", str(1 << 30)),
                 ("Content-Type", "multipart/form-data; boundary=x")):
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "bytes allowed" in json.loads(r.read())["error"]
    conn.close()
    r = server.upload("/api/recognize", [("picture", "x.jpg", b"123")])
    assert r.status == 422 and "image" in r.json()["error"]


def test_detections_of_an_uploaded_image(server, data_dir):
    data = (data_dir / "coco128" / "images" / "000000012280.jpg").read_bytes()
    r = server.upload("/api/detect", [("image", "people.jpg", data)])
    assert r.status == 200, r.body
    dets = r.json()["detections"]
    assert dets and all(d["label"] == "person" and len(d["box"]) == 4 for d in dets)


def test_events_history_filters_and_server_sent_events(server):
    wait_for(lambda: server.request("GET", "/api/events?label=person").json()["events"], "a person event")
    events = server.request("GET", "/api/events?label=person&zone=frame&limit=5").json()["events"]
    assert all(e["class_name"] == "person" and e["zone"] == "frame" for e in events)
    assert server.request("GET", "/api/events?label=giraffe").json()["events"] == []
    snap = server.request("GET", events[-1]["snapshot"])
    assert snap.status == 200 and snap.body[:2] == b"\xff\xd8"
    req = urllib.request.Request(server.url + "/api/events/stream?label=person",
                                 headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        lines, deadline = [], time.monotonic() + 180  # keep-alives would otherwise wait for ever
        while not any(line.startswith("data: ") for line in lines):
            assert time.monotonic() < deadline, f"no event on the stream in 180 s: {lines[-5:]}"
            lines.append(r.readline().decode().rstrip("\n"))
    event = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    assert event["class_name"] == "person" and event["event_type"] in ("entered", "left")
    # a client that reconnects with Last-Event-ID gets what it missed first, in order
    history = server.request("GET", "/api/events?limit=1000").json()["events"]
    resume = history[-4]["seq"]
    req = urllib.request.Request(server.url + "/api/events/stream", headers={
        "Authorization": f"Bearer {server.token}", "Last-Event-ID": str(resume)})
    with urllib.request.urlopen(req, timeout=60) as r:
        ids = []
        while len(ids) < 3:
            line = r.readline().decode()
            if line.startswith("id: "):
                ids.append(int(line[4:]))
    assert ids == [d["seq"] for d in history[-3:]]


def test_live_view_streams_jpeg_frames(server):
    req = urllib.request.Request(server.url + "/api/stream.mjpg", headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        frames = []
        while len(frames) < 2:
            line = r.readline()
            if line.lower().startswith(b"content-length:"):
                r.readline()
                frames.append(r.read(int(line.split(b":")[1])))
    assert all(f[:2] == b"\xff\xd8" and f[-2:] == b"\xff\xd9" for f in frames)
    live = server.request("GET", "/api/live").json()
    assert live["frame_index"] is not None


def test_enrol_recognise_rename_remove_and_attempts(server, people):
    photos = [("photos", p.name, p.read_bytes()) for p in people.enrol]
    r = server.upload("/api/faces/alice/photos", photos)
    assert r.status == 200, r.body
    result = r.json()
    assert result["user"] == "alice" and result["templates"] == len(photos)
    assert {v["photo"] for v in result["verdicts"]} == {p.name for p in people.enrol}
    assert all(v["verdict"] == "kept" and v["faces"] == 1 for v in result["verdicts"])
    assert [u["user"] for u in server.request("GET", "/api/faces").json()["users"]] == ["alice"]
    again = server.upload("/api/faces/alice/photos", photos[:1])
    assert again.status == 409 and "already enrolled" in again.json()["error"]

    genuine = server.upload("/api/recognize", [("image", "g.jpg", people.genuine[0].read_bytes())]).json()
    face = max(genuine["faces"], key=lambda f: (f["box"][2] - f["box"][0]))
    assert face["user"] == "alice" and face["similarity"] >= genuine["threshold"]
    stranger = server.upload("/api/recognize", [("image", "s.jpg", people.strangers[0].read_bytes())]).json()
    assert stranger["faces"] and all(f["user"] is None for f in stranger["faces"])
    assert all(f["similarity"] < stranger["threshold"] for f in stranger["faces"])

    bad = server.upload("/api/faces/bob/photos", [("photos", "nobody.jpg",
                                                   (Path(__file__).parent.parent / "../shared/data/samples").resolve()
                                                   .joinpath("parrot.jpg").read_bytes())])
    if bad.status != 404:  # the sample is present: a photo without a face
        assert bad.status == 422 and bad.json()["verdicts"][0]["verdict"] == "no_face"

    renamed = server.request("PATCH", "/api/faces/alice", body=b'{"name": "alice2"}', content_type="application/json")
    assert renamed.status == 200
    assert [u["user"] for u in server.request("GET", "/api/faces").json()["users"]] == ["alice2"]
    attempts = server.request("GET", "/api/attempts?limit=10").json()["attempts"]
    assert [a["decision"] for a in attempts[:2]] == ["no_match", "match"] and attempts[1]["user"] == "alice"
    assert server.request("DELETE", "/api/faces/alice2").status == 200
    assert server.request("GET", "/api/faces").json()["users"] == []
    assert server.request("DELETE", "/api/faces/alice2").status == 404


def test_release_without_a_bundle_says_so(server):
    doc = server.request("GET", "/api/release").json()
    assert doc["release"] is None and "registry" in doc["note"]


def test_enrolment_from_the_live_camera(tmp_path, tmp_path_factory, data_dir, people):
    """A 'camera' replaying one person's photos: enrolment takes its samples from the live frames."""
    cam = tmp_path / "camera"
    cam.mkdir()
    for p in people.enrol + people.genuine:
        (cam / p.name).symlink_to(p)
    srv = WebServer(tmp_path / "srv", cam, liveness_dir=liveness_models(tmp_path_factory))
    try:
        r = srv.request("POST", "/api/faces/carol/camera", body=b'{"seconds": 30}', content_type="application/json")
        assert r.status == 200, r.body
        result = r.json()
        assert result["user"] == "carol" and result["templates"] == 5
        assert all(v["photo"].startswith("live frame ") for v in result["verdicts"])
        bad = srv.request("POST", "/api/faces/carol/camera", body=b'{"seconds": 500}', content_type="application/json")
        assert bad.status == 400 and "seconds" in bad.json()["error"]
    finally:
        assert srv.stop() == 0


def test_latest_bench_report_with_its_charts(server):
    assert server.request("GET", "/api/bench").status == 404  # nothing benchmarked yet: says where to look
    out = server.workdir / "bench" / "run1"
    r = subprocess.run([sys.executable, "-m", "edge", "bench", "--model", "mobilenet_v1_0.25_128_quant", "--iters", "5",
                        "--warmup", "1", "--threads", "1", "--processes", "1", "--out", str(out), "--format", "json"],
                       capture_output=True, text=True, timeout=300, cwd=out.parent.parent)
    assert r.returncode == 0, r.stderr
    doc = server.request("GET", "/api/bench").json()
    assert doc["path"].endswith("run1/bench.json") and doc["rows"][0]["variant"] == "mobilenet_v1_0.25_128_quant"
    assert float(doc["rows"][0]["p50_ms"]) > 0 and doc["charts"]  # drawn on demand (json only was written)
    png = server.request("GET", doc["charts"][0])
    assert png.status == 200 and png.body[:8] == b"\x89PNG\r\n\x1a\n"
    assert server.request("GET", "/api/bench/charts/evil.png").status == 404


@pytest.mark.parametrize("argv, needle", [
    (["--source", "/nonexistent/clip.mp4"], "/nonexistent/clip.mp4"),
    (["--source", "synthetic", "--zones", "/nonexistent/zones.toml"], "zones.toml"),
    (["--source", "synthetic", "--stream-fps", "0"], "argument --stream-fps: must be in (0, 120]"),
    (["--source", "synthetic", "--mqtt", "http://broker"], "mqtt://"),
    (["--source", "synthetic", "--bundle", "/nonexistent/bundle"], "/nonexistent/bundle"),
])
def test_bad_options_are_clear_errors(tmp_path, argv, needle):
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--listen", "127.0.0.1:0", "--no-faces", *argv],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "EDGE_WEB_TOKEN": "t" * 32})
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_a_taken_port_fails_fast_with_its_address(server):
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--source", "synthetic", "--no-faces", "--listen",
                        f"127.0.0.1:{server.port}"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "EDGE_WEB_TOKEN": "t" * 32})
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{server.port} (--listen)" in r.stderr, r.stderr
