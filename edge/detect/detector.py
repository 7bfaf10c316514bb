"""Run an object-detection model card on BGR images: preprocess, infer, decode, NMS.

:class:`Detector` wraps an :class:`~edge.engines.base.Engine` and the card that says how to feed
it; :func:`create_detector` builds one from a registry name, a model file with a card, or a card
JSON. Boxes come back in source-frame pixels, class ids in the card's label space
(:attr:`Detector.labels` names them).

Example:
    >>> with create_detector("yolox_nano_416", threads=2) as det:      # doctest: +SKIP
    ...     dets = det.detect(cv2.imread("bus.jpg"))
    ...     names = [det.labels[c] for c in dets.class_id]
    >>> names, det.timings.inference                                      # doctest: +SKIP
    (['bus', 'person', 'person', 'person', 'person'], ...)
"""

from __future__ import annotations

import difflib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edge.card_match import check_card_matches
from edge.cards import InputSpec, ModelCard
from edge.detect.decoders import Decoder, finalize, make_decoder
from edge.engines.base import Engine
from edge.errors import ModelCardError
from edge.preprocess import Transform, prepare, resize_image
from edge.types import Detections
from edge.vision.face_detectors import check_bgr_image

__all__ = ["Detector", "Prepared", "StageTimings", "create_detector", "DEFAULT_SCORE", "DEFAULT_NMS_IOU",
           "DEFAULT_MAX_DETECTIONS", "PLACEHOLDER_LABELS"]

#: Used when a card has no ``thresholds.score`` / ``thresholds.nms_iou``.
DEFAULT_SCORE = 0.25
DEFAULT_NMS_IOU = 0.45
DEFAULT_MAX_DETECTIONS = 100
#: NMS looks at no more than this many candidates (Ultralytics' ``max_nms`` plays this role):
#: it bounds the cost of a frame full of low scores.
MAX_NMS_CANDIDATES = 10_000
#: Label-file lines (lower-cased, stripped) that mark unused ids: the 91-id COCO list's "n/a" gaps.
PLACEHOLDER_LABELS = frozenset({"n/a", "???", ""})

