"""``edge detect --source SRC [--bundle B | --model NAME] [--sink ...]``: detection as a service.

Runs until the source ends, ``--max-frames`` is reached, or SIGTERM/SIGINT arrives; then every
event produced is handed to the sinks, which deliver what they can within ``--drain-timeout``
(network sinks keep the rest on disk for the next start). Exit 0 when every event was delivered;
exit 1 when a sink still holds undelivered events (each such sink is named on stderr with its
state and last error, e.g. a broker that never answered): they are kept, not lost, but the run
did not do its job and a script or systemd must see that. Exit 1 too when a network sink never
reached its server (nothing was buffered, but nothing was announced either), and when a sink refused a batch
(a full disk under a ``jsonl:`` file): what it already held is intact, the refused events are not
in it.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import sys
import threading
from pathlib import Path

from edge.cli import EXIT_FAIL
from edge.cli.argtypes import fraction, integer, number, port, threads

log = logging.getLogger(__name__)

DEFAULT_MODEL = "yolox_nano_416"
DEFAULT_SINK = "jsonl:-"
#: The bundle role whose model ``--bundle`` runs.
DETECTOR_ROLE = "detector"
#: Scores at or above this can continue a track (ByteTrack's second association); the detector
#: is run with this threshold, new tracks still need the user's ``--score``.
TRACK_LOW_SCORE = 0.1


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="run an object detector on a live source and report events",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--source", help="camera index, /dev/videoN, rtsp://, video file, image folder, picamera, "
                                    "jetson-csi[:N], synthetic[:WxH], gst:PIPELINE (default: the profile's camera.source)")
    from edge.release import add_release_args

    add_release_args(p)
    p.add_argument("--profile", metavar="NAME|TOML",
                   help="device profile: threads, providers, camera mode, score and NMS IoU ($EDGE_PROFILE; "
                        "default: the release's); options given here win")
    p.add_argument("--model", help="with a release: which of its detectors (by name) when it has several; without "
                                   f"one: registry name, model file or card JSON (default {DEFAULT_MODEL})")
    p.add_argument("--explain", action="store_true", help="print which model runs and where it comes from")
    p.add_argument("--sink", action="append", metavar="SPEC",
                   help="jsonl:PATH | mqtt://HOST[:PORT]/PREFIX | http(s)://URL | snapshots:DIR "
                        f"(repeatable; default {DEFAULT_SINK})")
    p.add_argument("--zones", type=Path, help="zones/lines file (.toml or .json); default: whole frame")
    p.add_argument("--classes", help="comma-separated class names or ids to keep, e.g. person,car")
    p.add_argument("--score", type=fraction(),
                   help="score a detection needs to start a track (default: the profile's, else the card's)")
    p.add_argument("--nms-iou", type=fraction(), help="NMS IoU threshold (default: the profile's, else the card's)")
    p.add_argument("--max-detections", type=integer(1, 100_000), default=100, help="per frame (default 100)")
    p.add_argument("--max-frames", type=integer(1), help="stop after this many frames")
    p.add_argument("--loop", action="store_true", help="start an image folder again at its end")
    p.add_argument("--frame-policy", choices=("auto", "latest", "all"), default="auto",
                   help="latest: drop frames rather than lag (live sources); all: process every frame "
                        "(files); auto: by source kind (default)")
    p.add_argument("--health-port", type=port, help="serve /health and /metrics on 127.0.0.1:PORT (0: any port)")
    p.add_argument("--threads", type=threads, help="inference threads (default: the profile's, clamped to the cores)")
    p.add_argument("--backend", help="onnxruntime, litert or opencv (default: by file suffix)")
    p.add_argument("--device", help="device name in events and MQTT topics (default: host name)")
    p.add_argument("--buffer-dir", type=Path, help="disk buffers of network sinks (default: cache dir)")
    p.add_argument("--buffer-limit", type=integer(1), default=10_000,
                   help="undelivered events kept per network sink; the oldest are dropped beyond it")
    p.add_argument("--drain-timeout", type=number(0), default=5.0, help="seconds sinks get to deliver at shutdown")
    p.add_argument("--max-age", type=integer(1), default=30, help="frames a lost track is kept (default 30)")
    p.add_argument("--event-image", action="store_true", help="attach a JPEG crop (base64) to every event")
    p.set_defaults(func=cmd_detect)


def default_device() -> str:
    """The host name, reduced to characters that are safe in MQTT topics."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()).strip("-") or "edge"


def _resolve_model(args) -> tuple[str, str, object]:
    """(model reference for create_detector, where it comes from, the release or None).

    The release (``--bundle``, ``$EDGE_BUNDLE`` or the installed one) is verified before its
    detector is used; without any release, ``--model`` or the registry default is used.
    """
    from edge.release import release_from_args
    from edge.roles import detector_from_release

    release = release_from_args(args, required=False)
    if release is None:
        if args.trust is not None:
            raise ValueError("--trust verifies a release: give --bundle DIR_OR_TAR too")
        model = args.model or DEFAULT_MODEL
        return model, f"{model} (registry/explicit: no release given or installed)", None
    m = detector_from_release(release, args.model)
    return (str(m.card_path), f"{m.card.name} ({m.model_path.name}, sha256 {m.card.sha256[:12]}…) from "
            f"{release.describe()}", release)


def detector_settings(model: str, profile, *, score: float | None, nms_iou: float | None):
    """The detector's thresholds: explicit options, else the profile's, else the model card's."""
    from edge import registry
    from edge.profile_use import detector_defaults

    return detector_defaults(profile, score=score, nms_iou=nms_iou, card=registry.resolve(model).card)


