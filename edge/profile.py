"""Device profiles (``firmware_configs/*.toml``) parsed into frozen dataclasses.

Unknown keys raise :class:`~edge.errors.ProfileError` naming the file, the table and the key,
with the closest valid name: a typo in a profile must never be silently ignored.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from edge.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class CpuSpec:
    model: str
    arch: str  # "aarch64" | "x86_64"
    cores: int
    max_mhz: int | None = None


@dataclass(frozen=True)
class RuntimeSpec:
    backend: str = "onnxruntime"  # preferred runtime for bundles on this board
    threads: int = 4
    providers: tuple = ("cpu",)  # onnxruntime execution providers, in order


@dataclass(frozen=True)
class CameraSpec:
    source: str = "0"  # edge.sources.open_source spec
    width: int = 640
    height: int = 480
    fps: int = 30
    fourcc: str | None = None
    ir: bool = False


@dataclass(frozen=True)
class ComputeSpec:
    peak_gflops_fp32: float  # per-board peak, all cores (roofline)
    peak_gops_int8: float
    peak_gflops_fp16: float | None = None
    memory_gbps: float | None = None
    calibrated: bool = False  # measured on the machine rather than from the datasheet


@dataclass(frozen=True)
class ThermalSpec:
    zones: tuple = ("/sys/class/thermal/thermal_zone0/temp",)
    throttle_c: float = 80.0
    vcgencmd: bool = False
    nvpmodel: bool = False


@dataclass(frozen=True)
class Thresholds:
    target_far: float = 1e-3  # face unlock false-accept rate the match threshold is set for
    detection_score: float = 0.25
    nms_iou: float = 0.45
    liveness: float = 0.5
    max_top1_drop: float = 0.02  # accuracy gate: classifier top-1 agreement loss allowed
    max_map_drop: float = 0.03  # detector mAP50-95 loss allowed
    min_embedding_cosine: float = 0.98  # face embedder float-vs-quantised mean cosine
    # Accuracy-gate limits added by the export stage (export/gates.py); each is read once, there.
    min_top1_agreement: float = 0.95  # classifier: share of held-out images whose top-1 equals fp32's
    max_map50_drop: float = 0.03  # detector mAP50 loss allowed
    min_face_recall: float = 0.95  # face detector: share of the fp32 model's faces found (IoU >= 0.5)
    min_face_iou: float = 0.85  # face detector: mean IoU of those matched faces with fp32's boxes
    max_auc_drop: float = 0.005  # face embedder: ROC AUC loss allowed on the aligned LFW pairs
    min_liveness_agreement: float = 1.0  # liveness: share of samples decided as the fp32 model decides


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    board: str
    cpu: CpuSpec
    compute: ComputeSpec
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    camera: CameraSpec = field(default_factory=CameraSpec)
    thermal: ThermalSpec = field(default_factory=ThermalSpec)
    thresholds: Thresholds = field(default_factory=Thresholds)
    path: str | None = None


_TABLES = {"cpu": CpuSpec, "runtime": RuntimeSpec, "camera": CameraSpec, "compute": ComputeSpec,
           "thermal": ThermalSpec, "thresholds": Thresholds}


def _build(cls, data: dict, where: str, origin: str):
    names = {f.name: f for f in fields(cls) if f.name != "path"}
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, list(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(names)})"
            raise ProfileError(f"{origin}: unknown key {key!r} in [{where}]{hint}")
    kwargs = {}
    for name, f in names.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProfileError(f"{origin}: missing required key {name!r} in [{where}]")
            continue
        value = data[name]
        sub = _TABLES.get(name) if cls is DeviceProfile else None
        if sub is not None:
            if not isinstance(value, dict):
                raise ProfileError(f"{origin}: [{name}] must be a table, got {type(value).__name__}")
            value = _build(sub, value, name, origin)
        else:
            value = _typed(f, value, where, name, origin)
        kwargs[name] = value
    return cls(**kwargs)


def _typed(f, value, where: str, name: str, origin: str):
    t = str(f.type)
    if isinstance(value, list):
        return tuple(value)
    ok = True
    if t.startswith("int") and not (isinstance(value, int) and not isinstance(value, bool)):
        ok = False
    elif t.startswith("float") and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        ok = False
    elif t.startswith("bool") and not isinstance(value, bool):
        ok = False
    elif t.startswith("str") and not isinstance(value, str):
        ok = False
    if not ok:
        raise ProfileError(f"{origin}: [{where}] {name} must be {t.split(' ')[0]}, got {value!r}")
    return float(value) if t.startswith("float") else value


def load_profile(path: str | Path) -> DeviceProfile:
    """Parse a device profile TOML file.

    Raises:
        ProfileError: unreadable file, TOML syntax error, unknown or missing key, wrong type.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"cannot read profile {p}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{p}: invalid TOML ({e})") from e
    prof = _build(DeviceProfile, data, "top level", str(p))
    from dataclasses import replace

    return replace(prof, path=str(p))


def profiles_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "firmware_configs"
