"""Model cards: the plain-JSON description that travels with every model file.

A card says what a model does and exactly how to feed it: task, input tensors (shape, layout,
dtype, colour order, mean/std, resize rule, quantisation), outputs and their meaning, labels,
licence, upstream source and sha256. ``edge/`` reads cards with :mod:`json` alone.

What used to be loose keys of two ``extra`` / ``thresholds`` dicts are typed parts, one per
concern, validated with msgspec (unknown or mistyped fields are errors naming the card and the
field): :class:`Thresholds` (operating points and how they were derived), :class:`Decoding`
(how a detector's raw outputs become boxes), :class:`FaceCrop` (the crop a liveness model
expects), :class:`Macs` (multiply-accumulates counted at export time with ``onnx``),
:class:`GateRecord` (the quality gate a variant passed) and :class:`Provenance` (what a file
was derived from and how).

Schema: :data:`CARD_SCHEMA` 2. Schema-1 cards (written before the typed parts, with ``extra``
and a free ``thresholds`` dict) are still read: every known key moves to its typed home and an
unknown one is refused by name (:func:`upgrade_schema_1`). They are never rewritten in place.

Pixel normalisation convention: after colour conversion and resizing, a pixel ``p`` in
0..255 becomes ``(p - mean) / std`` per channel (mean and std in 0..255 units). A uint8 input
with ``mean=0, std=1`` is fed the raw pixels.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from edge.errors import ModelCardError

TASKS = ("classification", "object_detection", "face_detection", "face_embedding", "liveness", "other")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR", "GRAY")
DTYPES = ("float32", "float16", "uint8", "int8")
RESIZES = ("stretch", "letterbox", "letterbox_topleft", "center_crop", "none")
CARD_SCHEMA = 2
#: ``Decoding.decoder`` values (the decoders of :mod:`edge.detect.decoders`).
DECODER_NAMES = ("yolox", "ultralytics", "ultralytics_end2end", "tflite_ssd")
PRECISIONS = ("fp32", "fp16", "int8")


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


_Unit = Annotated[float, Meta(ge=0, le=1)]
_Count = Annotated[int, Meta(ge=0)]


class _Part(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """A typed part of a card: unknown fields are refused, defaults are left out of the JSON."""


class Thresholds(_Part):
    """Operating points of the model, read once from here.

    Attributes:
        score: detection score above which a box is kept.
        nms_iou: IoU above which NMS drops the lower-scored box of the same class.
        cosine_at_far: embedder: cosine threshold per false-accept rate (keys as written, ``"0.001"``).
        tar_at_far: embedder: true-accept rate reached at each of those thresholds.
        roc_auc: embedder: ROC AUC on the pairs below.
        derived_on: how and on what data the embedder thresholds were derived.
        pairs, genuine_pairs, impostor_pairs: pair counts behind those figures.
    """

    score: _Unit | None = None
    nms_iou: _Unit | None = None
    cosine_at_far: dict[str, Annotated[float, Meta(ge=-1, le=1)]] | None = None
    tar_at_far: dict[str, _Unit] | None = None
    roc_auc: _Unit | None = None
    derived_on: str | None = None
    pairs: _Count | None = None
    genuine_pairs: _Count | None = None
    impostor_pairs: _Count | None = None


class Decoding(_Part):
    """How an object detector's raw outputs become boxes (:func:`edge.detect.decoders.make_decoder`).

    Attributes:
        decoder: one of :data:`DECODER_NAMES`.
        strides: YOLOX grid strides (default 8, 16, 32).
        num_classes: class count of an Ultralytics head.
        multi_label: keep every class above the threshold per anchor, not only the best.
    """

    decoder: Literal[DECODER_NAMES]
    strides: Annotated[tuple[Annotated[int, Meta(ge=1)], ...], Meta(min_length=1)] | None = None
    num_classes: Annotated[int, Meta(ge=1)] | None = None
    multi_label: bool = False


class FaceCrop(_Part):
    """The face crop a liveness model reads: the detector's box enlarged ``crop_scale`` times."""

    crop_scale: Annotated[float, Meta(gt=0)]
    live_class: _Count = 1


