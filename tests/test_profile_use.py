"""Every profile key reaches its consumer (edge/profile_use.py), and a key nobody reads fails here.

Each consumer is shown using the profile: a real onnxruntime session gets the clamped threads
and the providers (and a fake ``onnxruntime`` module following its API shows the TensorRT options
a Jetson gets), a real detector finds fewer objects on a real image under a stricter profile, a
fake ``cv2.VideoCapture`` / ``picamera2`` (following their APIs) is asked for the profile's
camera mode, ``edge bench`` warns when a fake sysfs tree of real files is over the throttle
limit, and the unlock policy (k of n, lockout) comes from the profile.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from edge.profile import _TABLES, DeviceProfile, load_profile, profiles_dir
from edge.profile_use import (CONSUMERS, ENV_SYSFS_ROOT, camera_settings, detector_defaults, engine_options,
                              thermal_check, unlock_policy)

ROOT = Path(__file__).resolve().parent.parent
BASE = (profiles_dir() / "rpi4.toml").read_text()


def _profile(tmp_path, **edits) -> Path:
    """rpi4.toml with ``old=new`` text edits (keys are labels only), written to a file."""
    text = BASE
    for old, new in edits.values():
        assert old in text, old
        text = text.replace(old, new)
    p = tmp_path / "board.toml"
    p.write_text(text)
    return p


# -- every key is read by someone -------------------------------------------------------------------

def _schema_keys() -> set[str]:
    keys = {f for f in DeviceProfile.__struct_fields__ if f not in _TABLES and f != "path"}
    for table, cls in _TABLES.items():
        keys |= {f"{table}.{f}" for f in cls.__struct_fields__}
    return keys


def _consumer(spec: str):
    import importlib

    module, _, qual = spec.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_profile_key_is_consumed():
    """The schema and the consumer table list the same keys, and each consumer reads its key.

    A key added to the schema without a consumer (or left after its consumer went) fails here:
    use it, or remove it from the schema and the TOML files.
    """
    keys = _schema_keys()
    assert keys - set(CONSUMERS) == set(), "profile keys nobody reads: use them or remove them"
    assert set(CONSUMERS) - keys == set(), "consumers listed for keys the schema does not have"
    for key, spec in CONSUMERS.items():
        fn = _consumer(spec)
        src = inspect.getsource(fn)
        leaf = key.rpartition(".")[2]
        if key.startswith("quality."):
            # quality_config hands the whole [quality] table to QualityConfig: the field must exist there
            from edge.face.quality import QualityConfig

            assert "profile.quality" in src and leaf in QualityConfig.__dataclass_fields__, key
            continue
        assert re.search(rf"[.\"']{leaf}\b", src), f"{spec} does not read {key}"


def test_every_shipped_profile_key_is_in_the_table():
    """Nothing in a shipped TOML is outside the schema (so outside the consumer table)."""
    tomllib = __import__("tomllib" if sys.version_info >= (3, 11) else "tomli")
    for path in sorted(profiles_dir().glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for k, v in data.items():
            names = [f"{k}.{kk}" for kk in v] if isinstance(v, dict) else [k]
            assert set(names) <= set(CONSUMERS), (path.name, set(names) - set(CONSUMERS))


def test_removed_key_is_refused(tmp_path):
    from edge.errors import ProfileError

    bad = _profile(tmp_path, cores=("cores = 4\n", "cores = 4\nmax_mhz = 1800\n"))
    with pytest.raises(ProfileError, match=r"unknown key 'max_mhz' in \[cpu\]"):
        load_profile(bad)


# -- engines: threads and providers ----------------------------------------------------------------

def test_real_onnxruntime_session_gets_the_clamped_threads_and_providers(tmp_path, caplog, monkeypatch):
    """A real onnxruntime session: threads clamped to min(board cores, CPUs here); the Jetson's
    TensorRT/CUDA are not available here, so CPU is used with one warning for two sessions."""
    ort = pytest.importorskip("onnxruntime")
    import edge.engines.ort as eo
    from edge.engines import load_engine
    from tests._tiny_onnx import conv_net, save

    model = tmp_path / "m.onnx"
    save(conv_net(), model)
    big = load_profile(_profile(tmp_path, threads=("threads = 4 ", "threads = 200 "),
                                cores=("cores = 4\n", "cores = 64\n")))
    opts = engine_options(big, available_cpus=3)
    assert opts.threads == 3 and "clamped to 3" in opts.note
    with load_engine(model, **opts.kwargs()) as eng:
        assert eng._sess.get_session_options().intra_op_num_threads == 3
        assert eng._sess.get_providers() == ["CPUExecutionProvider"]
    jetson = engine_options(load_profile("jetson-orin-nano"), available_cpus=os.cpu_count())
    assert jetson.providers == ("tensorrt", "cuda", "cpu")
    monkeypatch.setattr(eo, "_warned_fallback", set())  # "one warning per process": this test's own process set
    caplog.set_level(logging.WARNING, logger="edge.engines.ort")
    for _ in range(2):
        with load_engine(model, **jetson.kwargs()) as eng:
            assert eng._sess.get_providers() == ["CPUExecutionProvider"]
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        warns = [r for r in caplog.records if "not available" in r.getMessage()]
        assert len(warns) == 1 and "TensorrtExecutionProvider" in warns[0].getMessage()
    explicit = engine_options(big, threads=1, providers=["cpu"])
    assert explicit.threads == 1 and explicit.providers == ("cpu",)


class _FakeOrt:
    """Follows onnxruntime's API (SessionOptions attributes, providers as names or (name, options))."""

    class GraphOptimizationLevel:
        ORT_DISABLE_ALL = ORT_ENABLE_BASIC = ORT_ENABLE_EXTENDED = ORT_ENABLE_ALL = 0

    class SessionOptions:
        intra_op_num_threads = 0

        def add_session_config_entry(self, k, v):
            pass

    def __init__(self, available):
        self.available, self.sessions = available, []

    def get_available_providers(self):
        return list(self.available)

    def InferenceSession(self, data, sess_options=None, providers=None):  # noqa: N802
        self.sessions.append((sess_options.intra_op_num_threads, providers))
        raise RuntimeError("fake session: stop after provider selection")


