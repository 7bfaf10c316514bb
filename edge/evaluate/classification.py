"""Labelled classification data and top-1 / top-5 accuracy. Pure numpy + OpenCV.

A labelled set is either

- a CSV with a header holding ``file`` and ``class_index`` (the ImageNet layout of
  ``imagenet_samples/labels.csv``: ``class_index`` 0..999 in the sorted-synset order) or ``file``
  and ``label`` (a class name of the model's label file), files relative to the CSV's folder; or
- a folder of class folders (``<class name>/<image>``), each folder named after a label.

Class indices are mapped to the model's outputs by :func:`output_index`: a 1001-output model has a
background class at 0 (the TF-slim/Coral convention), so ImageNet class ``i`` is output ``i + 1``.

Example:
    >>> items = load_labelled("imagenet_samples/labels.csv", labels)   # doctest: +SKIP
    >>> result = evaluate_scores(scores, [it.target for it in items])    # doctest: +SKIP
    >>> result.top1                                                     # doctest: +SKIP
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.imageio import IMAGE_SUFFIXES

__all__ = ["LabelledImage", "LabelledDataError", "load_labelled", "output_index", "ClassificationResult",
           "evaluate_scores"]


class LabelledDataError(ValueError):
    """A labelled classification set is missing, malformed, or names a class the model lacks."""


@dataclass(frozen=True)
class LabelledImage:
    """One labelled image: its file and the model output index that is correct."""

    path: Path
    target: int


def output_index(class_index: int, num_outputs: int) -> int:
    """The output of a ``num_outputs``-way ImageNet model for ImageNet ``class_index`` (0..999)."""
    offset = num_outputs - 1000 if num_outputs in (1000, 1001) else 0
    return class_index + offset


def _by_name(labels: Sequence[str] | None, source: str) -> dict[str, int]:
    if not labels:
        raise LabelledDataError(f"{source} gives class names, but the model has no label file to map them to")
    out: dict[str, int] = {}
    for i, name in enumerate(labels):
        out.setdefault(name.strip().lower(), i)
        for synonym in name.split(","):  # "tabby, tabby cat": each synonym names the class
            out.setdefault(synonym.strip().lower(), i)
    return out


def _lookup(name: str, table: dict[str, int], where: str) -> int:
    for key in (name.strip().lower(), name.strip().lower().replace("_", " ")):
        if key in table:
            return table[key]
    raise LabelledDataError(f"{where}: class {name!r} is not in the model's labels")


def _from_csv(path: Path, labels: Sequence[str] | None, num_outputs: int) -> list[LabelledImage]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelledDataError(f"cannot read labelled CSV {path}: {e}") from e
    if not rows or "file" not in rows[0] or not ({"class_index", "label"} & set(rows[0])):
        raise LabelledDataError(f"{path}: expected a header with 'file' and 'class_index' or 'label' columns")
    table = _by_name(labels, str(path)) if "class_index" not in rows[0] else {}
    items = []
    for n, row in enumerate(rows, start=2):
        f = path.parent / (row.get("file") or "")
        if not row.get("file") or not f.is_file():
            raise LabelledDataError(f"{path} line {n}: image {row.get('file')!r} not found beside the CSV")
        if "class_index" in row:
            try:
                target = output_index(int(row["class_index"]), num_outputs)
            except (TypeError, ValueError):
                raise LabelledDataError(f"{path} line {n}: class_index {row['class_index']!r} is not an integer") from None
        else:
            target = _lookup(row["label"] or "", table, f"{path} line {n}")
        if not 0 <= target < num_outputs:
            raise LabelledDataError(f"{path} line {n}: class {target} outside the model's {num_outputs} outputs")
        items.append(LabelledImage(f, target))
    return items


def _from_folders(root: Path, labels: Sequence[str] | None) -> list[LabelledImage]:
    table = _by_name(labels, f"labelled folder {root}")
    items = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        target = _lookup(d.name, table, f"folder {d}")
        items += [LabelledImage(f, target) for f in sorted(d.iterdir())
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    return items


def load_labelled(source: str | Path, labels: Sequence[str] | None, num_outputs: int) -> list[LabelledImage]:
    """Labelled images from a CSV file, a folder holding ``labels.csv``, or a folder of class folders.

    Raises:
        LabelledDataError: missing path, malformed CSV, unknown class, or no image.
    """
    p = Path(source)
    if p.is_dir() and (p / "labels.csv").is_file():
        p = p / "labels.csv"
    if p.is_file():
        items = _from_csv(p, labels, num_outputs)
    elif p.is_dir():
        items = _from_folders(p, labels)
    else:
        raise LabelledDataError(f"labelled data not found: {p} (expected a CSV, a folder with labels.csv, "
                                "or a folder of class folders)")
    if not items:
        raise LabelledDataError(f"{p} holds no labelled image")
    return items


@dataclass(frozen=True)
class ClassificationResult:
    images: int
    top1: float
    top5: float

    @property
    def resolution(self) -> float:
        """One image's share of the figures."""
        return 1.0 / self.images if self.images else float("nan")

    def to_dict(self) -> dict:
        return {"images": self.images, "top1": self.top1, "top5": self.top5, "resolution": self.resolution}


def evaluate_scores(scores: np.ndarray, targets: Sequence[int]) -> ClassificationResult:
    """Top-1 / top-5 accuracy of ``scores`` (N×C) against the correct output indices."""
    s = np.asarray(scores, np.float32)
    t = np.asarray(targets, np.int64)
    if s.ndim != 2 or len(s) != len(t):
        raise ValueError(f"scores must be N×C with N = {len(t)} targets, got shape {s.shape}")
    if not len(t):
        return ClassificationResult(0, float("nan"), float("nan"))
    top5 = np.argsort(-s, axis=1, kind="stable")[:, :5]
    return ClassificationResult(int(len(t)), float(np.mean(top5[:, 0] == t)), float(np.mean((top5 == t[:, None]).any(1))))
