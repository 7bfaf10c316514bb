"""Face embedders: an aligned 112×112 crop in, an L2-normalised :class:`FaceEmbedding` out.

The model card says how to feed the network (``inputs[0]``: layout, colour order, mean/std):
MobileFaceNet takes BGR 0–255 (its scaling is inside the graph), SFace takes RGB 0–255. Every
embedding carries the card's name and sha256, so templates can never be compared across models.
"""

from __future__ import annotations

from typing import Any, Mapping

from pathlib import Path

import cv2
import numpy as np

from edge.card_match import check_card_matches
from edge.errors import FaceError, ModelCardError
from edge.face.align import ALIGNED_SIZE
from edge.face.types import FaceEmbedding

__all__ = ["FaceEmbedder", "create_embedder", "optimized_card", "DEFAULT_EMBEDDER", "BUILTIN_EMBEDDERS",
           "OPTIMIZED_SUBDIR"]

#: The embedder used when none is named.
DEFAULT_EMBEDDER = "sface_2021dec_fp32"
#: Built-in embedder cards (registry names).
BUILTIN_EMBEDDERS = ("sface_2021dec_fp32", "sface_2021dec_int8bq", "mobilefacenet_128d")
#: Sub-directory of the cache where ``edge-export`` writes output-identical rewrites
#: (``export.onnx.graph_opt.optimized_embedder``: ``<name>_fastprelu.onnx`` + card).
OPTIMIZED_SUBDIR = "optimized"
#: Card name suffixes of output-identical rewrites, fastest first.
_REWRITE_SUFFIXES = ("_fastprelu",)