def test_jetson_profile_reaches_the_detector_engine(monkeypatch):
    """`edge detect`'s path (create_detector with the profile's engine options) hands onnxruntime the
    TensorRT engine cache directory and fp16 flag, CUDA, and the clamped threads."""
    import edge.engines.ort as eo
    from edge.detect import create_detector
    from edge.errors import EngineError

    fake = _FakeOrt(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(eo, "_import_ort", lambda: fake)
    prof = load_profile("jetson-orin-nano")
    eng = engine_options(prof, available_cpus=4)
    with pytest.raises(EngineError, match="fake session"):
        create_detector("yolox_nano_416", engine_options=eng.kwargs())
    threads, providers = fake.sessions[0]
    assert threads == 4
    assert providers[0] == ("TensorrtExecutionProvider", {
        "trt_engine_cache_enable": "True", "trt_engine_cache_path": prof.runtime.trt_cache_dir,
        "trt_fp16_enable": "True"})
    assert providers[1] == ("CUDAExecutionProvider", {"device_id": "0"}) and providers[2] == "CPUExecutionProvider"


def test_litert_engine_ignores_onnxruntime_options(model_dir):
    """A profile's providers reach every engine load; LiteRT just does not take them."""
    pytest.importorskip("ai_edge_litert")
    from edge.engines import load_engine

    eng = engine_options(load_profile("jetson-nano"), available_cpus=1)
    with load_engine(model_dir / "classification" / "mobilenet_v1_0.25_128_quant.tflite", **eng.kwargs()) as e:
        assert e.backend == "litert"


# -- detector thresholds ---------------------------------------------------------------------------

def test_profile_thresholds_change_detections_on_a_real_image(tmp_path, samples):
    from edge.detect import create_detector
    from edge.imageio import load_image

    image = load_image(samples / "bus.jpg")
    counts = {}
    for score in ("0.05", "0.8"):
        prof = load_profile(_profile(tmp_path, s=("detection_score = 0.25", f"detection_score = {score}")))
        d = detector_defaults(prof)
        assert d.score == float(score) and d.origin == f"profile {prof.name}"
        with create_detector("yolox_nano_416", engine_options=engine_options(prof).kwargs(),
                             score_threshold=d.score, nms_iou=d.nms_iou) as det:
            dets = det.detect(image)
        assert (dets.score >= d.score).all()
        counts[score] = len(dets)
    assert counts["0.05"] > counts["0.8"] >= 1
    # NMS IoU: a looser IoU keeps more overlapping boxes
    kept = {}
    for iou in ("0.1", "0.9"):
        prof = load_profile(_profile(tmp_path, s=("detection_score = 0.25", "detection_score = 0.05"),
                                     i=("nms_iou = 0.45", f"nms_iou = {iou}")))
        d = detector_defaults(prof)
        with create_detector("yolox_nano_416", score_threshold=d.score, nms_iou=d.nms_iou) as det:
            kept[iou] = len(det.detect(image))
    assert kept["0.9"] > kept["0.1"]
    # explicit options win; without a profile the card's
    assert detector_defaults(prof, score=0.6, nms_iou=0.3).score == 0.6
    assert detector_defaults(None).origin in ("model card", "built-in defaults")


def test_edge_detect_applies_the_profile_and_the_cli_wins(tmp_path, samples):
    prof = _profile(tmp_path, s=("detection_score = 0.25", "detection_score = 0.7"),
                    t=("threads = 4 ", "threads = 64 "))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))

    def run(*extra):
        proc = subprocess.run([sys.executable, "-m", "edge", "detect", "--profile", str(prof), "--source",
                               str(samples / "bus.jpg"), "--max-frames", "1", "--explain", "--sink",
                               f"jsonl:{tmp_path / 'ev.jsonl'}", *extra], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr

    err = run()
    cpus = min(4, os.cpu_count() or 1)
    assert f"profile rpi4: source {samples / 'bus.jpg'}, threads {cpus}," in err
    assert "score 0.7 and NMS IoU 0.45 (profile rpi4)" in err
    err = run("--score", "0.3", "--nms-iou", "0.5", "--threads", "1")
    assert "threads 1," in err and "score 0.3 and NMS IoU 0.5" in err


# -- camera ----------------------------------------------------------------------------------------

class _FakeCapture:
    """Follows cv2.VideoCapture: isOpened/set/get/read/release; remembers what was set."""

    def __init__(self, device, backend):
        self.device, self.backend, self.props = device, backend, {}

    def isOpened(self):  # noqa: N802
        return True

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def read(self):
        import numpy as np

        return True, np.zeros((int(self.props.get(4, 480)), int(self.props.get(3, 640)), 3), np.uint8)

    def release(self):
        pass


def test_v4l2_camera_gets_the_profile_mode(tmp_path):
    import cv2

    prof = load_profile(_profile(tmp_path, src=('source = "picamera"', 'source = "0"'),
                                 w=("width = 640", "width = 1280"), h=("height = 480", "height = 720"),
                                 f=("fps = 30\nir = false", 'fps = 25\nfourcc = "MJPG"\nir = true')))
    cam = camera_settings(prof)
    assert cam.ir is True and cam.source == "0"
    made = []
    with cam.open(capture_factory=lambda d, b: made.append(_FakeCapture(d, b)) or made[-1], max_frames=1) as src:
        frame = next(iter(src))
    props = made[0].props
    assert props[cv2.CAP_PROP_FRAME_WIDTH] == 1280 and props[cv2.CAP_PROP_FRAME_HEIGHT] == 720
    assert props[cv2.CAP_PROP_FPS] == 25 and props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(*"MJPG")
    assert frame.image.shape == (720, 1280, 3)
    # an option given explicitly wins over the profile
    made.clear()
    with cam.open(capture_factory=lambda d, b: made.append(_FakeCapture(d, b)) or made[-1], width=320,
                  max_frames=1) as src:
        next(iter(src))
    assert made[0].props[cv2.CAP_PROP_FRAME_WIDTH] == 320


def test_picamera_gets_the_profile_size_and_fps(tmp_path, monkeypatch):
    import numpy as np

    seen = {}

    class Picamera2:  # follows picamera2.Picamera2
        def __init__(self, camera_num=0):
            seen["num"] = camera_num

        def create_video_configuration(self, main=None, controls=None):
            seen["main"], seen["controls"] = main, controls
            return {"main": main, "controls": controls}

        def configure(self, config):
            seen["configured"] = config

        def start(self):
            pass

        def capture_array(self, stream="main"):
            w, h = seen["main"]["size"]
            return np.zeros((h, w, 3), np.uint8)

        def stop(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Picamera2))
    prof = load_profile(_profile(tmp_path, w=("width = 640", "width = 1456"), h=("height = 480", "height = 1088"),
                                 f=("fps = 30", "fps = 60")))
    with camera_settings(prof).open(max_frames=1) as src:
        frame = next(iter(src))
    assert seen["main"]["size"] == (1456, 1088) and seen["controls"]["FrameRate"] == 60.0
    assert frame.image.shape == (1088, 1456, 3)


