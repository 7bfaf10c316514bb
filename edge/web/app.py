"""The HTTP API and the page (FastAPI). The page uses only this API.

Public: ``GET /`` (the page shell, which shows nothing until given the token), ``/static/*``,
``GET /api/health``, ``GET /api/openapi.json``, ``POST /api/session``. Everything else needs
``Authorization: Bearer TOKEN`` (or, on ``GET`` only, the page's session cookie): the live view
and snapshots reveal faces, and enrolment, rename and removal change state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from edge import __version__
from edge.types import Frame
from edge.web.auth import SESSION_COOKIE, SessionStore, TokenVerifier, bearer_token
from edge.web.errors import install_error_handlers
from edge.web.faces import FaceService, live_frames
from edge.web.limits import BodyLimitMiddleware
from edge.web.live import EventHub, FrameHub
from edge.web.uploads import UploadLimits, decode_upload

__all__ = ["WebState", "create_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
BOUNDARY = "frame"
#: Seconds between SSE keep-alive comments.
SSE_KEEPALIVE_S = 15.0
#: Live-view viewers at most (each costs a socket and a wake-up per streamed frame).
MAX_STREAMS = 4
#: Event-stream (SSE) clients at most.
MAX_SUBSCRIBERS = 16
#: Seconds a failed sign-in waits before answering (slows guessing through the page's form).
FAILED_LOGIN_DELAY_S = 0.5


@dataclass
class WebState:
    """What the routes work with.

    Attributes:
        verifier, sessions: authentication.
        frames, events: the live view and the event history (fed by :class:`~edge.web.live.LiveSink`).
        faces: the face library (None: face features off).
        detect: ``image -> (detections, labels)`` for uploaded images (None: no detector).
        metrics: the detection service's ``/metrics`` (None before it runs).
        release: ``edge info``'s release part.
        release_id: the id of the release the service runs (:func:`edge.release.release_id`), shown
            by ``/api/health`` so a flash can tell that the restarted service runs the new one.
        bench_dir: where ``edge bench`` reports are looked for (newest ``bench.json``).
        stream_fps: live-view frames per second at most.
        limits: upload limits.
    """

    verifier: TokenVerifier
    frames: FrameHub = field(default_factory=FrameHub)
    events: EventHub = field(default_factory=EventHub)
    sessions: SessionStore = field(default_factory=SessionStore)
    faces: FaceService | None = None
    detect: Callable[[Any], tuple] | None = None
    metrics: Callable[[], dict] | None = None
    release: Callable[[], dict] = lambda: {"release": None}
    release_id: str | None = None
    bench_dir: Path | None = None
    stream_fps: float = 10.0
    limits: UploadLimits = field(default_factory=UploadLimits)
    streams: int = 0
    secure_cookie: bool = False


def create_app(state: WebState) -> FastAPI:
    """The FastAPI application serving ``state``."""
    app = FastAPI(title="edgesight device API", version=__version__, openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None,  # their pages load scripts from a CDN: not on an offline device
                  description="Live view, events, detections and face recognition of one edgesight device.")
    app.state.web = state

    install_error_handlers(app)

    # -- auth ------------------------------------------------------------------------------------
    def authenticated(request: Request) -> None:
        token = bearer_token(request.headers.get("authorization"))
        if token is not None:
            if state.verifier.check(token):
                return
            raise HTTPException(401, "invalid token")
        if request.method == "GET" and state.sessions.check(request.cookies.get(SESSION_COOKIE)):
            return
        raise HTTPException(401, "authentication required: send 'Authorization: Bearer TOKEN' (the token made "
                                 "by `edge serve --init-token`)")

    auth = [Depends(authenticated)]

    def need_faces() -> FaceService:
        if state.faces is None:
            raise HTTPException(503, "face features are off in this service (started with --no-faces)")
        return state.faces

    async def read_image(upload: UploadFile, what: str):
        data = await upload.read(state.limits.max_image_bytes + 1)
        name = f"{what} {upload.filename!r}" if upload.filename else what
        return await run_in_threadpool(decode_upload, data, name, state.limits)

    # -- page --------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(path)

    @app.get("/api/health", summary="Liveness of the service (public)")
    async def health():
        m = state.metrics() if state.metrics is not None else None
        status = "ok" if m is None or not m.get("error") else "detection_failed"
        return {"status": status, "version": __version__, "release": state.release_id, "frames": state.frames.seq,
                "fps": None if m is None else m.get("fps"), "detection_running": None if m is None else m.get("running")}

    @app.post("/api/session", summary="Trade the token for a page session cookie (GET requests only)")
    async def login(request: Request):
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            try:
                token = (await request.json()).get("token")
            except (ValueError, AttributeError):
                token = None
        if not isinstance(token, str) or not state.verifier.check(token):
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            raise HTTPException(401, "invalid token")
        resp = JSONResponse({"ok": True})
        resp.set_cookie(SESSION_COOKIE, state.sessions.create(), httponly=True, samesite="strict",
                        secure=state.secure_cookie, max_age=int(state.sessions.ttl_s), path="/")
        return resp

    @app.delete("/api/session", dependencies=auth, summary="End the page session")
    async def logout(request: Request):
        state.sessions.drop(request.cookies.get(SESSION_COOKIE))
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # -- live view -------------------------------------------------------------------------------
    @app.get("/api/stream.mjpg", dependencies=auth, summary="Live view: MJPEG with boxes, labels, track ids, zones",
             response_class=StreamingResponse)
    async def stream(request: Request):
        if state.streams >= MAX_STREAMS:
            raise HTTPException(503, f"{MAX_STREAMS} live views are open already")
        state.streams += 1
        period = 1.0 / state.stream_fps

        async def parts():
            try:
                last = -1
                while True:
                    t0 = time.monotonic()
                    if state.frames.seq != last:
                        # Inline, not in a worker thread: drawing and encoding a 640 px picture take
                        # under 1 ms (OpenCV releases the GIL), less than the hop to a thread would.
                        got = state.frames.jpeg()
                        if got is not None:
                            last, data = got
                            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                                   ).encode() + data + b"\r\n"
                    await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))
            finally:
                state.streams -= 1

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/api/frame.jpg", dependencies=auth, summary="The newest live picture (one JPEG)")
    async def frame():
        got = await run_in_threadpool(state.frames.jpeg)
        if got is None:
            raise HTTPException(503, "no frame yet")
        return Response(got[1], media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/live", dependencies=auth, summary="The newest frame's tracked detections")
    async def live():
        return state.frames.detections() or {"frame_index": None, "detections": []}

    @app.get("/api/metrics", dependencies=auth, summary="The detection service's metrics")
    async def metrics():
        return state.metrics() if state.metrics is not None else {}

    # -- events ----------------------------------------------------------------------------------
    @app.get("/api/events", dependencies=auth, summary="Recent events, newest last (filters: label, zone)")
    async def events(label: str | None = None, zone: str | None = None, after: int = 0,
                     limit: int = Query(100, ge=1, le=1000)):
        return {"events": state.events.recent(label=label, zone=zone, after=after, limit=limit)}

    @app.get("/api/events/stream", dependencies=auth, summary="Events as they happen (Server-Sent Events)",
             response_class=StreamingResponse)
    async def event_stream(request: Request, label: str | None = None, zone: str | None = None):
        try:
            after = int(request.headers.get("last-event-id") or 0)
        except ValueError:
            after = 0
        if state.events.subscribers >= MAX_SUBSCRIBERS:
            raise HTTPException(503, f"{MAX_SUBSCRIBERS} event streams are open already")
        sub = state.events.subscribe(label, zone)
        backlog = state.events.recent(label=label, zone=zone, after=after, limit=1000) if after else []

        async def messages():
            try:
                yield b"retry: 2000\n\n"
                sent = after
                for d in backlog:
                    sent = d["seq"]
                    yield f"id: {d['seq']}\nevent: detection\ndata: {json.dumps(d)}\n\n".encode()
                while True:
                    try:
                        d = await asyncio.wait_for(sub.queue.get(), SSE_KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if d["seq"] <= sent:
                        continue
                    sent = d["seq"]
                    yield f"id: {d['seq']}\nevent: detection\ndata: {json.dumps(d)}\n\n".encode()
            finally:
                state.events.unsubscribe(sub)

        return StreamingResponse(messages(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/events/{event_id}/snapshot.jpg", dependencies=auth, summary="An event's snapshot (JPEG crop)")
    async def snapshot(event_id: str):
        data = state.events.snapshot(event_id)
        if data is None:
            raise HTTPException(404, f"no snapshot for event {event_id!r} (only the newest are kept)")
        return Response(data, media_type="image/jpeg")

    # -- detections and recognition of uploaded images --------------------------------------------
    @app.post("/api/detect", dependencies=auth, summary="Objects in an uploaded image (multipart field 'image')")
    async def detect(image: UploadFile = File(..., description="JPEG/PNG image")):
        if state.detect is None:
            raise HTTPException(503, "this service runs no object detector")
        img = await read_image(image, "image")
        dets, labels = await run_in_threadpool(state.detect, img)
        from edge.web.live import label_name

        return {"width": int(img.shape[1]), "height": int(img.shape[0]),
                "detections": [{"box": [round(v, 1) for v in box], "label": label_name(labels, c), "class_id": c,
                                "score": round(s, 4)}
                               for box, c, s in zip(dets.xyxy.tolist(), dets.class_id.tolist(), dets.score.tolist())]}

    @app.post("/api/recognize", dependencies=auth,
              summary="Faces in an uploaded image (multipart field 'image'): box, best enrolled user or null, similarity")
    async def recognize(request: Request, image: UploadFile = File(..., description="JPEG/PNG image")):
        faces = need_faces()
        img = await read_image(image, "image")
        client = request.client.host if request.client else ""
        return await run_in_threadpool(lambda: faces.recognize(img, client=client))

    # -- face library -------------------------------------------------------------------------------
    @app.get("/api/faces", dependencies=auth, summary="Enrolled people")
    async def faces_list():
        return await run_in_threadpool(need_faces().users)

    @app.post("/api/faces/{user}/photos", dependencies=auth,
              summary="Enrol a person from uploaded photos (multipart field 'photos', repeatable); per-photo verdicts")
    async def enrol_photos(user: str, photos: list[UploadFile] = File(...), mode: str = Form("new"),
                           allow_duplicate: bool = Form(False)):
        faces = need_faces()
        if mode not in ("new", "replace", "add"):
            raise HTTPException(400, f"mode must be new, replace or add, got {mode!r}")
        if len(photos) > state.limits.max_files:
            raise HTTPException(413, f"{len(photos)} photos sent, at most {state.limits.max_files} per request")
        frames = []
        for i, up in enumerate(photos):
            name = up.filename or f"photo {i + 1}"
            img = await read_image(up, "photo")
            frames.append(Frame(img, float(i), i, "upload", {"path": name}))
        return await run_in_threadpool(lambda: faces.enroll(user, frames, count=len(frames),
                                                            replace=mode == "replace", add=mode == "add",
                                                            allow_duplicate=allow_duplicate))

    @app.post("/api/faces/{user}/camera", dependencies=auth,
              summary="Enrol a person from the live camera (body: {seconds, mode})")
    async def enrol_camera(user: str, request: Request):
        faces = need_faces()
        try:
            body = await request.json()
        except ValueError:
            body = {}
        seconds = float((body or {}).get("seconds", 10))
        mode = (body or {}).get("mode", "new")
        if not 1 <= seconds <= 60 or mode not in ("new", "replace", "add"):
            raise HTTPException(400, "seconds must be in [1, 60] and mode new, replace or add")
        return await run_in_threadpool(lambda: faces.enroll(user, live_frames(state.frames, seconds), count=None,
                                                            replace=mode == "replace", add=mode == "add",
                                                            source="live camera"))

    @app.patch("/api/faces/{user}", dependencies=auth, summary="Rename an enrolled person (body: {name})")
    async def rename(user: str, request: Request):
        faces = need_faces()
        try:
            new = (await request.json()).get("name")
        except (ValueError, AttributeError):
            new = None
        if not isinstance(new, str):
            raise HTTPException(400, "body must be JSON {\"name\": NEW_NAME}")
        await run_in_threadpool(faces.rename, user, new)
        return {"ok": True, "user": new}

    @app.delete("/api/faces/{user}", dependencies=auth, summary="Remove an enrolled person's templates")
    async def remove(user: str):
        await run_in_threadpool(need_faces().remove, user)
        return {"ok": True}

    @app.get("/api/attempts", dependencies=auth, summary="Recent unlock and recognition attempts (audit log)")
    async def attempts(limit: int = Query(50, ge=1, le=500)):
        return {"attempts": await run_in_threadpool(need_faces().attempts, limit)}

    # -- release and bench --------------------------------------------------------------------------
    @app.get("/api/release", dependencies=auth, summary="The active release (what `edge info` shows)")
    async def release():
        return await run_in_threadpool(state.release)

    @app.get("/api/bench", dependencies=auth, summary="The latest bench report and its charts")
    async def bench():
        from edge.web.bench import latest_report

        return await run_in_threadpool(latest_report, state.bench_dir)

    @app.get("/api/bench/charts/{name}", dependencies=auth, summary="A chart of the latest bench report (PNG)")
    async def bench_chart(name: str):
        from edge.web.bench import chart_path

        path = await run_in_threadpool(chart_path, state.bench_dir, name)
        return FileResponse(path, media_type="image/png")

    app.add_middleware(BodyLimitMiddleware, limit=state.limits.max_body_bytes)
    return app
