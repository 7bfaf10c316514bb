"""``edge serve --source SRC [--listen HOST:PORT]``: the device's web page, HTTP API and Home Assistant entities.

Runs the detection service on SRC and, in the same process, a web server (default 127.0.0.1:8080)
with the live view, the events, the face library, the active release and the latest bench report.
Every endpoint but the page shell and /api/health needs the token made once at install time with
``edge serve --init-token`` (only its hash is stored). SIGTERM/SIGINT stop both cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from edge.cli.argtypes import fraction, integer, number, threads

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_MODEL = "yolox_nano_416"


def add_parser(sub) -> None:
    from edge.web.release import add_release_args

    p = sub.add_parser("serve", help="web page + HTTP API (+ Home Assistant over MQTT) for the device",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--source", help="camera index, /dev/videoN, rtsp://, video file, image folder, picamera, "
                                    "jetson-csi[:N], synthetic[:WxH] (default: the profile's camera.source)")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_LISTEN}: this machine only)")
    add_release_args(p)
    p.add_argument("--profile", metavar="NAME|TOML",
                   help="device profile: threads, providers, camera mode, score, face-unlock policy ($EDGE_PROFILE; "
                        "default: the release's); options given here win")
    a = p.add_argument_group("authentication (no default password)")
    a.add_argument("--init-token", action="store_true",
                   help="make a new token, print it once, store only its hash in --token-hash-file, and exit")
    a.add_argument("--force", action="store_true", help="with --init-token: replace an existing token")
    a.add_argument("--token-hash-file", type=Path, metavar="FILE",
                   help="hashes of accepted tokens (EDGE_WEB_TOKEN_HASH; default /etc/edgesight/web_token.sha256)")
    a.add_argument("--token-file", type=Path, metavar="FILE", help="a token in a file (mode 0600); or EDGE_WEB_TOKEN")
    d = p.add_argument_group("detection")
    d.add_argument("--model", help=f"detector: registry name, model file or card (default {DEFAULT_MODEL}; with a "
                                   "release: its detector)")
    d.add_argument("--zones", type=Path, help="zones/lines file (.toml or .json); default: whole frame")
    d.add_argument("--classes", help="comma-separated class names or ids to keep")
    d.add_argument("--score", type=fraction(),
                   help="score a detection needs to start a track (default: the profile's, else the card's)")
    d.add_argument("--nms-iou", type=fraction(), help="NMS IoU threshold (default: the profile's, else the card's)")
    d.add_argument("--max-age", type=integer(1), default=30, help="frames a lost track is kept (default 30)")
    d.add_argument("--threads", type=threads, help="inference threads (default: the profile's, clamped to the cores)")
    d.add_argument("--fps", type=number(0, 1000, low_open=True), help="read the source at most this fast (replay files like a camera)")
    d.add_argument("--loop", action="store_true", help="start an image folder again at its end")
    d.add_argument("--device", help="device name in events and MQTT topics (default: host name)")
    d.add_argument("--mqtt", metavar="URL", help="mqtt://[USER@]HOST[:PORT]/PREFIX: events + Home Assistant entities")
    d.add_argument("--ha-prefix", default="homeassistant", help="Home Assistant discovery prefix (default homeassistant)")
    d.add_argument("--buffer-dir", type=Path, help="MQTT disk buffer directory (default: cache dir)")
    w = p.add_argument_group("page")
    w.add_argument("--stream-fps", type=number(0, 120, low_open=True), default=10.0, help="live view frames per second at most (default 10)")
    w.add_argument("--stream-width", type=integer(16, 7680), default=640, help="live view width in pixels at most (default 640)")
    w.add_argument("--bench-dir", type=Path, help="where `edge bench --out` wrote its reports (newest shown)")
    w.add_argument("--max-upload-mb", type=number(0, 1024, low_open=True), default=12.0, help="largest uploaded image (default 12 MB)")
    f = p.add_argument_group("face library (the state of `edge unlock`)")
    f.add_argument("--no-faces", action="store_true", help="no face recognition or enrolment")
    f.add_argument("--store", metavar="DIR", help="template store (EDGE_UNLOCK_STORE)")
    f.add_argument("--key", metavar="FILE", help="template key file (EDGE_UNLOCK_KEY)")
    f.add_argument("--audit", metavar="FILE", help="audit log (EDGE_UNLOCK_AUDIT)")
    f.add_argument("--state", metavar="DIR", help="lockout state (EDGE_UNLOCK_STATE)")
    f.add_argument("--liveness-dir", metavar="DIR", help="MiniFASNet models (edge-export liveness)")
    f.add_argument("--no-liveness", action="store_true", help="INSECURE: enrol and recognise without anti-spoofing")
    f.add_argument("--face-detector", default="yunet", help="face detector without a release (default yunet)")
    f.add_argument("--embedder", default="sface_2021dec_fp32", help="face embedder without a release")
    p.set_defaults(func=cmd_serve)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port).

    Raises:
        ValueError: naming --listen and the expected form.
    """
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT with a port 0-65535 (e.g. {DEFAULT_LISTEN}), got {value!r}")
    return host, int(port)


