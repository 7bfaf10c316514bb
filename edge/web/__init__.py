"""The device's web service (``edge serve``): a page and the HTTP API behind it.

Modules, one job each: :mod:`~edge.web.app` (routes), :mod:`~edge.web.auth` (tokens, sessions), :mod:`~edge.web.errors` (JSON errors),
:mod:`~edge.web.limits` (request body limit), :mod:`~edge.web.uploads` (bounded image decoding),
:mod:`~edge.web.live` (newest frame, events, the sink feeding them), :mod:`~edge.web.overlay`
(drawing), :mod:`~edge.web.faces` (face library over :mod:`edge.unlock`), :mod:`~edge.web.bench`
(latest bench report), :mod:`~edge.web.release` (release info), :mod:`~edge.web.runtime`
(detection thread). Home Assistant entities live beside the MQTT sink
(:mod:`edge.detect.sinks.homeassistant`).

Framework: **FastAPI on Starlette, served by uvicorn** (the ``web`` extra). Both are actively
maintained, pure Python over small wheels that exist for aarch64 and armv7 (no compiler on the Pi;
uvicorn runs on its pure-Python h11 parser, uvloop/httptools are optional), and the API gets an
OpenAPI document from the route signatures for free (``/api/openapi.json``), which integrators
(doorbells, Home Assistant ``rest`` sensors) and tests can read. aiohttp would be a little lighter
in memory but documents nothing by itself. The interactive docs pages are switched off: they load
their scripts from a CDN, which an offline device cannot reach.

Live view: **MJPEG** (``multipart/x-mixed-replace``) rather than a WebSocket. A browser shows it in
a plain ``<img>`` with no script and no decoding work on the device beyond one JPEG per streamed
frame, Home Assistant's MJPEG camera and VLC read the same URL, a slow viewer simply gets fewer
frames (only the newest is ever sent), and the picture (boxes, labels, track ids, zones drawn by
OpenCV, which releases the GIL) is encoded once per frame however many viewers there are, at most
``--stream-fps`` times a second and at most ``--stream-width`` wide. A WebSocket would need the
same JPEG plus a client-side decoder and drawing code for no gain on a Pi. Events are pushed with
**Server-Sent Events**: one-way, reconnecting by themselves with ``Last-Event-ID`` (the service
replays what was missed from its history), plain HTTP through any proxy.
"""