def test_jetson_csi_caps_follow_the_profile_size(tmp_path):
    jet = load_profile("jetson-orin-nano")
    src = camera_settings(jet).open()
    assert "width=1280,height=720,framerate=30/1" in src.pipeline and "nvarguscamerasrc sensor-id=0" in src.pipeline
    text = (profiles_dir() / "jetson_orin_nano.toml").read_text().replace("width = 1280", "width = 640") \
        .replace("height = 720", "height = 480").replace("fps = 30", "fps = 15")
    (tmp_path / "jet.toml").write_text(text)
    src = camera_settings(load_profile(tmp_path / "jet.toml")).open()
    assert "width=640,height=480,framerate=15/1" in src.pipeline


def test_files_ignore_the_camera_mode(samples):
    """An image or a video is read as it is: the profile's camera mode is not a TypeError there."""
    cam = camera_settings(load_profile("rpi4"), source=str(samples / "bus.jpg"))
    with cam.open() as src:
        frame = next(iter(src))
    assert frame.image.shape[:2] == (1080, 810)


# -- thermal ---------------------------------------------------------------------------------------

def _fake_sys(root: Path, milli_c: int) -> Path:
    zone = root / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "temp").write_text(f"{milli_c}\n")
    (zone / "type").write_text("cpu-thermal\n")
    return root


