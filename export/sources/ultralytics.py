"""Ultralytics YOLOv8 / YOLO11 detectors (``.yaml`` or ``.pt``) as a float ONNX source with its card.

Needs the optional ``ultralytics`` extra (installed with ``--no-deps`` beside
``opencv-python-headless``, see pyproject.toml). Nothing here downloads: a ``.yaml`` is either a
local file or one of the model configs shipped inside the ultralytics package (``yolov8n.yaml``,
``yolo11n.yaml`` — random weights), and a ``.pt`` must be a local file. The ONNX export is the
project's own :func:`export.onnx.from_torch.export_onnx` (torch.onnx), not Ultralytics' exporter
(which wants onnxslim and fetches assets). The head is put in export mode, so the graph output is
``[1, 4 + nc, N]``: ``(cx, cy, w, h)`` in input pixels and sigmoid class scores — what
:func:`edge.detect.decoders.decode_ultralytics` reads.

Preprocessing written into the card follows Ultralytics' ``LetterBox`` (centred, pad 114, linear
resize), RGB, scaled to 0-1.

Ultralytics is AGPL-3.0 (copyleft, not non-commercial); the card's licence note says so, and the
weights are the user's.

Example:
    >>> model = load_ultralytics("yolo11n.yaml")                         # doctest: +SKIP
    >>> onnx_path, card_path = export_ultralytics_onnx(model, "out/")      # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

from edge.cards import Decoding, InputSpec, Licence, ModelCard, OutputSpec, Provenance, Source, Thresholds
from edge.registry import get_card, sha256_file
from export.onnx.from_torch import ExportError, export_onnx, onnx_io
from export.onnx.macs import file_macs

__all__ = ["load_ultralytics", "export_ultralytics_onnx", "ultralytics_card", "is_ultralytics_source", "is_end2end",
           "class_names", "write_labels",
           "ULTRA_PAD_VALUE", "COCO_CLASSES"]

#: Ultralytics' LetterBox fill value.
ULTRA_PAD_VALUE = 114
#: Pixel scale: Ultralytics feeds ``RGB / 255``.
ULTRA_PIXEL_SCALE = 255.0
#: Number of COCO classes; with this many, the card takes its labels from the COCO card.
COCO_CLASSES = 80
#: Registry card whose COCO-80 labels reference is reused.
COCO_LABELS_CARD = "yolox_nano_416"
#: Default thresholds written into the card (Ultralytics' predict defaults: conf 0.25, iou 0.7).
DEFAULT_THRESHOLDS = {"score": 0.25, "nms_iou": 0.7}
#: Environment Ultralytics reads at import: no auto-install, no network, quiet.
_ULTRA_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "YOLO_VERBOSE": "False"}


def is_ultralytics_source(path: str | Path) -> bool:
    """True for a ``.yaml`` / ``.yml`` / ``.pt`` path (what :func:`load_ultralytics` accepts)."""
    return Path(str(path)).suffix.lower() in (".yaml", ".yml", ".pt")


def _import_ultralytics():
    """Import ultralytics offline, with its settings in a temporary directory (never under $HOME).

    Ultralytics reads ``importlib.metadata.version("torchvision")`` at import; torchvision does
    not install beside the CPU torch here and nothing on the ``DetectionModel`` path uses it, so
    while importing, a missing torchvision reports version ``0.0.0`` (Ultralytics then only warns).
    """
    if "ultralytics.nn.tasks" in sys.modules:  # already imported: nothing to set up
        return sys.modules["ultralytics.nn.tasks"]
    for k, v in _ULTRA_ENV.items():
        os.environ.setdefault(k, v)
    if not os.environ.get("YOLO_CONFIG_DIR"):
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="edgesight-ultralytics-")
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        try:
            return real_version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "torchvision":
                return "0.0.0"
            raise

    importlib.metadata.version = version
    try:
        from ultralytics.nn import tasks
    except ImportError as e:
        raise ImportError("Ultralytics sources need the optional extra: pip install --no-deps 'ultralytics>=8.3' "
                          f"ultralytics-thop (see pyproject.toml's `ultralytics` extra): {e}") from e
    finally:
        importlib.metadata.version = real_version
    return tasks


def _find_yaml(tasks, spec: str) -> str:
    """A local ``.yaml`` path, or a config name shipped inside ultralytics (``yolo11n.yaml``)."""
    p = Path(spec)
    if p.is_file():
        return str(p.resolve())
    if p.parent != Path("."):
        raise FileNotFoundError(f"{spec}: no such model config")
    from ultralytics.utils import ROOT

    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", p.stem) + p.suffix
    shipped = {f.name for f in (ROOT / "cfg" / "models").rglob("*.y*ml")}
    if p.name not in shipped and unified not in shipped:
        raise FileNotFoundError(f"{spec}: not a local file and not a model config shipped with ultralytics "
                                f"(e.g. yolov8n.yaml, yolo11n.yaml); nothing is downloaded")
    return spec


def load_ultralytics(path_or_yaml: str | Path, *, nc: int | None = None,
                     allow_pickle: bool = False, end2end: bool | None = None) -> torch.nn.Module:
    """An Ultralytics detection model in eval mode, float32, on the CPU, head in export mode.

    Args:
        path_or_yaml: a ``.yaml`` (local file or shipped config name: random weights) or a local
            ``.pt`` checkpoint.
        nc: number of classes for a ``.yaml`` (default: the config's, 80).
        allow_pickle: for a ``.pt`` that does not load with ``torch.load(weights_only=True)``
            against Ultralytics' allow-list, unpickle it fully. A pickle runs code: only for
            files you trust.
        end2end: use the NMS-free one-to-one head (YOLO26, YOLOv10: output ``[1, 300, 6]``);
            default: what the config/checkpoint says (``end2end: True`` in ``yolo26.yaml``).

    Raises:
        ImportError: ultralytics is not installed (names the extra).
        FileNotFoundError: the file does not exist locally (nothing is downloaded).
        ValueError: not a ``.yaml``/``.pt``, or not a detection model.
    """
    tasks = _import_ultralytics()
    spec = str(path_or_yaml)
    suffix = Path(spec).suffix.lower()
    if suffix in (".yaml", ".yml"):
        model = tasks.DetectionModel(_find_yaml(tasks, spec), nc=nc, verbose=False)
    elif suffix == ".pt":
        p = Path(spec)
        if not p.is_file():
            raise FileNotFoundError(f"{spec}: no such checkpoint (Ultralytics weights come from the user; "
                                    f"nothing is downloaded)")
        try:
            ckpt, _ = tasks.torch_safe_load(str(p.resolve()), safe_only=True)
        except Exception as e:  # noqa: BLE001 - retried below only when the caller allows it
            if not allow_pickle:
                raise ValueError(f"{p}: does not load with weights_only=True ({type(e).__name__}: {e}); pass "
                                 f"allow_pickle=True to unpickle a checkpoint you trust") from e
            ckpt, _ = tasks.torch_safe_load(str(p.resolve()), safe_only=False)
        model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else ckpt
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"{p}: checkpoint holds no model (keys {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt)})")
    else:
        raise ValueError(f"{spec}: an Ultralytics source must be a .yaml config or a .pt checkpoint")
    if not isinstance(model, tasks.DetectionModel) or type(model) is not tasks.DetectionModel:
        raise ValueError(f"{spec}: a {type(model).__name__}, only plain detection models are supported")
    model = model.float().cpu().eval()
    want = bool((getattr(model, "yaml", None) or {}).get("end2end", False)) if end2end is None else end2end
    head = model.model[-1]
    if want and getattr(head, "one2one_cv2", None) is None:
        raise ValueError(f"{spec}: end2end requested but the model has no one-to-one (NMS-free) head")
    if hasattr(head, "one2one_cv2"):
        head.end2end = want
    for m in model.modules():
        if hasattr(m, "export") and hasattr(m, "nc"):
            m.export = True  # Detect head: return the [1, 4 + nc, N] tensor only
    return model


def is_end2end(model: torch.nn.Module) -> bool:
    """True when the model's head is NMS-free (one-to-one head selected)."""
    return bool(getattr(model.model[-1], "end2end", False))


def class_names(model: torch.nn.Module) -> list[str] | None:
    """The class names a checkpoint carries (``model.names``), in class order; ``None`` for defaults."""
    names = getattr(model, "names", None)
    if isinstance(names, dict) and names:
        keys = sorted(names)
        if keys == list(range(len(keys))):
            out = [str(names[k]) for k in keys]
            return None if out == [str(k) for k in keys] else out
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    return None


def write_labels(names: list[str], dst: Path) -> "LabelsRef":
    """Write one class name per line and return the card's reference to it (sha256 included)."""
    from edge.cards import LabelsRef

    dst.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return LabelsRef(file=dst.name, sha256=sha256_file(dst), first=0)


def ultralytics_card(onnx_path: str | Path, *, name: str, nc: int, source_desc: str, end2end: bool = False,
                     labels=None) -> ModelCard:
    """The card of an exported Ultralytics ONNX file (see the module docstring)."""
    mp = Path(onnx_path)
    ins, outs, opset = onnx_io(mp)
    (in_name, in_shape), (out_name, out_shape) = ins[0], outs[0]
    if labels is None:
        labels = get_card(COCO_LABELS_CARD).labels if nc == COCO_CLASSES else None
    meaning = (f"NMS-free: [1, K, 6] rows x1, y1, x2, y2 (input pixels), score, class (of {nc}); best first"
               if end2end else f"raw: cx, cy, w, h (input pixels), {nc} sigmoid class scores; [1, 4 + C, N]")
    try:
        ultra_version = importlib.metadata.version("ultralytics")
    except importlib.metadata.PackageNotFoundError:
        ultra_version = "unknown"
    return ModelCard(
        name=name, task="object_detection", format="onnx", file=mp.name, sha256=sha256_file(mp),
        size=mp.stat().st_size,
        licence=Licence(spdx="AGPL-3.0-only", non_commercial=False,
                        note="Ultralytics YOLO code and architecture are AGPL-3.0 (copyleft, not non-commercial): "
                             "distributing this model may oblige you to publish source, or to hold an Ultralytics "
                             "Enterprise licence"),
        source=Source(homepage="https://github.com/ultralytics/ultralytics",
                      note=f"weights come from the user ({source_desc}); exported by edge-export with torch.onnx"),
        inputs=(InputSpec(name=in_name, shape=in_shape, layout="NCHW", dtype="float32", color="RGB",
                          mean=(0.0, 0.0, 0.0), std=(ULTRA_PIXEL_SCALE,) * 3, resize="letterbox",
                          pad_value=ULTRA_PAD_VALUE, interpolation="linear"),),
        outputs=(OutputSpec(name=out_name, shape=out_shape,
                            meaning=meaning),),
        labels=labels, thresholds=Thresholds(**DEFAULT_THRESHOLDS), macs=file_macs(mp),
        description=f"Ultralytics detector from {source_desc} ({nc} classes), ONNX opset {opset}.",
        decoding=Decoding(decoder="ultralytics_end2end" if end2end else "ultralytics", num_classes=nc),
        provenance=Provenance(converter=f"torch.onnx {torch.__version__}", ultralytics=ultra_version, opset=opset))


def export_ultralytics_onnx(src: str | Path | torch.nn.Module, out_dir: str | Path, imgsz: int = 640,
                            *, nc: int | None = None, name: str | None = None, end2end: bool | None = None
                            ) -> tuple[Path, Path]:
    """Export an Ultralytics detector to ``out_dir/<name>.onnx`` plus its card ``<name>.json``.

    Args:
        src: a model from :func:`load_ultralytics`, or a path/config name it accepts.
        out_dir: destination directory.
        imgsz: square input size (a multiple of the largest stride, 32).
        nc: classes for a ``.yaml`` source.
        name: card/file name (default: the source's stem, or ``ultralytics_<imgsz>``).

    Returns:
        ``(onnx_path, card_path)``.

    Raises:
        ValueError: ``imgsz`` not a multiple of 32.
        ExportError: the export failed or its output is not ``[1, 4 + nc, N]``.
    """
    if imgsz <= 0 or imgsz % 32:
        raise ValueError(f"imgsz must be a positive multiple of 32, got {imgsz}")
    desc = "a torch module"
    if not isinstance(src, torch.nn.Module):
        desc = Path(str(src)).name
        name = name or Path(str(src)).stem
        src = load_ultralytics(src, nc=nc, end2end=end2end)
    name = name or f"ultralytics_{imgsz}"
    n_cls = int(src.model[-1].nc)
    e2e = is_end2end(src)
    out = Path(out_dir)
    onnx_path = export_onnx(src, out / f"{name}.onnx", (1, 3, imgsz, imgsz), input_name="images",
                            output_name="output", opset=17)
    _, outs, _ = onnx_io(onnx_path)
    shape = outs[0][1]
    if e2e:
        if len(outs) != 1 or len(shape) != 3 or shape[2] != 6:
            raise ExportError(f"{onnx_path}: outputs {outs}, expected one [1, K, 6] from the NMS-free head")
    elif len(outs) != 1 or len(shape) != 3 or shape[1] != 4 + n_cls:
        raise ExportError(f"{onnx_path}: outputs {outs}, expected one [1, {4 + n_cls}, N] (head not in export mode?)")
    names = class_names(src)
    labels = write_labels(names, out / f"{name}_labels.txt") if names and len(names) == n_cls else None
    card = ultralytics_card(onnx_path, name=name, nc=n_cls, source_desc=desc, end2end=e2e, labels=labels)
    card_path = out / f"{name}.json"
    tmp = card_path.with_name(f".{card_path.name}.tmp")
    tmp.write_text(card.to_json(), encoding="utf-8")
    os.replace(tmp, card_path)
    return onnx_path, card_path
