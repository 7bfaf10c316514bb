"""Read a labelled folder in YOLO format: ``images/`` and ``labels/`` side by side.

Every image ``images/<rel>/<stem>.<ext>`` has its labels in ``labels/<rel>/<stem>.txt``, one
object per line: ``class cx cy w h`` normalised to 0..1 (Ultralytics' convention). A line with
more values is a YOLO segmentation polygon ``class x1 y1 x2 y2 …``; its bounding box is used. An
image without a label file has no objects (also Ultralytics' convention).

Class names, when the folder has them, come from ``classes.txt`` / ``names.txt`` (one per line)
or the ``names:`` entry of ``data.yaml`` / ``dataset.yaml`` (list or ``id: name`` mapping).

Example:
    >>> ds = YoloDataset("coco128")                     # doctest: +SKIP
    >>> item = ds[0]; item.image_path.name, item.xyxy(640, 480).shape
    ('000000000009.jpg', (8, 4))
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import DatasetError
from edge.imageio import IMAGE_SUFFIXES

__all__ = ["YoloDataset", "YoloLabels", "read_label_file", "read_class_names"]

#: ``class cx cy w h``.
_BOX_FIELDS = 5
_NAME_FILES = ("classes.txt", "names.txt")
_YAML_FILES = ("data.yaml", "dataset.yaml", "data.yml")


@dataclass(frozen=True)
class YoloLabels:
    """One image and its objects (normalised centre-size boxes)."""

    image_path: Path
    class_id: np.ndarray  # int64 N
    cxcywh: np.ndarray  # float64 N×4, normalised

    def xyxy(self, width: int, height: int) -> np.ndarray:
        """Boxes in pixels of an image of ``width × height``."""
        c = self.cxcywh
        scale = np.array([width, height, width, height], np.float64)
        half = c[:, 2:] / 2
        return np.concatenate([c[:, :2] - half, c[:, :2] + half], axis=1) * scale


def read_label_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse one YOLO label file into ``(class ids, normalised cx cy w h)``.

    Raises:
        DatasetError: a line that is not ``class cx cy w h`` (or a polygon), naming file and line.
    """
    ids, boxes = [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read label file {path}: {e}") from e
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(float(parts[0]))
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected 'class cx cy w h' numbers, got {line.strip()!r}") from None
        if float(parts[0]) != cls or cls < 0:
            raise DatasetError(f"{path}:{lineno}: class must be a non-negative integer, got {parts[0]!r}")
        if len(parts) == _BOX_FIELDS:
            box = vals
        elif len(vals) >= 6 and len(vals) % 2 == 0:  # segmentation polygon: x1 y1 x2 y2 ...
            xs, ys = vals[0::2], vals[1::2]
            box = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
        else:
            raise DatasetError(f"{path}:{lineno}: expected 5 values 'class cx cy w h' (or a polygon), "
                               f"got {len(parts)}: {line.strip()!r}")
        if box[2] < 0 or box[3] < 0:
            raise DatasetError(f"{path}:{lineno}: negative width or height in {line.strip()!r}")
        ids.append(cls)
        boxes.append(box)
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def _yaml_names(text: str) -> list[str] | None:
    """The ``names`` of a YOLO ``data.yaml`` without a YAML library (list or mapping forms)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^names\s*:\s*(.*)$", line)
        if not m:
            continue
        rest = m.group(1).split("#")[0].strip()
        if rest.startswith("["):
            try:
                return [str(n) for n in ast.literal_eval(rest)]
            except (ValueError, SyntaxError):
                return None
        mapping: dict[int, str] = {}
        listed: list[str] = []
        for sub in lines[i + 1:]:
            if sub.strip() and not sub[:1].isspace():
                break
            mm = re.match(r"^\s+(\d+)\s*:\s*(.+?)\s*$", sub)
            ml = re.match(r"^\s+-\s*(.+?)\s*$", sub)
            if mm:
                mapping[int(mm.group(1))] = mm.group(2).strip("'\"")
            elif ml:
                listed.append(ml.group(1).strip("'\""))
        if mapping:
            return [mapping.get(k, str(k)) for k in range(max(mapping) + 1)]
        return listed or None
    return None


def read_class_names(root: Path) -> list[str] | None:
    """Class names stored with a dataset, or None when it has none."""
    for name in _NAME_FILES:
        p = root / name
        if p.is_file():
            return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for name in _YAML_FILES:
        p = root / name
        if p.is_file():
            return _yaml_names(p.read_text(encoding="utf-8"))
    return None


class YoloDataset:
    """A YOLO-format folder, images in sorted order.

    Args:
        root: the folder holding ``images/`` and ``labels/``.
        limit: use only the first ``limit`` images (sorted by path).

    Raises:
        DatasetError: ``root`` is not a folder, lacks ``images/`` or ``labels/``, or has no images.
    """

    def __init__(self, root: str | Path, *, limit: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder not found: {self.root}")
        self.images_dir, self.labels_dir = self.root / "images", self.root / "labels"
        missing = [d.name + "/" for d in (self.images_dir, self.labels_dir) if not d.is_dir()]
        if missing:
            raise DatasetError(f"{self.root} is not a YOLO-format dataset: it has no {' and no '.join(missing)} "
                               "folder (expected images/ with the pictures and labels/ with one "
                               "'class cx cy w h' .txt file per image)")
        paths = sorted(p for p in self.images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise DatasetError(f"no images in {self.images_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        if limit is not None:
            if limit <= 0:
                raise ValueError(f"limit must be positive, got {limit}")
            paths = paths[:limit]
        self.image_paths: list[Path] = paths
        self.names: list[str] | None = read_class_names(self.root)

    def label_path(self, image_path: Path) -> Path:
        rel = image_path.relative_to(self.images_dir)
        return (self.labels_dir / rel).with_suffix(".txt")

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> YoloLabels:
        img = self.image_paths[i]
        lp = self.label_path(img)
        if lp.is_file():
            ids, boxes = read_label_file(lp)
        else:
            ids, boxes = np.zeros(0, np.int64), np.zeros((0, 4))
        return YoloLabels(img, ids, boxes)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
