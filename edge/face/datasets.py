"""Labelled face pairs for measuring verification: pair CSV files and the aligned-LFW folder.

- A pair CSV has a header ``file_a,file_b,same`` (``same`` is 1/0 or true/false); files are
  relative to an image directory (``../shared/data/faces/deepface_pairs.csv``).
- The LFW folder (``lfw100_aligned/<person>/<image>``) holds 100 people × 2 tight 100×100 grey
  crops: every same-person pair is genuine (100), every cross-person pair an impostor (19,800).
  Its crops are tighter than the ArcFace template, so they are re-aligned: YuNet finds the 5
  landmarks on the crop upscaled ×2 (all 200 found here); if it ever finds none, one fixed
  similarity transform from the mean landmarks below is used.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np

from edge.face.align import align_face
from edge.imageio import IMAGE_SUFFIXES, load_image

__all__ = ["Pair", "PairsFormatError", "read_pairs_csv", "lfw_pairs", "align_lfw_crop", "LFW_MEAN_LANDMARKS",
           "LFW_UPSCALE", "pair_scores"]

#: Upscale factor of the LFW crops before detection (YuNet misses faces filling a 100-px image).
LFW_UPSCALE = 2
#: Mean YuNet landmarks on the 100×100 LFW crops (FaceDetectorYN order), measured on all 200.
LFW_MEAN_LANDMARKS = np.array([[29.9, 30.3], [73.9, 30.3], [49.0, 58.0], [28.2, 76.7], [71.0, 77.3]], np.float32)
_TRUE = {"1", "true", "yes", "same"}
_FALSE = {"0", "false", "no", "different"}


class PairsFormatError(ValueError):
    """A pair list is malformed (the message names the file and line)."""


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool


def read_pairs_csv(path: str | Path) -> tuple[Pair, ...]:
    """Read ``file_a,file_b,same`` rows.

    Raises:
        FileNotFoundError: no such file.
        PairsFormatError: missing columns or a ``same`` value that is not 0/1/true/false.
    """
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"file_a", "file_b", "same"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise PairsFormatError(f"{p}: header must contain file_a,file_b,same; got {reader.fieldnames}")
        out = []
        for line, row in enumerate(reader, start=2):
            v = (row["same"] or "").strip().lower()
            if v not in _TRUE | _FALSE:
                raise PairsFormatError(f"{p}:{line}: 'same' must be 1/0 or true/false, got {row['same']!r}")
            if not row["file_a"] or not row["file_b"]:
                raise PairsFormatError(f"{p}:{line}: empty file name")
            out.append(Pair(row["file_a"].strip(), row["file_b"].strip(), v in _TRUE))
    if not out:
        raise PairsFormatError(f"{p}: no pairs")
    return tuple(out)


def lfw_pairs(root: str | Path) -> tuple[list[Path], list[tuple[int, int, bool]]]:
    """All pairs of an ``<person>/<image>`` folder: ``(files, [(i, j, same), ...])``.

    Raises:
        FileNotFoundError: ``root`` is not a directory or holds no images.
    """
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"LFW folder not found: {r}")
    files = sorted(p for p in r.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no <person>/<image> files under {r}")
    who = [p.parent.name for p in files]
    pairs = [(i, j, who[i] == who[j]) for i, j in combinations(range(len(files)), 2)]
    return files, pairs


def align_lfw_crop(image: np.ndarray, detector=None) -> tuple[np.ndarray, bool]:
    """Align a tight LFW crop to the ArcFace template.

    Args:
        image: the ``uint8`` crop (BGR or grey).
        detector: a 5-landmark face detector (YuNet); ``None`` uses the fixed transform.

    Returns:
        ``(aligned 112×112×3 BGR, detected)`` — ``detected`` is False when the fixed
        transform was used.
    """
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if detector is not None:
        big = cv2.resize(img, None, fx=LFW_UPSCALE, fy=LFW_UPSCALE, interpolation=cv2.INTER_CUBIC)
        d = detector.detect(big)
        if len(d.score) and d.keypoints is not None:
            i = int(np.argmax((d.xyxy[:, 2] - d.xyxy[:, 0]) * (d.xyxy[:, 3] - d.xyxy[:, 1])))
            return align_face(img, np.asarray(d.keypoints[i], np.float64) / LFW_UPSCALE), True
    scale = img.shape[1] / 100.0
    return align_face(img, LFW_MEAN_LANDMARKS * scale), False


def pair_scores(embeddings, pairs, *, missing_score: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of ``pairs`` ``(i, j, same)`` over ``embeddings`` (vectors or ``None``).

    A pair with a missing embedding (no face found) scores ``missing_score`` — a rejection.
    """
    vecs = [None if e is None else np.asarray(getattr(e, "vector", e), np.float32) for e in embeddings]
    scores = np.empty(len(pairs), np.float64)
    labels = np.empty(len(pairs), bool)
    for n, (i, j, same) in enumerate(pairs):
        a, b = vecs[i], vecs[j]
        scores[n] = missing_score if a is None or b is None else float(np.dot(a, b))
        labels[n] = bool(same)
    return scores, labels


def load_images(paths) -> list[np.ndarray]:
    return [load_image(p) for p in paths]


def embed_files(pipeline, files, *, progress=None) -> tuple[list, list[str]]:
    """Embed the largest face of each image file (no liveness).

    Returns:
        ``(embeddings, no_face)``: one :class:`FaceEmbedding` or ``None`` per file, and the
        files in which no face was found.

    Raises:
        FileNotFoundError: a file is missing (checked for all files before any work).
        ImageLoadError: a file cannot be decoded.
    """
    paths = [Path(f) for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image file(s) of the pair list do not exist: "
                                f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    out, no_face = [], []
    for n, p in enumerate(paths):
        face = pipeline.analyze(load_image(p), max_faces=1, check_liveness=False).largest
        out.append(None if face is None else face.embedding)
        if face is None:
            no_face.append(str(p))
        if progress is not None:
            progress(n + 1, len(paths))
    return out, no_face


def embed_lfw(embedder, detector, root) -> tuple[list, list[tuple[int, int, bool]], int]:
    """Align and embed every LFW crop: ``(embeddings, pairs, detected_count)``."""
    files, pairs = lfw_pairs(root)
    crops, found = [], 0
    for f in files:
        crop, ok = align_lfw_crop(load_image(f), detector)
        crops.append(crop)
        found += ok
    return list(embedder.embed(np.stack(crops))), pairs, found


def evaluate_pair_list(pipeline, pairs_csv, images_dir, fars=(1e-2, 1e-3), *, progress=None) -> dict:
    """Verification figures of ``pipeline``'s embedder on a pair CSV, JSON-ready.

    Each distinct image is embedded once (its largest face); a pair with an image without a
    face scores −1 (a rejection) and the image is listed under ``no_face``.
    """
    from edge.face.verification import evaluate_scores

    pairs = read_pairs_csv(pairs_csv)
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    index = {n: i for i, n in enumerate(names)}
    embs, no_face = embed_files(pipeline, [Path(images_dir) / n for n in names], progress=progress)
    scores, labels = pair_scores(embs, [(index[p.a], index[p.b], p.same) for p in pairs])
    report = evaluate_scores(scores, labels, fars).to_dict()
    report["images"] = len(names)
    report["no_face"] = [Path(f).name for f in no_face]
    return {"report": report, "scores": scores, "labels": labels}