_MS = 1e3


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds spent by the last :meth:`Detector.detect` call in each stage.

    ``decode`` covers decoding, class filter, NMS and mapping back to source pixels.
    Reads as attributes (``t.inference``) or keys (``t["inference"]``).
    """

    preprocess: float = 0.0
    inference: float = 0.0
    decode: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.decode

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __getitem__(self, key: str) -> float:
        return self.as_dict()[key] if key != "total" else self.total


@dataclass(frozen=True)
class Prepared:
    """One image made ready for the engine (see :meth:`Detector.preprocess`).

    Attributes:
        tensor: the model input, batch 1.
        transform: maps model-input pixels back to source pixels.
        image_wh: the source image's (width, height), for clipping.
    """

    tensor: np.ndarray
    transform: Transform
    image_wh: tuple[int, int]


class Detector:
    """Object detection with a model card.

    Args:
        engine: a loaded engine for the card's model file.
        card: the model card (``task`` ``object_detection``, ``decoding`` set).
        score_threshold: keep detections scoring above this; default the card's
            ``thresholds.score``.
        nms_iou: class-aware NMS IoU; default the card's ``thresholds.nms_iou``.
        classes: keep only these classes, by id (int) or name (str); ``None`` keeps all.
        max_detections: at most this many detections per image, best first (``None``: 100).
        labels: class names in output order; default loaded from the card's labels file.
        label_dir: directory to look for the labels file first (a bundle's directory).
        multi_label: let one box carry several classes (COCO evaluation does); default the
            card's ``decoding.multi_label`` or False.
        clip: clip boxes to the image.
        owns_engine: close the engine in :meth:`close` (:func:`create_detector` sets it).

    Raises:
        ModelCardError: the card is not a detector, has no decoder, or no input spec.
        ValueError: a class name or id in ``classes`` that the labels do not have.
    """

    def __init__(self, engine: Engine, card: ModelCard, *, score_threshold: float | None = None,
                 nms_iou: float | None = None, classes: Iterable[int | str] | None = None,
                 max_detections: int | None = DEFAULT_MAX_DETECTIONS, labels: Sequence[str] | None = None,
                 label_dir: str | Path | None = None, multi_label: bool | None = None, clip: bool = True,
                 owns_engine: bool = False) -> None:
        if card.task != "object_detection":
            raise ModelCardError(f"card {card.name!r} is a {card.task} model, not an object detector")
        if not card.inputs:
            raise ModelCardError(f"card {card.name!r} has no inputs: it must say how to feed the model")
        if max_detections is None:
            max_detections = DEFAULT_MAX_DETECTIONS
        if max_detections <= 0:
            raise ValueError(f"max_detections must be positive, got {max_detections}")
        check_card_matches(card, engine)
        self.engine, self.card = engine, card
        self.spec = card.inputs[0]
        self.input_name = engine.inputs[0].name
        self.decoder: Decoder = make_decoder(card, multi_label=multi_label)
        self.kind: str = card.decoding.decoder
        if labels is None:
            from edge import registry

            labels = registry.load_labels(card, base=Path(label_dir) if label_dir is not None else None)
        self.labels: list[str] = list(labels) if labels is not None else []
        t = card.thresholds
        if score_threshold is None:
            score_threshold = DEFAULT_SCORE if t.score is None else t.score
        self.score_threshold = float(score_threshold)
        self.nms_iou = float((DEFAULT_NMS_IOU if t.nms_iou is None else t.nms_iou) if nms_iou is None else nms_iou)
        self.max_detections = int(max_detections)
        self.keep_classes = None if classes is None else self._class_ids(classes)
        self.clip = clip
        self._owns_engine = owns_engine
        self.timings = StageTimings()

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def backend(self) -> str:
        return self.engine.backend

    def _class_ids(self, classes: Iterable[int | str]) -> np.ndarray:
        ids = []
        for c in classes:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if self.labels and not 0 <= int(c) < len(self.labels):
                    raise ValueError(f"class id {c} is out of range for {self.card.name} "
                                     f"({len(self.labels)} labels)")
                ids.append(int(c))
            elif isinstance(c, str) and c.strip().lstrip("-").isdigit():
                ids.extend(self._class_ids([int(c)]))
            elif isinstance(c, str):
                matches = [i for i, n in enumerate(self.labels) if n == c]
                if not matches:
                    close = difflib.get_close_matches(c, [n for n in self.labels if n.strip().lower() not in PLACEHOLDER_LABELS], n=3)
                    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                    raise ValueError(f"{self.card.name} has no class called {c!r}{hint}")
                ids.extend(matches)
            else:
                raise ValueError(f"classes must be ints (ids) or strings (names), got {c!r}")
        return np.unique(np.asarray(ids, np.int32))

    def label(self, class_id: int) -> str:
        """The name of ``class_id`` (its number as text when the card has no labels)."""
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(int(class_id))

    def preprocess(self, image_bgr: np.ndarray) -> Prepared:
        """Stage 1 of :meth:`detect`: the input tensor and how to map boxes back.

        The three stages touch no shared state, so a pipeline may prepare frame ``n + 1`` in one
        thread while another runs :meth:`infer` on frame ``n`` (OpenCV and the runtimes release
        the GIL).
        """
        image = check_bgr_image(image_bgr)
        x, transform = prepare(image, self.spec)
        return Prepared(x, transform, (int(image.shape[1]), int(image.shape[0])))

    def infer(self, prepared: Prepared) -> dict[str, np.ndarray]:
        """Stage 2 of :meth:`detect`: run the engine."""
        return self.engine.run({self.input_name: prepared.tensor})

    def postprocess(self, outputs: Mapping[str, np.ndarray], prepared: Prepared) -> Detections:
        """Stage 3 of :meth:`detect`: decode, filter classes, NMS, map to source pixels."""
        x = prepared.tensor
        input_wh = (x.shape[3], x.shape[2]) if self.spec.layout == "NCHW" else (x.shape[2], x.shape[1])
        cands = self.decoder(outputs, input_wh, self.score_threshold)
        return finalize(cands, prepared.transform, prepared.image_wh if self.clip else None,
                        nms_iou=None if getattr(self.decoder, "nms_free", False) else self.nms_iou,
                        max_detections=self.max_detections,
                        keep_classes=self.keep_classes, max_candidates=MAX_NMS_CANDIDATES)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Detect objects in one ``uint8`` BGR (or gray) image.

        Returns:
            :class:`~edge.types.Detections` in source pixels, best score first; per-stage
            times of this call are in :attr:`timings`.
        """
        t0 = time.perf_counter()
        prepared = self.preprocess(image_bgr)
        t1 = time.perf_counter()
        outputs = self.infer(prepared)
        t2 = time.perf_counter()
        dets = self.postprocess(outputs, prepared)
        t3 = time.perf_counter()
        self.timings = StageTimings((t1 - t0) * _MS, (t2 - t1) * _MS, (t3 - t2) * _MS)
        return dets

    __call__ = detect

    def close(self) -> None:
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Detector({self.card.name!r}, decoder={self.kind!r}, backend={self.backend!r}, "
                f"score>{self.score_threshold}, nms_iou={self.nms_iou}, max={self.max_detections})")


def create_detector(name_or_path: str | Path, *, backend: str | None = None, threads: int | None = None,
                    providers: Sequence[str] | None = None, engine_options: Mapping[str, Any] | None = None,
                    **opts) -> Detector:
    """Build a :class:`Detector` from a registry name, a model file with a card, or a card JSON.

    Args:
        name_or_path: e.g. ``"yolox_nano_416"``, ``"bundle/yolox_int8.tflite"`` (with a sidecar
            card ``yolox_int8.tflite.json`` or ``yolox_int8.json``), or ``"bundle/yolox.json"``.
        backend: ``"onnxruntime"``, ``"litert"`` or ``"opencv"``; default by file suffix.
        threads: inference threads.
        providers: onnxruntime execution providers (e.g. ``["cuda", "cpu"]``).
        engine_options: further ``load_engine`` options (a profile's providers and their options,
            :func:`edge.profile_use.engine_options`); ``threads`` / ``providers`` given here win.
        **opts: :class:`Detector` options (``score_threshold``, ``nms_iou``, ``classes``,
            ``max_detections``, ``multi_label``, ``clip``, ``labels``).

    Raises:
        KeyError: an unknown registry name (with suggestions).
        ModelNotFoundError / ModelIntegrityError: the model file is missing or altered.
        ModelCardError: no card for the file, or the card is not a detector.
    """
    from edge import registry
    from edge.engines import engine_kwargs, load_engine

    ref = registry.resolve(name_or_path)
    card = ref.card
    if card is None:
        raise ModelCardError(f"{ref.path}: no model card found (looked for {ref.path.name}.json and "
                             f"{ref.path.stem}.json beside it); a detector needs one to know its decoder")
    if card.task != "object_detection":
        raise ModelCardError(f"{card.name} is a {card.task} model, not an object detector")
    engine_opts: dict = engine_kwargs(threads, engine_options)
    if providers is not None:
        engine_opts["providers"] = list(providers)
    if backend is not None and backend.lower() in ("opencv", "cv2", "opencv-dnn"):
        engine_opts["input_shapes"] = {s.name: s.shape for s in card.inputs}
    engine = load_engine(ref.path, backend=backend, **engine_opts)
    try:
        opts.setdefault("label_dir", ref.card_dir)
        return Detector(engine, card, owns_engine=True, **opts)
    except BaseException:
        engine.close()
        raise