class Macs(_Part):
    """Multiply-accumulates of one inference, counted at export time (:mod:`export.onnx.macs`).

    Attributes:
        total: MACs of one inference at ``input_shape``.
        by_precision: MACs per compute precision (``fp32`` / ``fp16`` / ``int8``).
        input_shape: the first input's shape they were counted at (a fully convolutional model
            fed another size scales with its pixel count).
        counted_by: the counter and its version.
    """

    total: _Count
    by_precision: dict[Literal[PRECISIONS], _Count]
    input_shape: tuple[Annotated[int, Meta(ge=1)], ...]
    counted_by: str = ""

    @property
    def precision(self) -> str:
        """The precision that carries most MACs."""
        return max(self.by_precision.items(), key=lambda kv: kv[1])[0] if self.by_precision else "fp32"


class GateRecord(_Part):
    """The quality gate a variant passed: the verdict and the figures it was judged on."""

    passed: bool
    metrics: dict[str, Any] = {}


class DerivedFrom(_Part):
    """The card and file a derived model was made from."""

    name: str
    sha256: str


class StateDictSource(_Part):
    """A user's PyTorch state dict a model was exported from (``edge-export build --source ROLE=NET:FILE``)."""

    file: str
    sha256: str
    net: str
    num_classes: _Count


class Rewrite(_Part):
    """One graph rewrite applied to the file (same function; outputs compared)."""

    name: str
    nodes: _Count
    max_abs_diff: float | None = None  # None: not measured (no check feeds were given)
    stage: str = ""


class Parity(_Part):
    """The exported file against its source on a real input."""

    max_abs_diff: float
    atol: float | None = None
    image: str | None = None


class Provenance(_Part):
    """Where a derived file comes from and how it was made (written by ``edge-export``).

    Attributes:
        derived_from: the source card (name, sha256).
        state_dict: the user's state dict the float model was exported from.
        variant: the build target key (``tflite_int8``, ``onnx_fp16`` ...).
        precision: ``fp32`` / ``fp16`` / ``int8`` when the name or tensors do not say it.
        io_dtype: element type of the variant's inputs and outputs.
        converter: the converter and its version, or package → version for several.
        opset: ONNX opset of the file.
        ultralytics: version of the Ultralytics package that built the source.
        graph_rewrite: id of the whole-file rewrite that made this file (:mod:`export.onnx.graph_opt`).
        rewrites: graph rewrites in the shipped file; ``rewrites_note`` why there are none.
        prelu_rewritten: PRelu nodes rewritten as element-wise ops when exporting.
        prelu_nodes: PRelu nodes left in the shipped file.
        kept_float: nodes a partially quantised variant keeps in float (names, or their count).
        parity: the file against its source.
    """

    derived_from: DerivedFrom | None = None
    state_dict: StateDictSource | None = None
    variant: str | None = None
    precision: Literal[PRECISIONS] | None = None
    io_dtype: str | None = None
    converter: Union[str, dict[str, str], None] = None
    opset: Annotated[int, Meta(ge=1)] | None = None
    ultralytics: str | None = None
    graph_rewrite: str | None = None
    rewrites: tuple[Rewrite, ...] | None = None
    rewrites_note: str | None = None
    prelu_rewritten: _Count | None = None
    prelu_nodes: _Count | None = None
    kept_float: Union[tuple[str, ...], _Count, None] = None
    parity: Parity | None = None


#: The typed parts of a card, by field name (a dict given for one is validated into its type).
_PARTS: dict[str, type] = {"thresholds": Thresholds, "decoding": Decoding, "face_crop": FaceCrop, "macs": Macs,
                           "gate": GateRecord, "provenance": Provenance}


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
    thresholds: Thresholds = field(default_factory=Thresholds)
    decoding: Decoding | None = None
    face_crop: FaceCrop | None = None
    macs: Macs | None = None
    gate: GateRecord | None = None
    provenance: Provenance = field(default_factory=Provenance)
    schema: int = CARD_SCHEMA

    def __post_init__(self) -> None:
        for key, kind in _PARTS.items():  # a plain dict (code building a card) is validated into its type
            value = getattr(self, key)
            if isinstance(value, dict):
                object.__setattr__(self, key, _check_json_type(ModelCard, key, value, f"card {self.name!r}"))
            elif value is not None and not isinstance(value, kind):
                raise ModelCardError(f"card {self.name!r}: field {key!r} must be a {kind.__name__}, got {type(value).__name__}")
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
        d = _drop_none(msgspec.to_builtins(self))
        for key in ("thresholds", "provenance"):  # empty parts are left out
            if d.get(key) == {}:
                del d[key]
        return d

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
    **{(ModelCard, key): Union[kind, None] for key, kind in _PARTS.items()},
    (ModelCard, "schema"): Annotated[int, Meta(ge=1, le=CARD_SCHEMA)],
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
    if cls is ModelCard and data.get("schema", 1) == 1:
        data = upgrade_schema_1(data, origin)
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
        if cls is ModelCard and key in _PARTS and value is None:
            continue  # null: the default (an empty part or none)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        missing = [n for n, f in known.items()
                   if n not in data and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ModelCardError(f"{origin}: {cls.__name__} is missing required field(s) {', '.join(missing)}") from e
        raise ModelCardError(f"{origin}: {e}") from e


