"""The currencies that cross module boundaries: :class:`Frame` and :class:`Detections`.

Both are frozen. Functions that change them return new objects (``dataclasses.replace``) and
never write into the caller's arrays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Frame", "Detections"]


@dataclass(frozen=True)
class Frame:
    """One image from a source.

    Attributes:
        image: ``uint8`` array, ``H×W×3`` in **BGR** order (OpenCV's convention), or ``H×W`` for
            a single-channel (grayscale or IR) source. Never float. Read-only (a view of the
            source's array): copy it to draw on it.
        timestamp: seconds, ``time.monotonic()`` when captured (or the video position for files).
        index: 0-based position of the frame in its source.
        source_id: a string naming the source (a path, a device, a URL).

    Example:
        >>> f = Frame(np.zeros((2, 3, 3), np.uint8), 0.0, 0, "synthetic")
        >>> f.width, f.height
        (3, 2)
    """

    image: np.ndarray
    timestamp: float
    index: int
    source_id: str
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray):
            raise TypeError(f"Frame.image must be a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise ValueError(f"Frame.image must be uint8, got {img.dtype}")
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise ValueError(f"Frame.image must be H×W or H×W×3, got shape {img.shape}")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"Frame.image is empty: shape {img.shape}")
        if img.flags.writeable:  # a read-only view: consumers share one frame; the source keeps its buffer
            view = img.view()
            view.setflags(write=False)
            object.__setattr__(self, "image", view)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def is_gray(self) -> bool:
        return self.image.ndim == 2 or self.image.shape[2] == 1


def _as(arr, dtype, name: str, shape_tail: tuple[int, ...], n: int | None) -> np.ndarray:
    a = np.asarray(arr, dtype=dtype)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        want = "×".join(["N", *map(str, shape_tail)])
        raise ValueError(f"Detections.{name} must have shape {want}, got {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"Detections.{name} has {a.shape[0]} rows, xyxy has {n}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Detections:
    """Detections of one frame as parallel arrays (supervision-style).

    Attributes:
        xyxy: ``float32`` ``N×4`` boxes in source-frame pixels (x1, y1, x2, y2).
        score: ``float32`` ``N`` confidences in [0, 1].
        class_id: ``int32`` ``N`` class indices into the model card's labels.
        tracker_id: optional ``int64`` ``N`` track ids.
        keypoints: optional ``float32`` ``N×K×2`` points in source-frame pixels.

    Arrays are copied and made read-only, so a ``Detections`` never aliases a caller's buffer.
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = _as(np.array(self.xyxy, np.float32, copy=True).reshape(-1, 4)
                   if np.size(self.xyxy) == 0 else np.array(self.xyxy, np.float32, copy=True),
                   np.float32, "xyxy", (4,), None)
        n = xyxy.shape[0]
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", _as(np.array(self.score, np.float32, copy=True).reshape(-1),
                                              np.float32, "score", (), n))
        object.__setattr__(self, "class_id", _as(np.array(self.class_id, np.int32, copy=True).reshape(-1),
                                                 np.int32, "class_id", (), n))
        if self.tracker_id is not None:
            object.__setattr__(self, "tracker_id", _as(np.array(self.tracker_id, np.int64, copy=True).reshape(-1),
                                                       np.int64, "tracker_id", (), n))
        if self.keypoints is not None:
            kp = np.array(self.keypoints, np.float32, copy=True)
            if kp.ndim != 3 or kp.shape[2] != 2:
                raise ValueError(f"Detections.keypoints must have shape N×K×2, got {kp.shape}")
            object.__setattr__(self, "keypoints", _as(kp, np.float32, "keypoints", kp.shape[1:], n))

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index) -> "Detections":
        """Select rows with an int, slice, index array or boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index], self.score[index], self.class_id[index],
            None if self.tracker_id is None else self.tracker_id[index],
            None if self.keypoints is None else self.keypoints[index],
        )

    def replace(self, **changes) -> "Detections":
        """Return a copy with some fields replaced (the original is untouched)."""
        return dataclasses.replace(self, **changes)