def _init_token(args) -> int:
    from edge.web.auth import DEFAULT_TOKEN_HASH_FILE, ENV_TOKEN_HASH_FILE, hash_token, new_token, write_token_hash

    path = args.token_hash_file or Path(os.environ.get(ENV_TOKEN_HASH_FILE) or DEFAULT_TOKEN_HASH_FILE)
    token = new_token()
    write_token_hash(path, hash_token(token), force=args.force)
    print(token)
    print(f"edge serve: token hash written to {path}; the token above is shown only now: keep it (API clients send "
          "'Authorization: Bearer TOKEN'; the page asks for it)", file=sys.stderr)
    return 0


def _detector_model(args, release) -> str:
    if release is None:
        return args.model or DEFAULT_MODEL
    from edge.roles import detector_from_release

    return str(detector_from_release(release, args.model).card_path)


def _face_service(args, release, on_recognized, profile):
    from edge.unlock.app import PipelineOptions, UnlockApp
    from edge.unlock.config import UnlockConfig
    from edge.web.faces import FaceService

    config = UnlockConfig.resolve({"store_dir": args.store, "key_file": args.key, "audit_file": args.audit,
                                   "state_dir": args.state})
    live = not args.no_liveness
    prof = profile.path if profile is not None else None  # the profile in force, also for the lockout policy
    if release is not None:
        options = PipelineOptions(release=release, profile=prof, threads=args.threads, liveness=live)
    else:
        options = PipelineOptions(detector=args.face_detector, embedder=args.embedder,
                                  liveness_dir=args.liveness_dir, profile=prof,
                                  threads=args.threads or 1, liveness=live)
    if not live:
        print("edge serve: WARNING: liveness is DISABLED (--no-liveness): a photo can be enrolled and recognised",
              file=sys.stderr)
    return FaceService(UnlockApp(config, options), on_recognized=on_recognized)


