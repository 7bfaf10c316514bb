"""Calibration data from real images, prepared exactly as the device prepares them.

- :class:`FeedReader` is onnxruntime's one-method ``CalibrationDataReader`` interface
  (``get_next() -> feeds | None``) plus ``rewind()`` and ``len()``, so one reader serves the
  onnxruntime quantiser, the TFLite quantiser and the fallback's error ranking.
- :class:`ImageFolderReader` runs the model card's preprocessing (:func:`edge.preprocess.prepare`)
  on image files (coco128 for the classifier and the detector).
- :func:`face_crops` makes the crops face models see on the device: the face detector finds
  the largest face, then either :func:`edge.face.align.align_face` warps it onto the ArcFace
  template (embedders) or :func:`edge.face.liveness.scaled_crop` cuts the enlarged box
  (liveness). :data:`FACE_CROPPERS` is the one place to swap the aligner.
- :func:`split_files` is a deterministic, order-independent split: a file goes to calibration
  when the sha256 of its name falls under the fraction, so adding a file never moves another.
  Calibration and evaluation are disjoint by construction.
- :func:`calibration_hash` (sha256 of the sorted names and bytes) identifies the calibration
  set in reports.

Example:
    >>> split = split_files(list_images(data / "coco128/images", "yolox"))       # doctest: +SKIP
    >>> reader = ImageFolderReader(split.calibration, card.inputs[0])              # doctest: +SKIP
    >>> calibration_hash(split.calibration)                                       # doctest: +SKIP
    '3f1c…'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edge.cards import InputSpec
from edge.imageio import IMAGE_SUFFIXES, load_image
from edge.preprocess import prepare
from export.variants import ExportStepError

__all__ = ["CalibrationError", "Split", "ThreeWaySplit", "split_three", "THREE_WAY_FRACTIONS", "FeedReader", "ImageFolderReader", "list_images", "split_files",
           "calibration_hash", "face_crops", "FACE_CROPPERS", "crops_reader", "SPLIT_SALT",
           "DEFAULT_CALIBRATION_FRACTION", "read_image", "largest_face", "with_grey_copies"]

STEP = "calibration"
#: Mixed into the split hash so the split is this project's own, not an accident of file names.
SPLIT_SALT = b"edgesight-calibration-split-v1"
#: Share of the images used for calibration (the rest is the evaluation split).
DEFAULT_CALIBRATION_FRACTION = 0.5
_HASH_CHUNK = 1 << 20


class CalibrationError(ExportStepError, ValueError):
    """Calibration data is missing or unusable: empty or unreadable folder, wrong-sized image."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(model, STEP, message)


@dataclass(frozen=True)
class Split:
    """Disjoint calibration and evaluation files (both sorted)."""

    calibration: tuple[Path, ...]
    evaluation: tuple[Path, ...]


