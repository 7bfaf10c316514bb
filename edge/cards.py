"""Model cards: the plain-JSON description that travels with every model file.

A card says what a model does and exactly how to feed it: task, input tensors (shape, layout,
dtype, colour order, mean/std, resize rule, quantisation), outputs and their meaning, labels,
licence, upstream source and sha256. ``edge/`` reads cards with :mod:`json` alone.

Pixel normalisation convention: after colour conversion and resizing, a pixel ``p`` in
0..255 becomes ``(p - mean) / std`` per channel (mean and std in 0..255 units). A uint8 input
with ``mean=0, std=1`` is fed the raw pixels.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from msgspec import Meta

from edge.errors import ModelCardError

TASKS = ("classification", "object_detection", "face_detection", "face_embedding", "liveness", "other")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR", "GRAY")
DTYPES = ("float32", "float16", "uint8", "int8")
RESIZES = ("stretch", "letterbox", "letterbox_topleft", "center_crop", "none")
CARD_SCHEMA = 1


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int


@dataclass(frozen=True)
class InputSpec:
    """One input tensor and how to produce it from an image."""

    name: str
    shape: tuple
    layout: str = "NCHW"
    dtype: str = "float32"
    color: str = "RGB"
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    resize: str = "stretch"
    resize_shorter: int | None = None  # for center_crop: resize the shorter side to this first
    pad_value: float = 0.0
    quantization: Quantization | None = None
    interpolation: str = "area"  # "area" | "linear" | "nearest" (see edge.preprocess.INTERPOLATIONS)

    @property
    def size(self) -> tuple[int | None, int | None]:
        """(width, height) the image is resized to; None for a dynamic dimension."""
        if len(self.shape) != 4:
            return (None, None)
        h, w = (self.shape[2], self.shape[3]) if self.layout == "NCHW" else (self.shape[1], self.shape[2])
        return (w if isinstance(w, int) else None, h if isinstance(h, int) else None)


@dataclass(frozen=True)
class OutputSpec:
    name: str
    shape: tuple = ()
    meaning: str = ""
    quantization: Quantization | None = None


@dataclass(frozen=True)
class Licence:
    spdx: str
    non_commercial: bool = False
    note: str = ""


@dataclass(frozen=True)
class Source:
    """Where the file comes from upstream: a URL, or a member of a PyPI wheel."""

    url: str | None = None
    pypi: dict | None = None  # {"package": ..., "version": ..., "member": ...}
    homepage: str | None = None
    note: str = ""

    @property
    def downloadable(self) -> bool:
        return bool(self.url or self.pypi)


@dataclass(frozen=True)
class LabelsRef:
    file: str
    sha256: str
    first: int = 0  # index of the line that is class 0 of the model output
    exclude: tuple = ()  # placeholder lines to drop first (e.g. "n/a" gaps of the 91-id COCO list)
    source: Source = field(default_factory=Source)


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to run one model file correctly."""

    name: str
    task: str
    format: str
    file: str
    sha256: str
    licence: Licence
    source: Source
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    labels: LabelsRef | None = None
    description: str = ""
    size: int | None = None
    thresholds: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    schema: int = CARD_SCHEMA

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelCardError(f"card {self.name!r}: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ModelCardError(f"card {self.name!r}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        for spec in self.inputs:
            if spec.layout not in LAYOUTS:
                raise ModelCardError(f"card {self.name!r} input {spec.name!r}: layout must be one of {LAYOUTS}, got {spec.layout!r}")
            if spec.color not in COLORS:
                raise ModelCardError(f"card {self.name!r} input {spec.name!r}: color must be one of {COLORS}, got {spec.color!r}")
            if spec.interpolation not in ("area", "linear", "nearest"):
                raise ModelCardError(f"card {self.name!r} input {spec.name!r}: interpolation must be area, linear or nearest, got {spec.interpolation!r}")
            channels = 1 if spec.color == "GRAY" else 3
            for what in ("mean", "std"):
                if len(getattr(spec, what)) not in (1, channels):
                    raise ModelCardError(f"card {self.name!r} input {spec.name!r}: {what} needs 1 or {channels} values "
                                         f"for {spec.color}, got {len(getattr(spec, what))}")
            if spec.resize not in RESIZES:
                raise ModelCardError(f"card {self.name!r} input {spec.name!r}: resize must be one of {RESIZES}, got {spec.resize!r}")

    @property
    def non_commercial(self) -> bool:
        return self.licence.non_commercial

    def to_dict(self) -> dict:
        return _drop_none(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict, *, origin: str = "card") -> "ModelCard":
        return _build(cls, data, origin)

    @classmethod
    def from_json(cls, text: str, *, origin: str = "card") -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelCardError(f"{origin}: not valid JSON ({e})") from e
        return cls.from_dict(data, origin=origin)


def load_card(path: str | Path) -> ModelCard:
    """Read a model card JSON file. Raises :class:`ModelCardError` naming the file and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ModelCardError(f"cannot read model card {p}: {e}") from e
    except UnicodeDecodeError as e:
        raise ModelCardError(f"model card {p}: not UTF-8 text (byte {e.start}); a card must be a UTF-8 JSON file") from None
    return ModelCard.from_json(text, origin=str(p))


def _drop_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, (list, tuple)):
        return [_drop_none(v) for v in x]
    return x


_NESTED = {
    (ModelCard, "licence"): Licence, (ModelCard, "source"): Source, (ModelCard, "labels"): LabelsRef,
    (LabelsRef, "source"): Source, (InputSpec, "quantization"): Quantization,
    (OutputSpec, "quantization"): Quantization,
}
_SEQ = {(ModelCard, "inputs"): InputSpec, (ModelCard, "outputs"): OutputSpec}

_Dim = Union[Annotated[int, Meta(ge=1, le=16384)], str, None]  # a fixed size >= 1, or a named/unknown dynamic one
_Positive = Annotated[float, Meta(gt=0)]
#: The JSON type of every plain field, checked with msgspec where the card enters (a wrong type
#: anywhere is an error naming the card and the field, never a traceback later).
_JSON_TYPES: dict[tuple[type, str], Any] = {
    (ModelCard, "name"): str, (ModelCard, "task"): str, (ModelCard, "format"): str,
    (ModelCard, "file"): Annotated[str, Meta(min_length=1)], (ModelCard, "sha256"): str,
    (ModelCard, "description"): str, (ModelCard, "size"): Union[Annotated[int, Meta(ge=0)], None],
    (ModelCard, "thresholds"): dict[str, Any], (ModelCard, "extra"): dict[str, Any], (ModelCard, "schema"): int,
    (ModelCard, "inputs"): Annotated[list, Meta(min_length=1)], (ModelCard, "outputs"): Annotated[list, Meta(min_length=1)],
    (InputSpec, "name"): str, (InputSpec, "shape"): Annotated[tuple[_Dim, ...], Meta(min_length=1, max_length=8)],
    (InputSpec, "layout"): str, (InputSpec, "dtype"): Literal[DTYPES], (InputSpec, "color"): str,
    (InputSpec, "mean"): Annotated[tuple[float, ...], Meta(min_length=1, max_length=4)],
    (InputSpec, "std"): Annotated[tuple[_Positive, ...], Meta(min_length=1, max_length=4)],
    (InputSpec, "resize"): str, (InputSpec, "resize_shorter"): Union[Annotated[int, Meta(ge=1, le=16384)], None],
    (InputSpec, "pad_value"): float, (InputSpec, "interpolation"): str,
    (OutputSpec, "name"): str, (OutputSpec, "shape"): tuple[_Dim, ...], (OutputSpec, "meaning"): str,
    (Quantization, "scale"): _Positive, (Quantization, "zero_point"): Annotated[int, Meta(ge=-128, le=255)],
    (Licence, "spdx"): str, (Licence, "non_commercial"): bool, (Licence, "note"): str,
    (Source, "url"): Union[str, None], (Source, "pypi"): Union[dict[str, str], None],
    (Source, "homepage"): Union[str, None], (Source, "note"): str,
    (LabelsRef, "file"): Annotated[str, Meta(min_length=1)], (LabelsRef, "sha256"): str,
    (LabelsRef, "first"): Annotated[int, Meta(ge=0)], (LabelsRef, "exclude"): tuple[str, ...],
}


def _check_json_type(cls, key: str, value, origin: str):
    """``value`` converted to the field's JSON type (lists become tuples), or a ModelCardError."""
    import msgspec

    kind = _JSON_TYPES.get((cls, key))
    if kind is None:
        return value
    try:
        return msgspec.convert(value, type=kind, strict=True)
    except msgspec.ValidationError as e:
        detail = str(e).replace("`$`", "the value").replace("$", key)
        raise ModelCardError(f"{origin}: field {key!r} of {cls.__name__}: {detail}") from None


def _build(cls, data, origin: str):
    if not isinstance(data, dict):
        raise ModelCardError(f"{origin}: expected an object for {cls.__name__}, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ModelCardError(f"{origin}: unknown field(s) {sorted(unknown)} in {cls.__name__} "
                             f"(valid: {', '.join(known)})")
    if cls is ModelCard:
        for key in ("inputs", "outputs"):
            if key not in data:
                raise ModelCardError(f"{origin}: field {key!r} is missing: a card must describe its model's "
                                     f"{key} (a guess would give confident, wrong results)")
    kwargs = {}
    for key, value in data.items():
        value = _check_json_type(cls, key, value, origin)
        sub = _NESTED.get((cls, key))
        seq = _SEQ.get((cls, key))
        if sub is not None and value is not None:
            value = _build(sub, value, f"{origin}.{key}")
        elif seq is not None:
            value = tuple(_build(seq, v, f"{origin}.{key}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        missing = [n for n, f in known.items()
                   if n not in data and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ModelCardError(f"{origin}: {cls.__name__} is missing required field(s) {', '.join(missing)}") from e
        raise ModelCardError(f"{origin}: {e}") from e