class FaceEmbedder:
    """Run a face-embedding model on aligned crops.

    Args:
        engine: a loaded :class:`~edge.engines.base.Engine` (one image input, one output used).
        card: the model's :class:`~edge.cards.ModelCard` (task ``face_embedding``).
        owns_engine: close the engine in :meth:`close`.

    Raises:
        ModelCardError: the card is not a face-embedding card or its input is not a
            3-channel 112×112 image.

    Example:
        >>> emb = create_embedder("sface_2021dec_fp32")                 # doctest: +SKIP
        >>> e = emb.embed(align_face(img, landmarks))                    # doctest: +SKIP
        >>> e.vector.shape, e.model_id
        ((128,), 'sface_2021dec_fp32')                                   # doctest: +SKIP
    """

    def __init__(self, engine, card, *, owns_engine: bool = False) -> None:
        if card.task != "face_embedding":
            raise ModelCardError(f"card {card.name!r} has task {card.task!r}, not 'face_embedding'")
        if not card.inputs:
            raise ModelCardError(f"card {card.name!r} describes no input")
        check_card_matches(card, engine)
        self.engine, self.card = engine, card
        self.spec = card.inputs[0]
        w, h = self.spec.size
        if (w, h) not in ((ALIGNED_SIZE, ALIGNED_SIZE), (None, None)):
            raise ModelCardError(f"card {card.name!r}: embedder input must be {ALIGNED_SIZE}×{ALIGNED_SIZE}, got {w}×{h}")
        if self.spec.color not in ("RGB", "BGR"):
            raise ModelCardError(f"card {card.name!r}: embedder colour must be RGB or BGR, got {self.spec.color}")
        names = {t.name for t in engine.inputs}
        self.input_name = self.spec.name if self.spec.name in names else engine.inputs[0].name
        out_names = [t.name for t in engine.outputs]
        want = card.outputs[0].name if card.outputs else out_names[0]
        self.output_name = want if want in out_names else out_names[0]
        batch = engine.inputs[0].shape[0] if engine.inputs[0].shape else None
        self.max_batch = None if batch is None else int(batch)
        self._mean = np.asarray(self.spec.mean, np.float32).reshape(1, 1, 1, 3)
        self._std = np.asarray(self.spec.std, np.float32).reshape(1, 1, 1, 3)
        self._owns = owns_engine

    @property
    def model_id(self) -> str:
        return self.card.name

    @property
    def model_sha256(self) -> str:
        return self.card.sha256

    @property
    def dim(self) -> int | None:
        shape = self.card.outputs[0].shape if self.card.outputs else ()
        return int(shape[-1]) if shape and isinstance(shape[-1], int) else None

    def to_tensor(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """``N×112×112×3`` uint8 BGR crops → the model's input tensor (float32)."""
        x = aligned_bgr.astype(np.float32)
        if self.spec.color == "RGB":
            x = x[..., ::-1]
        if np.any(self._mean) or np.any(self._std != 1.0):
            x = (x - self._mean) / self._std
        if self.spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def raw_features(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """Unnormalised features, ``N×D`` float32, of a batch of aligned crops."""
        batch = _check_batch(aligned_bgr)
        step = self.max_batch or len(batch)
        outs = []
        for i in range(0, len(batch), max(1, step)):
            tensor = self.to_tensor(batch[i:i + step])
            outs.append(np.asarray(self.engine.run({self.input_name: tensor})[self.output_name],
                                   np.float32).reshape(tensor.shape[0], -1))
        return np.concatenate(outs) if outs else np.zeros((0, self.dim or 0), np.float32)

    def embed(self, aligned_bgr: np.ndarray):
        """Embed one aligned crop (``112×112×3``) or a batch (``N×112×112×3``).

        Returns:
            A :class:`FaceEmbedding` for one crop, a tuple of them for a batch.

        Raises:
            FaceError: the crop is not ``uint8`` ``112×112×3``.
        """
        single = isinstance(aligned_bgr, np.ndarray) and aligned_bgr.ndim == 3
        feats = self.raw_features(aligned_bgr[None] if single else aligned_bgr)
        embs = tuple(FaceEmbedding.from_raw(f, self.card.name, self.card.sha256) for f in feats)
        return embs[0] if single else embs

    def close(self) -> None:
        if self._owns:
            self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_batch(x) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise FaceError(f"aligned faces must be uint8 arrays, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or x.shape[1:] != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
        if x.ndim == 4 and x.shape[3] == 3 and x.shape[1] == x.shape[2]:
            return np.stack([cv2.resize(c, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_LINEAR) for c in x])
        raise FaceError(f"aligned faces must be N×{ALIGNED_SIZE}×{ALIGNED_SIZE}×3 BGR, got shape {x.shape}")
    return x


def optimized_card(name: str, cache_dir: Path | None = None) -> Path | None:
    """The card of an output-identical rewrite of registry embedder ``name``, if one was built.

    ``edge-export`` (``export.onnx.graph_opt.optimized_embedder``) writes
    ``<cache>/optimized/<name>_fastprelu.{onnx,json}``; it is used only when its card says it was
    derived from the registry file with the registry's sha256 and its own file matches the card
    (a stale or altered copy is ignored, never half-used). Registry names only: a path or card
    given explicitly is always used as given.
    """
    from edge import paths, registry
    from edge.cards import load_card

    cards = registry.builtin_cards()
    src = cards.get(str(name))
    if src is None:
        return None
    base = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    for suffix in _REWRITE_SUFFIXES:
        card_path = base / OPTIMIZED_SUBDIR / f"{src.name}{suffix}.json"
        model_path = card_path.with_suffix(".onnx")
        if not (card_path.is_file() and model_path.is_file()):
            continue
        try:
            card = load_card(card_path)
        except (ModelCardError, OSError, ValueError):
            continue
        if (card.task == "face_embedding" and card.provenance.derived_from is not None
                and card.provenance.derived_from.sha256 == src.sha256
                and card.sha256 == registry.sha256_file(model_path)):
            return card_path
    return None


def create_embedder(name_or_path: str | Path = DEFAULT_EMBEDDER, *, backend: str | None = None,
                    threads: int | None = None, card=None,
                    engine_options: Mapping[str, Any] | None = None) -> FaceEmbedder:
    """Load a face embedder by registry name, model file, or card JSON (e.g. from a bundle).

    Args:
        name_or_path: ``"sface_2021dec_fp32"``, ``"sface_2021dec_int8bq"``, ``"mobilefacenet_128d"``,
            a ``.onnx``/``.tflite`` file with a sidecar card, or a card ``.json``.
        backend: engine backend (by file suffix when ``None``).
        threads: engine threads.
        card: a card to use instead of the one found for the file.
        engine_options: further ``load_engine`` options (a profile's providers).

    Raises:
        KeyError: unknown registry name.
        ModelNotFoundError / ModelIntegrityError: the file is missing or its sha256 differs
            from the card.
        ModelCardError: no card could be found for a bare model file.
    """
    from edge import registry
    from edge.engines import engine_kwargs, load_engine

    ref = registry.resolve(name_or_path)
    card = card or ref.card
    if card is None:
        raise ModelCardError(f"no model card found for {ref.path}: put a <file>.json card beside it")
    engine = load_engine(ref.path, backend, **engine_kwargs(threads, engine_options))
    try:
        return FaceEmbedder(engine, card, owns_engine=True)
    except Exception:
        engine.close()
        raise
