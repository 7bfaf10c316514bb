"""Model roles and which real images calibrate and evaluate each one.

The policy, in one place (every folder is relative to the data directory, ``edge.paths.data_dir()``):

Three disjoint splits per role: **calibration** (quantiser ranges), **selection** (everything
the build chooses on: calibration statistic, layers kept in float, the gate verdict, the face
threshold) and **report** (the figures the bundle's report states; nothing is chosen on them).
Files are split by a salted hash of their name (:func:`export.quant.calibration.split_three`), so
adding a file never moves another.

==============  ===============================  ==========================  ===============================
role            calibration                      selection                   report
==============  ===============================  ==========================  ===============================
classifier      imagenet_samples, 30 %           imagenet_samples, 30 %      imagenet_samples, 40 % (labelled)
detector        coco128, 30 %                    coco128, 30 % (boxes)       coco128, 40 % (boxes)
face detector   deepface photos, 50 %            deepface photos, 20 %       deepface 30 % + antispoof + samples
face embedder   deepface photos (aligned)        LFW, half of the people     LFW, the other half of the people
liveness        deepface photos, 50 %            deepface photos, 50 %       antispoof (labelled) + samples
==============  ===============================  ==========================  ===============================

The embedder's LFW people are split by person (the folder name), so the threshold derived on the
selection pairs is checked on pairs of other people. The user's data (``--data``) replaces a
role's row, split the same way (:mod:`export.build.user_inputs`; the embedder's pairs by person,
:mod:`export.gates.face_pairs`). ``labels.csv`` of ``imagenet_samples`` gives
the classifier's labelled top-1 / top-5 on the selection and report splits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from edge import paths
from edge.cards import ModelCard
from export.quant.calibration import (CalibrationError, with_grey_copies, FeedReader, ImageFolderReader, calibration_hash, crops_reader,
                                      face_crops, list_images, split_files, split_three)

__all__ = ["Role", "RoleData", "role_of", "role_data", "calibration_reader", "LABELLED_SAMPLES",
           "LIVENESS_SAMPLES", "FACE_SAMPLES", "COCO_DIR", "DEEPFACE_DIR", "LFW_DIR", "ANTISPOOF_DIR",
           "SAMPLES_DIR", "IMAGENET_DIR", "default_face_detector", "face_detector_size", "face_detector_input",
           "split_record"]

COCO_DIR = "coco128"
IMAGENET_DIR = "imagenet_samples"
DEEPFACE_DIR = "faces/deepface"
LFW_DIR = "faces/lfw100_aligned"
ANTISPOOF_DIR = "antispoof"
SAMPLES_DIR = "samples"
#: (calibration, selection) shares of the 61 deepface photos for the face detector.
FACE_DETECTOR_FRACTIONS = (0.5, 0.2)
#: Sample photos with faces, used as extra evaluation images for the face roles.
FACE_SAMPLES = ("face.jpg", "grace_hopper.bmp", "group_t1.jpg", "zidane.jpg")
#: Sample images whose ImageNet class is known (checked by eye; kept for tests and demos, the gate
#: uses ``imagenet_samples/labels.csv``). owl.jpg, pets.jpg, sunflower.bmp are left out.
LABELLED_SAMPLES: dict[str, tuple[str, ...]] = {
    "bird.bmp": ("chickadee",),
    "cat.bmp": ("tabby, tabby cat", "tiger cat", "Egyptian cat"),
    "dragonfly.bmp": ("dragonfly, darning needle, devil's darning needle, sewing needle, snake feeder, "
                      "snake doctor, mosquito hawk, skeeter hawk",),
    "hot_dog.jpg": ("hotdog, hot dog, red hot",),
    "parrot.jpg": ("macaw",),
    "grace_hopper.bmp": ("military uniform", "bow tie, bow-tie, bowtie"),
}
#: The antispoof samples: True = live face, False = spoof (a photo shown to the camera).
LIVENESS_SAMPLES: dict[str, bool] = {"image_T1.jpg": True, "image_T2.jpg": True,
                                     "image_F1.jpg": False, "image_F2.jpg": False}


class Role(str, enum.Enum):
    """What a model does on the device; each role has its own gate."""

    CLASSIFIER = "classifier"
    DETECTOR = "detector"
    FACE_DETECTOR = "face_detector"
    FACE_EMBEDDER = "face_embedder"
    LIVENESS = "liveness"


_TASK_ROLE = {"classification": Role.CLASSIFIER, "object_detection": Role.DETECTOR,
              "face_detection": Role.FACE_DETECTOR, "face_embedding": Role.FACE_EMBEDDER,
              "liveness": Role.LIVENESS}


def role_of(card: ModelCard) -> Role:
    """The role of a model card's task.

    Raises:
        ValueError: a task with no role (``other``).
    """
    try:
        return _TASK_ROLE[card.task]
    except KeyError:
        raise ValueError(f"card {card.name!r}: task {card.task!r} has no export role "
                         f"(roles exist for {', '.join(_TASK_ROLE)})") from None


@dataclass(frozen=True)
class RoleData:
    """The calibration, selection and report (``evaluation``) files of a role (disjoint).

    Attributes:
        evaluation: the report split (what the gate measures unless :meth:`selecting` is used).
        selection: the split choices are made on.
        labelled: labelled-classification source (CSV or folder, :mod:`edge.evaluate.classification`).
        pairs: the user's face pairs ``(file_a, file_b, same)`` of all splits (:mod:`export.gates.face_pairs`;
            each pair within one split); the embedder gate uses those of its split. Empty: the
            built-in LFW people, every pair of the split.
    """

    role: Role
    calibration: tuple[Path, ...]
    evaluation: tuple[Path, ...]
    note: str
    selection: tuple[Path, ...] = ()
    labelled: Path | None = None
    pairs: tuple[tuple[Path, Path, bool], ...] = ()

    def __post_init__(self) -> None:
        sides = {"calibration": set(self.calibration), "selection": set(self.selection),
                 "report": set(self.evaluation)}
        for a, b in (("calibration", "selection"), ("calibration", "report"), ("selection", "report")):
            overlap = sides[a] & sides[b]
            if overlap:  # a policy bug, never a user error
                raise AssertionError(f"{self.role.value}: {a} and {b} share {sorted(overlap)[:3]}")

    @property
    def calibration_hash(self) -> str:
        return calibration_hash(self.calibration)

    def selecting(self) -> "RoleData":
        """The same data with the selection split in the evaluation slot (for the choosing gate).

        Raises:
            ValueError: this role data has no selection split.
        """
        if not self.selection:
            raise ValueError(f"{self.role.value}: no selection split")
        return RoleData(self.role, self.calibration, self.selection, f"selection split of: {self.note}",
                        labelled=self.labelled, pairs=self.pairs)

    def record(self) -> dict:
        """JSON-ready description of the three splits: counts and hashes (:func:`split_record`)."""
        return {"note": self.note, "calibration": split_record(self.calibration),
                "selection": split_record(self.selection), "report": split_record(self.evaluation)}


def split_record(files) -> dict:
    """``{"files": n, "sha256": calibration_hash, "first": name}`` of one split (empty: zeros)."""
    files = tuple(files)
    if not files:
        return {"files": 0, "sha256": None}
    return {"files": len(files), "sha256": calibration_hash(files), "first": min(Path(f).name for f in files)}


def _data_root(data_dir: str | Path | None, model_name: str) -> Path:
    root = Path(data_dir) if data_dir is not None else paths.data_dir()
    if root is None or not root.is_dir():
        raise CalibrationError(model_name, f"no data directory ({root}); set EDGE_DATA_DIR")
    return root


def role_data(role: Role | str, data_dir: str | Path | None = None, *, model_name: str = "model") -> RoleData:
    """The files that calibrate, select and report ``role`` (see the module table).

    Raises:
        CalibrationError: a folder is missing or empty.
    """
    role = Role(role)
    root = _data_root(data_dir, model_name)
    if role is Role.CLASSIFIER:
        folder = root / IMAGENET_DIR
        csv = folder / "labels.csv"
        if not csv.is_file():
            raise CalibrationError(model_name, f"labelled classification data missing: {csv}")
        s3 = split_three(list_images(folder, model_name))
        return RoleData(role, s3.calibration, s3.report,
                        f"{IMAGENET_DIR} (labelled, one image per class) split by name hash: "
                        f"{len(s3.calibration)} calibration / {len(s3.selection)} selection / {len(s3.report)} report",
                        selection=s3.selection, labelled=csv)
    if role is Role.DETECTOR:
        s3 = split_three(list_images(root / COCO_DIR / "images", model_name))
        return RoleData(role, s3.calibration, s3.report,
                        f"coco128 split by name hash: {len(s3.calibration)} calibration / {len(s3.selection)} "
                        f"selection / {len(s3.report)} report images", selection=s3.selection)
    faces = list_images(root / DEEPFACE_DIR, model_name)
    samples = tuple(root / SAMPLES_DIR / n for n in FACE_SAMPLES if (root / SAMPLES_DIR / n).is_file())
    if role is Role.FACE_DETECTOR:
        s3 = split_three(faces, FACE_DETECTOR_FRACTIONS)  # only 61 photos: calibration needs about half
        spoof = tuple(list_images(root / ANTISPOOF_DIR, model_name))
        return RoleData(role, s3.calibration, s3.report + spoof + samples,
                        f"deepface photos split by name hash: {len(s3.calibration)} calibration / "
                        f"{len(s3.selection)} selection / {len(s3.report)} report, + {len(spoof)} antispoof + "
                        f"{len(samples)} samples in report", selection=s3.selection)
    if role is Role.FACE_EMBEDDER:
        lfw = list_images(root / LFW_DIR, model_name, recursive=True)
        people = split_files(lfw, 0.5, key=lambda p: p.parent.name)
        return RoleData(role, tuple(faces), people.evaluation,
                        f"calibration: {len(faces)} deepface photos (aligned crops); selection: "
                        f"{len(people.calibration)} LFW crops, report: {len(people.evaluation)} LFW crops of "
                        "other people (split by person)", selection=people.calibration)
    spoof = tuple(root / ANTISPOOF_DIR / n for n in LIVENESS_SAMPLES)
    missing = [str(p) for p in spoof if not p.is_file()]
    if missing:
        raise CalibrationError(model_name, f"liveness samples missing: {', '.join(missing)}")
    halves = split_files(faces)
    return RoleData(role, halves.calibration, spoof + samples,
                    f"deepface photos split by name hash: {len(halves.calibration)} calibration / "
                    f"{len(halves.evaluation)} selection (enlarged face crops); report: {len(spoof)} antispoof + "
                    f"{len(samples)} samples", selection=halves.evaluation)


#: Input size a dynamic-shape face detector is calibrated at (YuNet's fixed export).
FACE_DETECTOR_CALIBRATION_SIZE = (640, 640)


def face_detector_size(card: ModelCard) -> tuple[int, int]:
    """(width, height) a face detector sees a whole photo at: its fixed input, or for a graph of
    free size :data:`FACE_DETECTOR_CALIBRATION_SIZE` (as the device fits whole frames)."""
    w, h = card.inputs[0].size
    return (w, h) if w and h else FACE_DETECTOR_CALIBRATION_SIZE


def face_detector_input(image, card: ModelCard):
    """YuNet's own preprocessing (``YuNetDetector.preprocess``): letterbox to the top-left
    corner with zero padding, BGR 0–255, NCHW float32. The card's ``resize`` does not say this."""
    import numpy as np

    from edge.vision.face_detectors import check_bgr_image, letterbox

    padded, _, _ = letterbox(check_bgr_image(image), face_detector_size(card), center=False)
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)


