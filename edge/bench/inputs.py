"""Fixed, real benchmark inputs: sample images (or frames from a source) preprocessed by the model card.

Latency can depend on the data (a detector's post-processing, a runtime's denormal handling),
so every variant is timed on the same real images, cycled in a fixed order, and the report
records their names and a digest of the tensors so two runs can be checked to have used the
same inputs.

Example:
    >>> frames = load_frames(None, 4)                            # the default sample images
    >>> batch = prepare_inputs(get_card("yolox_nano_416"), frames)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import paths
from edge.errors import BenchError

__all__ = ["Frames", "PreparedInputs", "load_frames", "prepare_inputs", "DEFAULT_IMAGES", "DEFAULT_DYNAMIC_SIZE"]

#: Sample images (of ``<data>/samples``) used when no ``--inputs`` is given: faces and objects,
#: so the face and detection pipelines have work to do; taken in this order.
DEFAULT_IMAGES = ("grace_hopper.bmp", "zidane.jpg", "bus.jpg", "group_t1.jpg", "cat.bmp", "parrot.jpg",
                  "kite_and_cold.jpg", "face.jpg")
#: (width, height) fed to models whose input size is dynamic, unless ``--input-size`` says otherwise.
DEFAULT_DYNAMIC_SIZE = (640, 480)
#: How frames are fitted to that size when the card says "no resize" (run at the image's size).
DYNAMIC_RESIZE = "letterbox_topleft"


@dataclass(frozen=True)
class Frames:
    """BGR ``uint8`` images and where they came from."""

    images: tuple
    names: tuple
    source: str


@dataclass(frozen=True)
class PreparedInputs:
    """One stacked tensor per model input (``[n_images, *input_shape]``) and what they are."""

    tensors: tuple
    shapes: tuple
    sha256: str
    note: str = ""
    names: tuple = field(default_factory=tuple)


def load_frames(spec: str | None, count: int) -> Frames:
    """The first ``count`` frames of ``spec`` (any :func:`edge.sources.open_source` spec).

    ``None`` takes :data:`DEFAULT_IMAGES` from the data directory's ``samples/``.

    Raises:
        BenchError: no data directory, no images, or a source that yields no frame.
    """
    if count < 1:
        raise BenchError(f"--num-inputs must be at least 1, got {count}")
    if spec is None:
        d = paths.data_dir()
        if d is None or not (d / "samples").is_dir():
            raise BenchError("no sample images: set EDGE_DATA_DIR (default ../shared/data) or pass --inputs "
                             "an image, folder, video or camera")
        from edge.imageio import load_image

        files = [d / "samples" / n for n in DEFAULT_IMAGES if (d / "samples" / n).is_file()][:count]
        if not files:
            raise BenchError(f"none of the default images {', '.join(DEFAULT_IMAGES)} is in {d / 'samples'}")
        return Frames(tuple(load_image(f) for f in files), tuple(f.name for f in files), str(d / "samples"))
    from edge.sources import open_source

    images, names = [], []
    with open_source(spec) as source:
        for frame in source:
            images.append(frame.image)
            names.append(f"{Path(str(frame.source_id)).name}#{frame.index}")
            if len(images) >= count:
                break
    if not images:
        raise BenchError(f"the input source {spec!r} yielded no frame")
    return Frames(tuple(images), tuple(names), spec)


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def prepare_inputs(card, frames: Frames, input_size: tuple[int, int] | None = None) -> PreparedInputs | None:
    """Preprocess ``frames`` for every image input the card describes, as the card says.

    Args:
        card: the model's :class:`~edge.cards.ModelCard`; ``None`` returns ``None`` (the
            worker then feeds the raw images resized to the engine's input shape).
        frames: from :func:`load_frames`.
        input_size: (width, height) for inputs with dynamic spatial dims
            (default :data:`DEFAULT_DYNAMIC_SIZE`).
    """
    if card is None or not card.inputs:
        return None
    from edge.preprocess import prepare

    tensors, shapes = [], []
    for spec in card.inputs:
        size = None
        if None in spec.size:
            size = input_size or DEFAULT_DYNAMIC_SIZE
            if spec.resize == "none":  # "run at the image's size": one fixed size keeps the runs comparable
                spec = dataclasses.replace(spec, resize=DYNAMIC_RESIZE)
        elif input_size is not None and tuple(input_size) != tuple(spec.size):
            raise BenchError(f"{card.name}: --input-size {input_size[0]}x{input_size[1]} given, but input "
                             f"{spec.name!r} has a fixed size {spec.size[0]}x{spec.size[1]}")
        batch = np.concatenate([prepare(img, spec, size)[0] for img in frames.images])
        tensors.append(batch)
        shapes.append((1,) + tuple(batch.shape[1:]))
    note = f"dynamic size fed as {size[0]}x{size[1]} ({DYNAMIC_RESIZE} where the card says none)" if size else ""
    return PreparedInputs(tuple(tensors), tuple(shapes), _digest(tensors), note, tuple(s.name for s in card.inputs))
