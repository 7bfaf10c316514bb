"""Device profiles (``firmware_configs/*.toml``) validated into frozen typed objects.

Validation is done by **msgspec** (``msgspec.Struct`` + ``msgspec.convert``), not by hand:
it is a small, actively maintained C extension with wheels for manylinux aarch64 and x86_64 on
CPython 3.10-3.13 (so it installs on a Pi or a Jetson without a compiler), it has no
dependencies (pydantic pulls pydantic-core, typing-extensions, annotated-types, and its Rust
wheel is ~2 MB and slower to import on a Pi Zero 2 W), its structs are frozen, typed objects,
and it is strict by default: no silent ``"4"`` -> ``4`` coercion, unknown fields rejected
(``forbid_unknown_fields``), range constraints via ``msgspec.Meta``. Its error messages carry a
JSON path (``$.runtime.threads``), which :func:`load_profile` turns into one
:class:`~edge.errors.ProfileError` naming the file, the ``[table] key`` and the expected type,
with the closest valid name for an unknown key.

Public API: :func:`load_profile` (a board name such as ``rpi4`` or a path to a TOML file),
:func:`profile_names`, :func:`profiles_dir`, :func:`runtime_threads`. What each consumer takes from
a profile is built in one place, :mod:`edge.profile_use`.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional, Tuple

import msgspec

from edge.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_Pos = Annotated[int, msgspec.Meta(ge=1)]
_Threads = Annotated[int, msgspec.Meta(ge=1, le=256)]
_Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_PosF = Annotated[float, msgspec.Meta(gt=0.0)]
_Far = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
# A bundle directory is named after the profile: one path component, no "..", no separators.
_Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

_S = dict(frozen=True, forbid_unknown_fields=True, kw_only=True)


class CpuSpec(msgspec.Struct, **_S):
    model: str
    arch: Literal["aarch64", "x86_64"]
    cores: Annotated[int, msgspec.Meta(ge=1, le=256)]
    # (max_mhz was dropped: nothing read it; the clock is in the [compute] peaks and their comments)


class RuntimeSpec(msgspec.Struct, **_S):
    backend: Literal["onnxruntime", "litert"] = "onnxruntime"
    threads: _Threads = 4
    providers: Tuple[Literal["tensorrt", "cuda", "cpu"], ...] = ("cpu",)
    # onnxruntime TensorRT provider: trt_engine_cache_path / trt_fp16_enable (used when present).
    trt_cache_dir: str = "/var/cache/edgesight/trt"
    trt_fp16: bool = True


class CameraSpec(msgspec.Struct, **_S):
    source: str = "0"  # edge.sources.open_source spec ("picamera", "0", "jetson-csi:0" …)
    width: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 640
    height: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 480
    fps: Annotated[int, msgspec.Meta(ge=1, le=240)] = 30
    fourcc: Optional[Annotated[str, msgspec.Meta(min_length=4, max_length=4)]] = None
    ir: bool = False


class ComputeSpec(msgspec.Struct, **_S):
    peak_gflops_fp32: _PosF  # per-board peak, all cores (roofline)
    peak_gops_int8: _PosF
    peak_gflops_fp16: Optional[_PosF] = None
    memory_gbps: Optional[_PosF] = None
    calibrated: bool = False  # measured on the machine rather than from the datasheet


class ThermalSpec(msgspec.Struct, **_S):
    zones: Tuple[str, ...] = ("/sys/class/thermal/thermal_zone0/temp",)
    throttle_c: Annotated[float, msgspec.Meta(ge=30.0, le=150.0)] = 80.0
    vcgencmd: bool = False
    nvpmodel: bool = False


class Thresholds(msgspec.Struct, **_S):
    target_far: _Far = 1e-3  # face unlock false-accept rate the match threshold is set for
    detection_score: _Unit = 0.25
    nms_iou: _Unit = 0.45
    liveness: _Unit = 0.5
    max_top1_drop: _Unit = 0.02
    max_map_drop: _Unit = 0.03
    min_embedding_cosine: _Unit = 0.98
    min_top1_agreement: _Unit = 0.95
    max_map50_drop: _Unit = 0.03
    min_face_recall: _Unit = 0.95
    min_face_iou: _Unit = 0.85
    max_auc_drop: _Unit = 0.005
    min_liveness_agreement: _Unit = 1.0


class UnlockSpec(msgspec.Struct, **_S):
    """Face-unlock policy (read by edge/unlock): k-of-n frames, enrolment, lockout."""

    liveness: Literal["auto", "rgb", "ir", "challenge", "off"] = "auto"
    k: _Pos = 3
    n: _Pos = 5
    enroll_samples: _Pos = 5
    enroll_min: _Pos = 3
    max_failures: _Pos = 5
    lockout_s: Annotated[float, msgspec.Meta(gt=0.0)] = 30.0  # the first lock; each later failure doubles it

    def __post_init__(self) -> None:
        if self.n < self.k:
            raise ValueError(f"n ({self.n}) must be >= k ({self.k}) - at `$.unlock.n`")
        if self.enroll_samples < self.enroll_min:
            raise ValueError(f"enroll_samples ({self.enroll_samples}) must be >= enroll_min "
                             f"({self.enroll_min}) - at `$.unlock.enroll_samples`")


class QualitySpec(msgspec.Struct, **_S):
    """Face quality thresholds for enrolment and verification (see edge.face.quality.QualityConfig)."""

    min_face_px: Annotated[float, msgspec.Meta(ge=8.0, le=4096.0)] = 40.0
    min_sharpness: Annotated[float, msgspec.Meta(ge=0.0)] = 80.0
    min_brightness: Annotated[float, msgspec.Meta(ge=0.0, le=255.0)] = 50.0
    max_brightness: Annotated[float, msgspec.Meta(ge=0.0, le=255.0)] = 210.0
    max_clipped: _Unit = 0.25
    max_yaw: Annotated[float, msgspec.Meta(ge=0.0, le=90.0)] = 25.0
    max_pitch: Annotated[float, msgspec.Meta(ge=0.0, le=90.0)] = 25.0
    max_roll: Annotated[float, msgspec.Meta(ge=0.0, le=180.0)] = 30.0

    def __post_init__(self) -> None:
        if self.min_brightness >= self.max_brightness:
            raise ValueError(f"min_brightness ({self.min_brightness}) must be < max_brightness "
                             f"({self.max_brightness}) - at `$.quality.min_brightness`")


class ReleaseSpec(msgspec.Struct, **_S):
    """Releases on the device (``edge release deploy``, driven by ``edge-export flash``)."""

    keep: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3  # releases kept, the active one included
    service: str = "edge-web.service"  # systemd unit restarted after `current` switches
    health_url: str = "http://127.0.0.1:8080/api/health"  # must report the new release's id
    health_timeout_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 60.0


class DeviceProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: _Name
    board: str
    cpu: CpuSpec
    compute: ComputeSpec
    runtime: RuntimeSpec = msgspec.field(default_factory=RuntimeSpec)
    camera: CameraSpec = msgspec.field(default_factory=CameraSpec)
    thermal: ThermalSpec = msgspec.field(default_factory=ThermalSpec)
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    unlock: UnlockSpec = msgspec.field(default_factory=UnlockSpec)
    quality: QualitySpec = msgspec.field(default_factory=QualitySpec)
    release: ReleaseSpec = msgspec.field(default_factory=ReleaseSpec)
    path: Optional[str] = None  # set by load_profile, never read from the file


_TABLES = {"cpu": CpuSpec, "runtime": RuntimeSpec, "camera": CameraSpec, "compute": ComputeSpec,
           "thermal": ThermalSpec, "thresholds": Thresholds, "unlock": UnlockSpec, "quality": QualitySpec,
           "release": ReleaseSpec}
_TYPES = {"int": "int", "float": "float", "str": "str", "bool": "bool", "array": "array",
          "object": "table", "null": "nothing"}


def _fields(cls) -> list[str]:
    return [f for f in cls.__struct_fields__ if f != "path"]


def _where(jpath: str) -> tuple[str, str | None]:
    """``$.runtime.threads`` -> ("[runtime]", "threads"); ``$.name`` -> ("top level", "name")."""
    parts = [p for p in re.split(r"\.|\[\d+\]", jpath.lstrip("$")) if p]
    if not parts:
        return "top level", None
    if parts[0] in _TABLES:
        return f"[{parts[0]}]", (parts[1] if len(parts) > 1 else None)
    return "top level", parts[0]


def _explain(err: str, origin: str) -> str:
    m = re.search(r" - at `([^`]*)`$", err)
    jpath = m.group(1) if m else "$"
    msg = err[: m.start()] if m else err
    table, key = _where(jpath)
    if u := re.match(r"Object contains unknown field `([^`]*)`", msg):
        bad = u.group(1)
        cls = _TABLES.get(table.strip("[]"), DeviceProfile)
        valid = _fields(cls) + (list(_TABLES) if cls is DeviceProfile else [])
        close = difflib.get_close_matches(bad, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"
        return f"{origin}: unknown key {bad!r} in {table}{hint}"
    if u := re.match(r"Object missing required field `([^`]*)`", msg):
        miss = u.group(1)
        if miss in _TABLES:
            return f"{origin}: missing required table [{miss}]"
        return f"{origin}: missing required key {miss!r} in {table}"
    if u := re.match(r"Expected `([^`]*)`, got `([^`]*)`", msg):
        exp, got = (_TYPES.get(x, x) for x in u.groups())
        exp = " or ".join(_TYPES.get(x.strip(), x.strip()) for x in u.group(1).split("|"))
        if table == "top level" and key in _TABLES:
            label = f"[{key}]"
        else:
            label = table if key is None else f"{table} {key}"
        return f"{origin}: {label} must be {exp}, got {got}"
    if msg.startswith("Invalid enum value"):
        choices = _choices(_TABLES.get(table.strip("[]"), DeviceProfile), key)
        return f"{origin}: {table} {key}: {msg}; expected one of {', '.join(map(repr, choices))}"
    if msg.startswith("Expected `str` matching regex") and key == "name":
        return (f"{origin}: top level name must be a plain file name (letters, digits, '_', '-', '.'; "
                f"no '/' or '..'): it names the bundle directory under --out")
    return f"{origin}: {table} {key or ''}: {msg}".replace("  ", " ").replace(" :", ":")


def _choices(cls, key: str | None) -> tuple:
    """The allowed values of a ``Literal`` field (or of a tuple of them)."""
    import typing

    hint = typing.get_type_hints(cls, include_extras=True).get(key or "")
    while hint is not None and typing.get_origin(hint) is not typing.Literal:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        hint = args[0] if args else None
    return typing.get_args(hint) if hint is not None else ()


def profiles_dir() -> Path:
    """Where the shipped profiles are: the package copy in a wheel, else the repo's folder."""
    here = Path(__file__).resolve().parent
    packaged = here / "firmware_configs"
    return packaged if packaged.is_dir() else here.parent / "firmware_configs"