def _face_detector_reader(files, card: ModelCard, input_name: str) -> FeedReader:
    from export.quant.calibration import read_image

    paths = list(files)
    return FeedReader(len(paths), lambda i: {input_name: face_detector_input(read_image(paths[i], card.name), card)},
                      files=paths, model_name=card.name)


def default_face_detector(threads: int | None = 1):
    """The float YuNet that makes face crops for calibration and evaluation."""
    from edge.vision.face_detectors import create_face_detector

    return create_face_detector("yunet", threads=threads)


def calibration_reader(role: Role | str, card: ModelCard, data_dir: str | Path | None = None, *,
                       max_images: int | None = None, face_detector=None, input_name: str | None = None,
                       data: RoleData | None = None) -> FeedReader:
    """A calibration reader for ``card``'s model, made from ``role``'s calibration files.

    Args:
        role: the model's role.
        card: its card (preprocessing; ``face_crop.crop_scale`` for liveness).
        data_dir: data directory (default ``edge.paths.data_dir()``).
        max_images: use at most this many calibration files (the first in sorted order).
        face_detector: detector making face crops (default: float YuNet).
        input_name: graph input name (default: the card's).
        data: the role's files (default: :func:`role_data`), e.g. the user's.

    Raises:
        CalibrationError: missing data, unreadable image, no face found.
    """
    role = Role(role)
    data = data or role_data(role, data_dir, model_name=card.name)
    files = data.calibration[:max_images] if max_images else data.calibration
    spec = card.inputs[0]
    if role in (Role.CLASSIFIER, Role.DETECTOR):
        return ImageFolderReader(files, spec, input_name=input_name, model_name=card.name)
    if role is Role.FACE_DETECTOR:
        return _face_detector_reader(files, card, input_name or spec.name)
    det = face_detector or default_face_detector()
    try:
        if role is Role.FACE_EMBEDDER:
            crops, used = face_crops(files, det, "aligned", model_name=card.name)
            crops, used = with_grey_copies(crops), used + used  # grey faces too (export.quant.calibration)
        else:
            crops, used = face_crops(files, det, "liveness", crop_scale=card.face_crop.crop_scale if card.face_crop else None,
                                     model_name=card.name)
    finally:
        if face_detector is None:
            det.close()
    return crops_reader(crops, spec, used, input_name=input_name, model_name=card.name)