#: Schema 1 (``extra`` dict) key -> (typed part, field) it moves to in schema 2.
_SCHEMA_1_EXTRA = {
    "decoder": ("decoding", "decoder"), "strides": ("decoding", "strides"), "num_classes": ("decoding", "num_classes"),
    "multi_label": ("decoding", "multi_label"), "crop_scale": ("face_crop", "crop_scale"),
    "live_class": ("face_crop", "live_class"), "gate": ("gate", None), "macs": ("macs", None),
    **{k: ("provenance", k) for k in ("derived_from", "variant", "precision", "io_dtype", "converter", "opset",
                                      "ultralytics", "graph_rewrite", "rewrites", "rewrites_note", "prelu_nodes",
                                      "prelu_rewritten", "kept_float", "parity")},
    "parity_max_abs_diff": ("provenance", "parity"), "rewrite_max_abs_diff": ("provenance", "rewrites"),
}


def upgrade_schema_1(data: dict, origin: str) -> dict:
    """A schema-1 card's dict in the schema-2 shape (the ``extra`` keys moved to their typed parts).

    Raises:
        ModelCardError: an ``extra`` key schema 1 never had (named), or a malformed ``extra``.
    """
    data = dict(data)
    extra = data.pop("extra", None) or {}
    if not isinstance(extra, dict):
        raise ModelCardError(f"{origin}: field 'extra' (schema 1) must be an object, got {type(extra).__name__}")
    unknown = sorted(set(extra) - set(_SCHEMA_1_EXTRA))
    if unknown:
        raise ModelCardError(f"{origin}: unknown key(s) {', '.join('extra.' + k for k in unknown)} in a schema-1 card "
                             f"(known: {', '.join(sorted(_SCHEMA_1_EXTRA))})")
    parts: dict[str, dict] = {}
    for key, value in extra.items():
        part, name = _SCHEMA_1_EXTRA[key]
        if key == "macs":
            raw = value if isinstance(value, dict) else {"fp32": value}
            by = {k: v for k, v in raw.items() if k in PRECISIONS}
            data["macs"] = {"total": raw.get("total", sum(v for v in by.values() if isinstance(v, int))),
                            "by_precision": by, "input_shape": list((data.get("inputs") or [{}])[0].get("shape", [1])),
                            "counted_by": "schema-1 card"}
        elif key == "gate":
            data["gate"] = value
        elif key == "parity":
            v = value if isinstance(value, dict) else {"max_abs_diff": value}
            parts.setdefault("provenance", {})["parity"] = {
                "max_abs_diff": v.get("max_abs_diff", v.get("max_abs_diff_logits")),
                **{k: v[k] for k in ("atol", "image") if k in v}}
        elif key == "parity_max_abs_diff":
            parts.setdefault("provenance", {})["parity"] = {"max_abs_diff": value}
        elif key == "rewrite_max_abs_diff":
            continue  # recorded with the rewrite below
        elif key == "graph_rewrite" and "prelu_nodes" in extra:
            prov = parts.setdefault("provenance", {})
            prov["graph_rewrite"] = value  # schema 1's graph_opt wrote the count it rewrote as prelu_nodes
            prov["prelu_rewritten"] = extra["prelu_nodes"]
            prov["rewrites"] = [{"name": "prelu", "nodes": extra["prelu_nodes"],
                                 "max_abs_diff": extra.get("rewrite_max_abs_diff", 0.0), "stage": "graph_opt"}]
        elif key == "prelu_nodes" and "graph_rewrite" in extra:
            continue
        else:
            parts.setdefault(part, {})[name] = value
    for part, values in parts.items():
        data[part] = values
    data["schema"] = CARD_SCHEMA
    return data
