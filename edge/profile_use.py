"""What each consumer takes from a device profile: one function per consumer, read once, here.

A profile (:mod:`edge.profile`) describes a board; this module turns it into the plain options
each part of the runtime takes, and nothing else reads the profile's runtime tables:

* :func:`engine_options` — engine threads (clamped to the board's cores and this machine's CPUs),
  onnxruntime execution providers and their options (TensorRT engine cache + fp16, CUDA device);
* :func:`camera_settings` — the camera source, size, frame rate, FOURCC and whether it is IR;
  :meth:`CameraSettings.open` opens it (or another source) with the settings that source takes;
* :func:`detector_defaults` — the detection score and NMS IoU thresholds;
* :func:`unlock_policy` — target FAR, k-of-n, lockout, liveness mode and threshold, enrolment;
* :func:`thermal_check` — the zones to read, the throttle limit, and whether to ask ``vcgencmd`` /
  ``nvpmodel``; :meth:`ThermalCheck.verdict` says whether a run went over the limit.

Explicit options (the command line) win over the profile; the profile wins over a model card's
defaults; without a profile the built-in defaults apply. :data:`CONSUMERS` names, for every
profile key, the code that reads it (``tests/test_profile_use.py`` fails on a key nobody reads).

Example:
    >>> prof = load_profile("jetson-orin-nano")                       # doctest: +SKIP
    >>> engine_options(prof, available_cpus=2).kwargs()               # doctest: +SKIP
    {'threads': 2, 'providers': ['tensorrt', 'cuda', 'cpu'], 'provider_options': {...}}
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge.profile import DeviceProfile, load_profile, runtime_threads

log = logging.getLogger(__name__)

__all__ = ["EngineOptions", "CameraSettings", "DetectorDefaults", "UnlockPolicyDefaults", "ThermalCheck",
           "engine_options", "camera_settings", "detector_defaults", "unlock_policy", "thermal_check",
           "profile_in_force", "CONSUMERS", "ENV_PROFILE", "ENV_SYSFS_ROOT"]

#: A profile name or TOML path used by every ``edge`` command that takes ``--profile``.
ENV_PROFILE = "EDGE_PROFILE"
#: Root under which ``/sys`` thermal zones are read (tests point it at a fake tree of real files).
ENV_SYSFS_ROOT = "EDGE_SYSFS_ROOT"


def profile_in_force(name_or_path=None, release=None) -> DeviceProfile | None:
    """The profile a command runs with: ``--profile`` (or ``$EDGE_PROFILE``), else the one the
    release was built for (when installed here), else ``None`` (built-in defaults).

    Raises:
        ProfileError: the named profile does not exist or is malformed (file, key and type named).
    """
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    chosen = name_or_path or os.environ.get(ENV_PROFILE) or None
    if chosen is not None:
        return load_profile(chosen)
    if release is not None:
        from edge.roles import profile_for_release

        return profile_for_release(release)
    return None


# -- engines ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EngineOptions:
    """Options for :func:`edge.engines.load_engine`, built from ``[runtime]`` and ``[cpu]``.

    Attributes:
        threads: intra-op threads (``None``: the runtime's default).
        providers: onnxruntime execution providers in order of preference (short names).
        provider_options: per-provider options, keyed by onnxruntime provider name.
        note: why the profile's threads were lowered (``None`` when they were not).
    """

    threads: int | None = None
    providers: tuple[str, ...] = ()
    provider_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    note: str | None = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``load_engine`` (the onnxruntime-only ones are dropped by other backends)."""
        out: dict[str, Any] = {}
        if self.threads is not None:
            out["threads"] = self.threads
        if self.providers:
            out["providers"] = list(self.providers)
        if self.provider_options:
            out["provider_options"] = {k: dict(v) for k, v in self.provider_options.items()}
        return out


def engine_options(profile: DeviceProfile | None, *, threads: int | None = None,
                   providers: Sequence[str] | None = None, available_cpus: int | None = None) -> EngineOptions:
    """Engine options from the profile; ``threads`` / ``providers`` given explicitly win.

    The profile's threads are clamped to the board's cores and to this machine's CPUs (a profile
    can never ask for 1000 threads); onnxruntime's TensorRT provider gets
    ``trt_engine_cache_enable`` / ``trt_engine_cache_path`` / ``trt_fp16_enable`` and CUDA its
    ``device_id`` — the option names onnxruntime documents. A provider that is not available
    where the engine runs falls back to CPU with one warning (:mod:`edge.engines.ort`).
    """
    from edge.engines.ort import profile_provider_options

    if profile is None:
        return EngineOptions(threads=threads, providers=tuple(providers or ()))
    note = None
    if threads is None:
        threads, note = runtime_threads(profile, available_cpus)
        if note:
            log.info("%s", note)
    rt = profile.runtime
    chosen = tuple(providers) if providers else tuple(rt.providers)
    return EngineOptions(threads=threads, providers=chosen, provider_options=profile_provider_options(rt), note=note)


# -- camera ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CameraSettings:
    """The camera a profile describes (``[camera]``).

    Attributes:
        source: an :func:`edge.sources.open_source` spec (``picamera``, ``0``, ``jetson-csi:0`` …).
        width, height, fps: the mode asked of the camera.
        fourcc: V4L2 pixel format (``MJPG``, ``YUYV``) or ``None`` for the driver's default.
        ir: the camera sees infrared (face unlock then uses the IR liveness checks).
    """

    source: str = "0"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    ir: bool = False

    def settings(self) -> dict[str, Any]:
        """The mode as :func:`edge.sources.open_source`'s ``camera=`` mapping."""
        return {"width": self.width, "height": self.height, "fps": self.fps, "fourcc": self.fourcc}

    def open(self, spec: str | None = None, **options: Any):
        """An unopened source for ``spec`` (default: the profile's) with the profile's mode applied
        where that kind of source takes it (cameras, picamera, Jetson CSI; not files or streams).
        ``options`` are passed as given and win over the profile."""
        from edge.sources import open_source

        return open_source(spec or self.source, camera=self.settings(), **options)


def camera_settings(profile: DeviceProfile | None, *, source: str | None = None) -> CameraSettings:
    """The profile's ``[camera]``; ``source`` given explicitly replaces the profile's source."""
    if profile is None:
        return CameraSettings(source=source or "0")
    c = profile.camera
    return CameraSettings(source=source or c.source, width=c.width, height=c.height, fps=float(c.fps),
                          fourcc=c.fourcc, ir=c.ir)


# -- detection -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectorDefaults:
    """Thresholds an object detector runs with, and where each came from."""

    score: float
    nms_iou: float
    origin: str


def detector_defaults(profile: DeviceProfile | None, *, score: float | None = None, nms_iou: float | None = None,
                      card=None) -> DetectorDefaults:
    """Score and NMS IoU: explicit values, else the profile's ``[thresholds]``, else the card's, else
    :data:`edge.detect.detector.DEFAULT_SCORE` / ``DEFAULT_NMS_IOU``."""
    from edge.detect.detector import DEFAULT_NMS_IOU, DEFAULT_SCORE

    card_t = card.thresholds if card is not None else None
    if profile is not None:
        t = profile.thresholds
        base_score, base_iou, origin = t.detection_score, t.nms_iou, f"profile {profile.name}"
    else:
        card_score = card_t.score if card_t is not None else None
        card_iou = card_t.nms_iou if card_t is not None else None
        base_score = DEFAULT_SCORE if card_score is None else float(card_score)
        base_iou = DEFAULT_NMS_IOU if card_iou is None else float(card_iou)
        origin = "model card" if card_score is not None or card_iou is not None else "built-in defaults"
    return DetectorDefaults(score=base_score if score is None else float(score),
                            nms_iou=base_iou if nms_iou is None else float(nms_iou), origin=origin)


# -- face unlock -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnlockPolicyDefaults:
    """The face-unlock policy of a profile (``[unlock]`` and the unlock part of ``[thresholds]``)."""

    target_far: float
    liveness_threshold: float
    liveness_mode: str
    k: int
    n: int
    max_failures: int
    lockout_s: float
    enroll_samples: int
    enroll_min: int

    def lockout_policy(self):
        """An :class:`edge.unlock.lockout.LockoutPolicy` (first lock after ``max_failures``, ``lockout_s`` long)."""
        from edge.unlock.lockout import LockoutPolicy

        base = LockoutPolicy()
        return LockoutPolicy(max_failures=self.max_failures, base_delay_s=self.lockout_s,
                             max_delay_s=max(base.max_delay_s, self.lockout_s))

    def verify_policy(self, *, k: int | None = None, n: int | None = None, timeout_s: float | None = None):
        """An :class:`edge.unlock.verify.VerifyPolicy`; explicit ``k`` / ``n`` / ``timeout_s`` win."""
        from edge.unlock.verify import VerifyPolicy

        kw = {} if timeout_s is None else {"timeout_s": timeout_s}
        return VerifyPolicy(k=self.k if k is None else k, n=self.n if n is None else n, **kw)


def unlock_policy(profile: DeviceProfile | None) -> UnlockPolicyDefaults:
    """The profile's unlock policy (the schema's defaults without a profile)."""
    from edge.profile import Thresholds, UnlockSpec

    u = profile.unlock if profile is not None else UnlockSpec()
    t = profile.thresholds if profile is not None else Thresholds()
    return UnlockPolicyDefaults(target_far=t.target_far, liveness_threshold=t.liveness, liveness_mode=u.liveness,
                                k=u.k, n=u.n, max_failures=u.max_failures, lockout_s=u.lockout_s,
                                enroll_samples=u.enroll_samples, enroll_min=u.enroll_min)


# -- thermal ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThermalCheck:
    """Where a board's temperature is read and the limit it throttles at (``[thermal]``).

    Attributes:
        zones: sysfs ``.../temp`` files (millidegrees), read under ``root``.
        throttle_c: the firmware's (soft) throttle temperature.
        vcgencmd: ask ``vcgencmd get_throttled`` (Raspberry Pi firmware flags).
        nvpmodel: ask ``nvpmodel -q`` (Jetson power mode).
        root: filesystem root (``$EDGE_SYSFS_ROOT``, else ``/``).
    """

    zones: tuple[str, ...] | None = None
    throttle_c: float | None = None
    vcgencmd: bool | None = None
    nvpmodel: bool | None = None
    root: Path = Path("/")

    def probe(self):
        """A :class:`edge.bench.device.DeviceProbe` reading under :attr:`root`."""
        from edge.bench.device import DeviceProbe

        return DeviceProbe(root=self.root)

    def snapshot(self, probe=None) -> dict:
        """Temperatures (and firmware flags the profile asks for) now."""
        from edge.bench.device import thermal_snapshot

        return thermal_snapshot(probe or self.probe(), self.zones, vcgencmd=self.vcgencmd, nvpmodel=self.nvpmodel)

    def verdict(self, snapshots: Sequence[Mapping | None]) -> dict | None:
        """Whether a run crossed the throttle limit (``None`` without a profile's limit).

        A run crosses when a snapshot's CPU temperature is at or above :attr:`throttle_c`, or when
        ``vcgencmd`` reports throttling, a capped clock or the soft temperature limit now.

        Returns:
            ``{"crossed", "throttle_c", "max_temp_c", "firmware_flags", "snapshots"}``.
        """
        if self.throttle_c is None:
            return None
        temps = [s.get("cpu_temp_c") for s in snapshots if s]
        temps = [t for t in temps if t is not None]
        hottest = max(temps, default=None)
        flags = sorted({f for s in snapshots if s for f in (s.get("throttled") or {}).get("flags", ())
                        if f in ("throttled", "soft_temperature_limit", "arm_frequency_capped")})
        crossed = (hottest is not None and hottest >= self.throttle_c) or bool(flags)
        return {"crossed": crossed, "throttle_c": self.throttle_c, "max_temp_c": hottest, "firmware_flags": flags,
                "snapshots": len(temps)}


def thermal_check(profile: DeviceProfile | None, *, root: str | Path | None = None) -> ThermalCheck:
    """The profile's ``[thermal]`` (every zone and command probed without a profile)."""
    root = Path(root if root is not None else (os.environ.get(ENV_SYSFS_ROOT) or "/"))
    if profile is None:
        return ThermalCheck(root=root)
    th = profile.thermal
    return ThermalCheck(zones=tuple(th.zones), throttle_c=th.throttle_c, vcgencmd=th.vcgencmd,
                        nvpmodel=th.nvpmodel, root=root)


#: Every profile key and the code that reads it ("module:function"). A key that is read nowhere
#: is removed from the schema instead; tests/test_profile_use.py checks this table is complete
#: and that each named function does read its key.
CONSUMERS: dict[str, str] = {
    "name": "export.build.pipeline:build",  # the bundle directory out/<name> and the manifest
    "board": "export.build.pipeline:build",  # the build report
    "cpu.model": "export.select.cost_model:_where",  # runtime facts: does the core compute fp16 (Cortex-A76 yes, A72 no)
    "cpu.arch": "export.select.cost_model:_where",
    "cpu.cores": "edge.profile:runtime_threads",  # threads clamp; roofline share of the cores
    "compute.peak_gflops_fp32": "edge.bench.roofline:peak_for",
    "compute.peak_gops_int8": "edge.bench.roofline:peak_for",
    "compute.peak_gflops_fp16": "edge.bench.roofline:peak_for",
    "compute.memory_gbps": "export.select.cost_model:estimate",
    "compute.calibrated": "edge.bench.roofline:roofline",
    "runtime.backend": "export.build.pipeline:build",  # the bundle's format (litert -> TFLite, onnxruntime -> ONNX)
    "runtime.threads": "edge.profile:runtime_threads",
    "runtime.providers": "edge.profile_use:engine_options",
    "runtime.trt_cache_dir": "edge.engines.ort:profile_provider_options",
    "runtime.trt_fp16": "edge.engines.ort:profile_provider_options",
    "camera.source": "edge.profile_use:camera_settings",
    "camera.width": "edge.profile_use:camera_settings",
    "camera.height": "edge.profile_use:camera_settings",
    "camera.fps": "edge.profile_use:camera_settings",
    "camera.fourcc": "edge.profile_use:camera_settings",
    "camera.ir": "edge.profile_use:camera_settings",
    "release.keep": "edge.deploy:_Flash.prune",
    "release.service": "edge.deploy:_Flash.restart",
    "release.health_url": "edge.deploy:_Flash.health",
    "release.health_timeout_s": "edge.deploy:_Flash.health",
    "thermal.zones": "edge.profile_use:thermal_check",
    "thermal.throttle_c": "edge.profile_use:thermal_check",
    "thermal.vcgencmd": "edge.profile_use:thermal_check",
    "thermal.nvpmodel": "edge.profile_use:thermal_check",
    "thresholds.target_far": "edge.profile_use:unlock_policy",
    "thresholds.liveness": "edge.profile_use:unlock_policy",
    "thresholds.detection_score": "edge.profile_use:detector_defaults",
    "thresholds.nms_iou": "edge.profile_use:detector_defaults",
    **{f"thresholds.{k}": "export.gates.base:GateLimits.from_thresholds" for k in (
        "max_top1_drop", "max_map_drop", "min_embedding_cosine", "min_top1_agreement", "max_map50_drop",
        "min_face_recall", "min_face_iou", "max_auc_drop", "min_liveness_agreement")},
    **{f"unlock.{k}": "edge.profile_use:unlock_policy" for k in (
        "liveness", "k", "n", "enroll_samples", "enroll_min", "max_failures", "lockout_s")},
    **{f"quality.{k}": "edge.profile:quality_config" for k in (
        "min_face_px", "min_sharpness", "min_brightness", "max_brightness", "max_clipped", "max_yaw", "max_pitch",
        "max_roll")},
}