def _open_source(args, camera):
    opts = {"reconnect": True}  # a camera or stream that drops is reopened with back-off, state kept
    if args.max_frames is not None:
        opts["max_frames"] = args.max_frames
    if args.loop:
        opts["loop"] = True
    try:
        return camera.open(**opts)
    except TypeError:
        raise ValueError(f"--loop only works with an image folder, not {camera.source!r}") from None


def _install_signal_handlers(service) -> dict:
    """SIGTERM/SIGINT ask for a clean stop; a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        if signum == signal.SIGINT and service.stopping:
            raise KeyboardInterrupt
        service.request_stop()

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


def cmd_detect(args) -> int:
    from edge import paths
    from edge.detect import create_detector
    from edge.detect.service import DetectionService, ServiceOptions
    from edge.detect.sinks import open_sink, parse_sink_spec
    from edge.detect.tracker import ByteTracker, TrackerConfig
    from edge.detect.zones import ZoneConfig, ZoneMonitor, load_zones

    from edge.profile_use import camera_settings, engine_options, profile_in_force

    model, origin, release = _resolve_model(args)
    prof = profile_in_force(args.profile, release)
    camera = camera_settings(prof, source=args.source)
    if args.source is None and prof is None:
        raise ValueError("--source is required without a profile (--profile NAME_OR_FILE gives its camera.source)")
    eng = engine_options(prof, threads=args.threads)
    thresholds = detector_settings(model, prof, score=args.score, nms_iou=args.nms_iou)
    log.info("detector: %s", origin)
    if args.explain:
        print(f"edge detect: detector {origin}", file=sys.stderr)
        print(f"edge detect: profile {prof.name if prof else 'none'}: source {camera.source}, threads "
              f"{eng.threads or 'runtime default'}, providers {','.join(eng.providers) or 'cpu'}, score "
              f"{thresholds.score:g} and NMS IoU {thresholds.nms_iou:g} ({thresholds.origin})", file=sys.stderr)
    for name, value, low in (("--max-frames", args.max_frames, 0), ("--buffer-limit", args.buffer_limit, 1),
                             ("--max-detections", args.max_detections, 1), ("--max-age", args.max_age, 0)):
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if args.score is not None and not 0.0 <= args.score <= 1.0:
        raise ValueError(f"--score must be in [0, 1], got {args.score}")
    specs = [parse_sink_spec(s) for s in (args.sink or [DEFAULT_SINK])]  # bad specs fail before any work
    zone_config = load_zones(args.zones) if args.zones is not None else ZoneConfig.whole_frame()
    device = args.device or default_device()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None

    high = thresholds.score
    low = min(TRACK_LOW_SCORE, high)
    tracker = ByteTracker(TrackerConfig(high_score=high, low_score=low, new_track_score=high, max_age=args.max_age))
    detector = create_detector(model, backend=args.backend, engine_options=eng.kwargs(), score_threshold=low,
                               nms_iou=thresholds.nms_iou, classes=classes, max_detections=args.max_detections)
    sinks = []
    try:
        buffer_dir = args.buffer_dir or paths.cache_dir() / "detect-buffer"
        for spec in specs:
            sinks.append(open_sink(spec, device=device, buffer_dir=buffer_dir, buffer_limit=args.buffer_limit))
        zones = ZoneMonitor(zone_config, detector.labels)
        options = ServiceOptions(frame_policy=args.frame_policy, health_port=args.health_port,
                                 drain_timeout=args.drain_timeout, event_image=args.event_image, device=device)
        with _open_source(args, camera) as source:
            service = DetectionService(source, detector, sinks=sinks, tracker=tracker, zones=zones, options=options)
            sinks = []  # the service closes them from here on
            previous = _install_signal_handlers(service)
            try:
                summary = service.run()
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)
    finally:
        for sink in sinks:  # only when the service was never started
            sink.close(0)
        detector.close()
    m = summary.metrics
    print(json.dumps({"frames": summary.frames_processed, "dropped": summary.frames_dropped,
                      "events": summary.events, "fps": m["fps_mean"], "stopped": summary.stopped_by_request,
                      "buffered_events": m["buffered_events"], "events_dropped": m["events_dropped"]}),
          file=sys.stderr)
    undelivered = {name: st for name, st in m["sinks"].items() if st.get("buffered", 0)}
    for name, st in undelivered.items():
        why = f"; last error: {st['last_error']}" if st.get("last_error") else ""
        print(f"edge detect: warning: sink {name}: {st['buffered']} event(s) not delivered (state "
              f"{st.get('state')}, {st.get('connect_failures', 0)} failed connection attempt(s){why}); "
              f"kept in its disk buffer for the next start", file=sys.stderr)
    # A broker never reached is a failed run even with nothing to send: its availability topic
    # never said "online", so Home Assistant shows the device as unavailable.
    unreached = {name: st for name, st in m["sinks"].items()
                 if name not in undelivered and st.get("connections") == 0 and st.get("connect_failures", 0) > 0}
    for name, st in unreached.items():
        why = f" (last error: {st['last_error']})" if st.get("last_error") else ""
        print(f"edge detect: error: sink {name}: never connected in {st['connect_failures']} attempt(s){why}; "
              f"check the host and port in --sink", file=sys.stderr)
    if m["sink_errors"]:
        print(f"edge detect: error: {m['sink_errors']} batch(es) of events could not be handed to a sink "
              f"(the errors above name it, e.g. a full disk); those events are missing from it", file=sys.stderr)
    return EXIT_FAIL if undelivered or unreached or m["sink_errors"] else 0