def list_images(folder: str | Path, model_name: str = "model", *, recursive: bool = False) -> list[Path]:
    """Image files of ``folder``, sorted.

    Raises:
        CalibrationError: the folder does not exist, cannot be read, or holds no image.
    """
    d = Path(folder)
    if not d.is_dir():
        raise CalibrationError(model_name, f"calibration folder not found: {d}")
    try:
        it = d.rglob("*") if recursive else d.iterdir()
        files = sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise CalibrationError(model_name, f"cannot read calibration folder {d}: {e}") from e
    if not files:
        raise CalibrationError(model_name, f"calibration folder {d} holds no image "
                                           f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _unit_hash(key: str) -> float:
    digest = hashlib.sha256(SPLIT_SALT + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_files(files: Sequence[str | Path], calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION, *,
                key: Callable[[Path], str] = lambda p: p.name) -> Split:
    """Split ``files`` deterministically into calibration and evaluation.

    Args:
        files: the pool.
        calibration_fraction: expected share for calibration, in (0, 1).
        key: the string hashed per file (default its name; pass e.g. a person's folder name to
            keep one identity on one side).

    Raises:
        ValueError: a fraction outside (0, 1), or a split that leaves one side empty.
    """
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    paths = sorted(Path(f) for f in files)
    cal = tuple(p for p in paths if _unit_hash(key(p)) < calibration_fraction)
    ev = tuple(p for p in paths if _unit_hash(key(p)) >= calibration_fraction)
    if not cal or not ev:
        raise ValueError(f"splitting {len(paths)} file(s) at {calibration_fraction} leaves "
                         f"{'no calibration' if not cal else 'no evaluation'} file; use more images")
    return Split(cal, ev)


#: Default shares of (calibration, selection); the rest is the report split.
THREE_WAY_FRACTIONS = (0.3, 0.3)


@dataclass(frozen=True)
class ThreeWaySplit:
    """Disjoint calibration, selection (what choices are made on) and report files (all sorted)."""

    calibration: tuple[Path, ...]
    selection: tuple[Path, ...]
    report: tuple[Path, ...]


def split_three(files: Sequence[str | Path], fractions: tuple[float, float] = THREE_WAY_FRACTIONS, *,
                key: Callable[[Path], str] = lambda p: p.name) -> ThreeWaySplit:
    """Split ``files`` deterministically into calibration, selection and report by name hash.

    Same hash as :func:`split_files`: a file with hash ``u`` goes to calibration when
    ``u < fractions[0]``, to selection when ``u < fractions[0] + fractions[1]``, else to report.

    Raises:
        ValueError: fractions that do not leave room for all three, or an empty side.
    """
    cal, sel = fractions
    if cal <= 0 or sel <= 0 or cal + sel >= 1:
        raise ValueError(f"split fractions must be positive with a sum below 1, got {fractions}")
    paths = sorted(Path(f) for f in files)
    u = {p: _unit_hash(key(p)) for p in paths}
    out = ThreeWaySplit(tuple(p for p in paths if u[p] < cal), tuple(p for p in paths if cal <= u[p] < cal + sel),
                        tuple(p for p in paths if u[p] >= cal + sel))
    empty = [n for n in ("calibration", "selection", "report") if not getattr(out, n)]
    if empty:
        raise ValueError(f"splitting {len(paths)} file(s) at {fractions} leaves no {' and no '.join(empty)} "
                         "file; use more images")
    return out


def calibration_hash(files: Sequence[str | Path]) -> str:
    """sha256 over the sorted file names and their bytes (name, NUL, bytes, NUL per file)."""
    h = hashlib.sha256()
    for p in sorted(Path(f) for f in files):
        h.update(p.name.encode("utf-8") + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(_HASH_CHUNK), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


class FeedReader:
    """A calibration data reader over prepared feeds (``{input name: array}``).

    Implements onnxruntime's ``CalibrationDataReader`` protocol (``get_next``), plus
    ``rewind()`` so the same reader can be read again, and ``len()``. Feeds are produced lazily
    by ``make(i)`` on first use and kept.

    Args:
        count: number of feeds.
        make: ``i -> feeds`` for ``0 <= i < count``.
        files: the source files (for the calibration hash).
        model_name: for error messages.
    """

    def __init__(self, count: int, make: Callable[[int], Mapping[str, np.ndarray]], *,
                 files: Sequence[Path] = (), model_name: str = "model") -> None:
        if count <= 0:
            raise CalibrationError(model_name, "the calibration data is empty")
        self._make, self._count = make, count
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._pos = 0
        self.files = tuple(files)
        self.model_name = model_name

    def __len__(self) -> int:
        return self._count

    def feeds(self, i: int) -> dict[str, np.ndarray]:
        if i not in self._cache:
            self._cache[i] = dict(self._make(i))
        return self._cache[i]

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._count:
            return None
        item = self.feeds(self._pos)
        self._pos += 1
        return item

    def rewind(self) -> None:
        self._pos = 0

    def __iter__(self):
        for i in range(self._count):
            yield self.feeds(i)

    @property
    def hash(self) -> str:
        """:func:`calibration_hash` of the source files."""
        return calibration_hash(self.files)

    @classmethod
    def from_feeds(cls, feeds: Sequence[Mapping[str, np.ndarray]], *, files: Sequence[Path] = (),
                   model_name: str = "model") -> "FeedReader":
        items = [dict(f) for f in feeds]
        return cls(len(items), lambda i: items[i], files=files, model_name=model_name)


def read_image(path: Path, model_name: str = "model") -> np.ndarray:
    from edge.errors import ImageLoadError

    try:
        return load_image(path)
    except (ImageLoadError, OSError) as e:
        raise CalibrationError(model_name, f"cannot read calibration image {path}: {e}") from e


class ImageFolderReader(FeedReader):
    """Calibration feeds made from image files with a model card's input spec.

    Args:
        files: image files (e.g. ``split.calibration``).
        spec: the model card's input spec (size, layout, colour, mean/std, resize rule).
        input_name: graph input name (default ``spec.name``).
        size: ``(width, height)`` for a model with a dynamic input size.
        model_name: for error messages.

    Raises:
        CalibrationError: no files; later, an unreadable image or (for ``resize="none"``) an
            image whose size differs from the model input, naming the file.
    """

    def __init__(self, files: Sequence[str | Path], spec: InputSpec, *, input_name: str | None = None,
                 size: tuple[int, int] | None = None, model_name: str = "model") -> None:
        paths = [Path(f) for f in files]
        if not paths:
            raise CalibrationError(model_name, "no calibration images")
        name = input_name or spec.name
        want = size or spec.size

        def make(i: int) -> dict[str, np.ndarray]:
            img = read_image(paths[i], model_name)
            if spec.resize == "none" and None not in want and (img.shape[1], img.shape[0]) != tuple(want):
                raise CalibrationError(model_name, f"{paths[i]} is {img.shape[1]}×{img.shape[0]}, the model takes "
                                                   f"{want[0]}×{want[1]} and its card says not to resize")
            x, _ = prepare(img, spec, size=size)
            return {name: x}

        super().__init__(len(paths), make, files=paths, model_name=model_name)


@dataclass(frozen=True)
class _Face:
    xyxy: np.ndarray
    keypoints: np.ndarray | None


def _aligned_crop(image: np.ndarray, face: _Face, crop_scale: float | None) -> np.ndarray:
    from edge.face.align import align_face

    return align_face(image, face.keypoints)


def _liveness_crop(image: np.ndarray, face: _Face, crop_scale: float | None) -> np.ndarray:
    from edge.face.liveness import scaled_crop

    return scaled_crop(image, face.xyxy, float(crop_scale))


#: Crop makers ``(image, face, crop_scale) -> uint8 BGR crop`` by kind: ``"aligned"`` (the
#: ArcFace 112×112 template, for embedders) and ``"liveness"`` (the face box enlarged by the
#: card's ``crop_scale`` and resized to 80×80). Swap an entry to change the aligner everywhere.
FACE_CROPPERS: dict[str, Callable] = {"aligned": _aligned_crop, "liveness": _liveness_crop}


def largest_face(image: np.ndarray, detector) -> _Face | None:
    """The largest face ``detector`` finds in ``image`` (``None`` when there is none)."""
    d = detector.detect(image)
    if not len(d.score):
        return None
    area = (d.xyxy[:, 2] - d.xyxy[:, 0]) * (d.xyxy[:, 3] - d.xyxy[:, 1])
    i = int(np.argmax(area))
    kps = None if d.keypoints is None else np.asarray(d.keypoints[i], np.float64)
    return _Face(np.asarray(d.xyxy[i], np.float64), kps)


#: A tight face crop (LFW's 100×100: the face fills the image) is often missed by YuNet (found in
#: 16 of the first 40 LFW crops; upscaling does not help). With a black border of this fraction of
#: the side on each edge all 40 are found, so an image without a face is searched again padded.
TIGHT_CROP_PAD = 0.5


def _padded_face(image: np.ndarray, detector) -> _Face | None:
    import cv2

    h, w = image.shape[:2]
    py, px = int(round(h * TIGHT_CROP_PAD)), int(round(w * TIGHT_CROP_PAD))
    face = largest_face(cv2.copyMakeBorder(image, py, py, px, px, cv2.BORDER_CONSTANT, value=0), detector)
    if face is None:
        return None
    shift = np.array([px, py], np.float64)
    return _Face(face.xyxy - np.tile(shift, 2), None if face.keypoints is None else face.keypoints - shift)


def face_crops(files: Sequence[str | Path], detector, kind: str = "aligned", *, crop_scale: float | None = None,
               model_name: str = "model") -> tuple[list[np.ndarray], list[Path]]:
    """Face crops of the largest face in each image, as the device makes them.

    Args:
        files: face photos.
        detector: a face detector with 5 landmarks for ``"aligned"`` (YuNet); for ``"aligned"`` an
            image without a face found is searched again with a border (:data:`TIGHT_CROP_PAD`).
        kind: ``"aligned"`` or ``"liveness"``.
        crop_scale: box enlargement for ``"liveness"`` (the card's ``face_crop.crop_scale``).
        model_name: for error messages.

    Returns:
        ``(crops, files_used)``: uint8 BGR crops and the files they came from (images without
        a face are skipped).

    Raises:
        CalibrationError: unreadable image, unknown kind, or no face in any image.
    """
    if kind not in FACE_CROPPERS:
        raise CalibrationError(model_name, f"unknown face crop kind {kind!r} (valid: {', '.join(FACE_CROPPERS)})")
    if kind == "liveness" and crop_scale is None:
        raise CalibrationError(model_name, "liveness crops need the card's crop_scale")
    crop = FACE_CROPPERS[kind]
    crops, used = [], []
    for f in (Path(p) for p in files):
        img = read_image(f, model_name)
        face = largest_face(img, detector)
        if face is None and kind == "aligned":
            face = _padded_face(img, detector)
        if face is None or (kind == "aligned" and face.keypoints is None):
            continue
        crops.append(crop(img, face, crop_scale))
        used.append(f)
    if not crops:
        raise CalibrationError(model_name, f"the face detector found no face in any of the {len(files)} image(s)")
    return crops, used


def with_grey_copies(crops: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``crops`` followed by a grey copy of each (BT.601 luma in all three channels, as a grey
    image loads).

    Face embedders meet grey faces (IR cameras; the LFW crops the gate scores), and ranges
    calibrated on colour faces alone fit them worse: the rpi5 build's full-integer SFace has LFW
    mean cosine vs float 0.968 without them, 0.985 with them (gate: 0.98; docs/quantisation.md).
    """
    import cv2

    grey = [cv2.cvtColor(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for c in crops]
    return list(crops) + grey


def crops_reader(crops: Sequence[np.ndarray], spec: InputSpec, files: Sequence[Path], *,
                 input_name: str | None = None, model_name: str = "model") -> FeedReader:
    """A reader over already-cropped faces, preprocessed with the card's input spec."""
    name = input_name or spec.name
    items = list(crops)
    w, h = spec.size

    def make(i: int) -> dict[str, np.ndarray]:
        x, _ = prepare(items[i], spec, size=None if w and h else (items[i].shape[1], items[i].shape[0]))
        return {name: x}

    return FeedReader(len(items), make, files=files, model_name=model_name)
