"""Does a card describe the model file it travels with?

A card is trusted for how to feed a model (dtype, shape, normalisation). When it contradicts the
file, the model still runs and answers confidently wrong (a ``float32`` card on a ``uint8``
MobileNet gives another top-1), so the contradiction is refused when the two meet: as soon as
the engine is loaded, before the first frame.

Checked per input (matched by name, else by position):

- shape: every dimension fixed in both must agree;
- dtype: an integer card input (raw pixels) needs an integer (quantised) model input, and a
  float model input needs a float card input;
- range: for a quantised model fed floats, the values the card's mean/std produce from 0..255
  pixels must fit the range the model's quantisation can represent (a card that normalises to
  0..255 for a model that represents -1..1 is wrong, whatever its dtype says).
"""

from __future__ import annotations

import numpy as np

from edge.cards import InputSpec, ModelCard
from edge.engines.base import Engine, TensorInfo
from edge.errors import ModelCardError

#: A card's float range may exceed what the model represents by this factor (rounding, clipping
#: of rare extreme pixels) before it is called a contradiction.
RANGE_SLACK = 1.5
_INTEGER_DTYPES = ("uint8", "int8")


def _pairs(card: ModelCard, engine: Engine) -> list[tuple[InputSpec, TensorInfo]]:
    by_name = {t.name: t for t in engine.inputs}
    if all(s.name in by_name for s in card.inputs):
        return [(s, by_name[s.name]) for s in card.inputs]
    if len(card.inputs) == len(engine.inputs):
        return list(zip(card.inputs, engine.inputs))
    return []  # the engine's own feed check names the inputs it misses


def _float_range(spec: InputSpec) -> tuple[float, float]:
    lows = [(0.0 - m) / s for m, s in zip(spec.mean, spec.std)]
    highs = [(255.0 - m) / s for m, s in zip(spec.mean, spec.std)]
    return min(lows + highs), max(lows + highs)


def _quantised_range(tensor: TensorInfo) -> tuple[float, float]:
    scale, zp = tensor.quantization
    storage = tensor.storage if tensor.storage is not None else tensor.dtype
    lo_int, hi_int = (int(np.iinfo(storage).min), int(np.iinfo(storage).max)) if storage.kind in "iu" else (0, 255)
    return (lo_int - zp) * scale, (hi_int - zp) * scale


def check_card_matches(card: ModelCard, engine: Engine, where: str | None = None) -> None:
    """Raise :class:`~edge.errors.ModelCardError` when ``card`` contradicts the loaded model.

    Args:
        card: the card the model was loaded with.
        engine: the loaded model.
        where: how to name the card in the error (default: ``card <name>``).
    """
    name = where or f"card {card.name!r} (model file {card.file})"
    for spec, tensor in _pairs(card, engine):
        field = f"{name} input {spec.name!r}"
        fixed = [(c, m) for c, m in zip(spec.shape, tensor.shape) if isinstance(c, int) and isinstance(m, int)]
        if len(spec.shape) != len(tensor.shape) or any(c != m for c, m in fixed):
            raise ModelCardError(f"{field}: shape {list(spec.shape)} contradicts the model's "
                                 f"{[d if d is not None else '?' for d in tensor.shape]} ({engine.backend})")
        if engine.backend == "opencv":
            continue  # OpenCV's DNN reports neither dtypes nor (without the card) shapes
        quantised = tensor.quantization is not None and tensor.quantization[0] > 0
        model_int = quantised or tensor.dtype.kind in "iu"
        if spec.dtype in _INTEGER_DTYPES and not model_int:
            raise ModelCardError(f"{field}: dtype {spec.dtype} (raw pixels) but the model's input is "
                                 f"{tensor.dtype} and not quantised; expected dtype float32 with the "
                                 f"model's mean/std")
        if spec.dtype not in _INTEGER_DTYPES and quantised:
            lo, hi = _float_range(spec)
            q_lo, q_hi = _quantised_range(tensor)
            span, q_span = hi - lo, q_hi - q_lo
            if span > RANGE_SLACK * q_span or lo < q_lo - RANGE_SLACK * q_span or hi > q_hi + RANGE_SLACK * q_span:
                raise ModelCardError(
                    f"{field}: dtype {spec.dtype} with mean {list(spec.mean)} / std {list(spec.std)} gives "
                    f"values in [{lo:.3g}, {hi:.3g}], but the model's input is quantised (scale "
                    f"{tensor.quantization[0]:.6g}, zero point {tensor.quantization[1]}) and represents "
                    f"[{q_lo:.3g}, {q_hi:.3g}]; for raw pixels the card's dtype should be uint8")