@pytest.mark.parametrize("milli_c, crossed", [(85_000, True), (52_000, False)])
def test_bench_warns_when_a_run_crosses_the_throttle_limit(tmp_path, model_dir, milli_c, crossed):
    pytest.importorskip("ai_edge_litert")
    root = _fake_sys(tmp_path / "root", milli_c)
    env = dict(os.environ, **{ENV_SYSFS_ROOT: str(root)},
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "edge", "bench", "--model",
                           str(model_dir / "classification" / "mobilenet_v1_0.25_128_quant.tflite"),
                           "--profile", "rpi4", "--iters", "3", "--warmup", "1", "--processes", "1",
                           "--format", "json", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "bench.json").read_text())
    verdict = report["thermal_check"]
    assert verdict["crossed"] is crossed and verdict["throttle_c"] == 80.0
    assert verdict["max_temp_c"] == milli_c / 1000
    assert report["device"]["thermal_before"]["cpu_temp_c"] == milli_c / 1000
    warned = "crossed the thermal throttle limit of profile rpi4 (80 °C; hottest reading 85.0 °C" in proc.stderr
    assert warned is crossed
    # the Markdown summary printed (and written as bench.md) says it too
    assert ("Thermal throttle limit crossed** (80.0 °C; hottest reading 85.0 °C" in proc.stdout) is crossed


def test_thermal_commands_follow_the_profile(tmp_path):
    """`vcgencmd` is asked only when the profile says the board has it (a real fake executable)."""
    from edge.bench.device import DeviceProbe

    root = _fake_sys(tmp_path / "root", 60_000)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "vcgencmd"
    tool.write_text("#!/bin/sh\nif [ \"$1\" = get_throttled ]; then echo throttled=0x4; else echo frequency=1=1500000000; fi\n")
    tool.chmod(0o755)
    probe = DeviceProbe(root=root, path=str(bindir))
    rpi4 = thermal_check(load_profile("rpi4"), root=root)
    snap = rpi4.snapshot(probe)
    assert snap["throttled"]["throttled"] is True and snap["cpu_temp_c"] == 60.0
    assert rpi4.verdict([snap]) == {"crossed": True, "throttle_c": 80.0, "max_temp_c": 60.0,
                                    "firmware_flags": ["throttled"], "snapshots": 1}
    orin = thermal_check(load_profile("jetson-orin-nano"), root=root)
    assert orin.vcgencmd is False and "throttled" not in orin.snapshot(probe)


# -- face unlock -----------------------------------------------------------------------------------

def test_unlock_policy_comes_from_the_profile(tmp_path):
    from edge.unlock.app import PipelineOptions, UnlockApp
    from edge.unlock.config import UnlockConfig

    path = _profile(tmp_path, k=("k = 3 ", "k = 2 "), n=("n = 5\n", "n = 4\n"),
                    m=("max_failures = 5 ", "max_failures = 2 "), l=("lockout_s = 30.0", "lockout_s = 7.5"),
                    far=("target_far = 0.001", "target_far = 0.0001"),
                    live=('liveness = "auto"', 'liveness = "challenge"'))
    pol = unlock_policy(load_profile(path))
    assert (pol.k, pol.n, pol.max_failures, pol.lockout_s, pol.target_far, pol.liveness_mode) == (
        2, 4, 2, 7.5, 1e-4, "challenge")
    config = UnlockConfig.resolve({"store_dir": tmp_path / "s", "key_file": tmp_path / "k", "audit_file":
                                   tmp_path / "a.log", "state_dir": tmp_path / "st"})
    app = UnlockApp(config, PipelineOptions(profile=str(path)))
    vp = app.policy().verify_policy()
    assert (vp.k, vp.n) == (2, 4)
    assert app.policy().verify_policy(k=1, n=3, timeout_s=2.0).k == 1  # the command line wins
    tracker = app.lockout
    assert tracker.policy.max_failures == 2 and tracker.policy.base_delay_s == 7.5
    assert not tracker.record_failure("alice").locked
    st = tracker.record_failure("alice")
    assert st.locked and st.remaining_s == pytest.approx(7.5, abs=0.5)
    assert app.options.resolved_mode() == ("challenge", False)
    assert app.camera_mode() == {"width": 640, "height": 480, "fps": 30.0, "fourcc": None}