def profile_names() -> list[str]:
    """The shipped board profiles (file stems; ``-`` and ``_`` are interchangeable in lookups)."""
    return sorted(p.stem for p in profiles_dir().glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file() or os.sep in str(name_or_path):
        return p
    stem = str(name_or_path).replace("-", "_")
    stem = {"x86": "x86_dev", "x86_64": "x86_dev"}.get(stem, stem)
    cand = profiles_dir() / f"{stem}.toml"
    if cand.is_file():
        return cand
    known = profile_names()
    close = difflib.get_close_matches(stem, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ProfileError(f"profile {str(name_or_path)!r} is neither a file nor a known board{hint}; "
                       f"known: {', '.join(known)}")


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a board profile by name (``rpi4``, ``jetson-orin-nano``) or TOML path.

    Raises:
        ProfileError: unknown name, unreadable or non-UTF-8 file, TOML syntax error, unknown or
            missing key/table, wrong type or out-of-range value (file, key and expectation named).
    """
    p = _resolve(name_or_path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ProfileError(f"cannot read profile {p}: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"{p}: not UTF-8 text (byte {e.start}); a profile must be a UTF-8 TOML file") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{p}: invalid TOML ({e})") from e
    if "path" in data:
        raise ProfileError(f"{p}: unknown key 'path' in top level (set by the loader, not the file)")
    try:
        prof = msgspec.convert(data, DeviceProfile)
    except msgspec.ValidationError as e:
        raise ProfileError(_explain(str(e), str(p))) from None
    return msgspec.structs.replace(prof, path=str(p))


def runtime_threads(profile: DeviceProfile, available: int | None = None) -> tuple[int, str | None]:
    """Threads to use: the profile's, clamped to the board's cores and this machine's CPUs.

    Returns (threads, note) where note says why it was lowered (``None`` when unchanged).
    """
    avail = available if available is not None else (os.cpu_count() or 1)
    limit = max(1, min(profile.cpu.cores, avail))
    want = profile.runtime.threads
    if want <= limit:
        return want, None
    return limit, (f"profile {profile.name}: threads {want} clamped to {limit} "
                   f"({profile.cpu.cores} cores on the board, {avail} CPUs here)")


def quality_config(profile: "DeviceProfile | None"):
    """The profile's ``[quality]`` thresholds as an :class:`edge.face.quality.QualityConfig`
    (the defaults without a profile)."""
    from edge.face.quality import QualityConfig

    return QualityConfig(**msgspec.structs.asdict(profile.quality)) if profile is not None else QualityConfig()