def _check_options(args) -> None:
    for name, value in (("--stream-fps", args.stream_fps), ("--stream-width", args.stream_width),
                        ("--max-upload-mb", args.max_upload_mb)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if args.score is not None and not 0.0 <= args.score <= 1.0:
        raise ValueError(f"--score must be in [0, 1], got {args.score}")


def _home_assistant(args, device: str, zone_config, classes):
    from edge import paths
    from edge.detect.sinks.homeassistant import HomeAssistantSink

    buffer_dir = args.buffer_dir or paths.cache_dir() / "serve-buffer"
    buffer_dir.mkdir(parents=True, exist_ok=True)
    return HomeAssistantSink(args.mqtt, device=device, buffer_path=buffer_dir / f"ha-{device}.sqlite",
                             zones=[z.name for z in zone_config.zones], labels=classes or ["person"],
                             discovery_prefix=args.ha_prefix, faces=not args.no_faces)


def _serve(server, sock, runner) -> None:
    """Run the web server until SIGTERM/SIGINT, then stop the detection service."""
    # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to the handler it found: make that a
    # no-op so a requested stop ends in a clean exit 0 after the detection service has stopped too.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        runner.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_serve(args) -> int:
    if args.init_token:
        return _init_token(args)
    _check_options(args)
    from edge.web.auth import load_verifier

    verifier = load_verifier(token_file=args.token_file, hash_file=args.token_hash_file)  # before any model
    host, port = parse_listen(args.listen)
    try:
        import uvicorn

        from edge.web.app import WebState, create_app
    except ImportError as e:
        raise ImportError(f"edge serve needs the web extra: pip install 'edgesight[web]' ({e.name} is missing)") from e
    from edge.cli.detect_cmd import TRACK_LOW_SCORE, default_device, detector_settings
    from edge.detect import create_detector
    from edge.detect.service import DetectionService, ServiceOptions
    from edge.detect.tracker import ByteTracker, TrackerConfig
    from edge.detect.zones import ZoneConfig, ZoneMonitor, load_zones
    from edge.profile_use import camera_settings, engine_options, profile_in_force
    from edge.web.live import EventHub, FrameHub, LiveSink
    from edge.web.release import describe_release, open_release_or_none
    from edge.web.runtime import DetectionRunner, PacedSource, UploadDetector, bind
    from edge.web.uploads import UploadLimits

    release = open_release_or_none(args)
    prof = profile_in_force(args.profile, release)
    if not args.source and prof is None:
        raise ValueError("--source is required without a profile (camera, video, folder or synthetic; "
                         "--profile NAME_OR_FILE gives its camera.source)")
    camera = camera_settings(prof, source=args.source)
    eng = engine_options(prof, threads=args.threads)
    model = _detector_model(args, release)
    zone_config = load_zones(args.zones) if args.zones is not None else ZoneConfig.whole_frame()
    device = args.device or default_device()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    thresholds = detector_settings(model, prof, score=args.score, nms_iou=args.nms_iou)
    high = thresholds.score
    low = min(TRACK_LOW_SCORE, high)
    source = camera.open(**({"loop": True} if args.loop else {}))  # bad specs fail before models
    if args.fps is not None:
        source = PacedSource(source, args.fps)
    sock = bind(host, port)
    host, port = sock.getsockname()[:2]
    frames, events = FrameHub(zone_config, max_width=args.stream_width), EventHub()
    sinks = [LiveSink(frames, events)]
    detector = faces = None
    one = {**eng.kwargs(), "threads": 1}  # uploads: one thread, the profile's providers
    uploads = UploadDetector(lambda: create_detector(model, engine_options=one, score_threshold=high,
                                                     nms_iou=thresholds.nms_iou, classes=classes))
    try:
        ha = _home_assistant(args, device, zone_config, classes) if args.mqtt else None
        if ha is not None:
            sinks.append(ha)
        if not args.no_faces:
            faces = _face_service(args, release, ha.publish_face if ha is not None else None, prof)
        detector = create_detector(model, engine_options=eng.kwargs(), score_threshold=low,
                                   nms_iou=thresholds.nms_iou, classes=classes)
        tracker = ByteTracker(TrackerConfig(high_score=high, low_score=low, new_track_score=high,
                                            max_age=args.max_age))
        with source:
            service = DetectionService(source, detector, sinks=sinks, tracker=tracker,
                                       zones=ZoneMonitor(zone_config, detector.labels),
                                       options=ServiceOptions(event_image=True, device=device))
            sinks = []  # the service closes them
            runner = DetectionRunner(service).start()
            rel_doc = describe_release(release)
            state = WebState(verifier=verifier, frames=frames, events=events, faces=faces, detect=uploads,
                             metrics=runner.metrics, release=lambda: rel_doc,
                             release_id=release.id if release is not None else None, bench_dir=args.bench_dir,
                             stream_fps=args.stream_fps,
                             limits=UploadLimits(max_image_bytes=int(args.max_upload_mb * 1024 * 1024)))
            server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", access_log=False,
                                                   timeout_graceful_shutdown=2))
            print(f"edge serve: http://{host}:{port}/ (source {camera.source}, detector {model}, profile "
                  f"{prof.name if prof else 'none'})",
                  file=sys.stderr, flush=True)
            _serve(server, sock, runner)
    finally:
        sock.close()
        for s in sinks:
            s.close(0)
        for part in (faces, detector, uploads):
            if part is not None:
                part.close()
    return 0
