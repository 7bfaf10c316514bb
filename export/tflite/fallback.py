"""Which TFLite layers quantise badly: the ranker of the full-integer fallback.

:func:`rank_layers` runs the float and the full-integer model on calibration samples with every
intermediate tensor preserved, dequantises the integer tensors and measures, per operator
output, the error the operator *adds*: its relative RMS error against the float tensor minus
the largest error already present in its inputs (error accumulates with depth, so the raw error
would always blame the last layers). The search every int8 path shares
(:func:`export.quant.float_search.grow_float_set`) then keeps the worst operators in float —
1, then 2, 4 … more per round, ranking the current variant afresh each round — and the build
re-quantises with the same calibration statistics, until the gate accepts a variant or a limit
is reached.

Example:
    >>> ranking = rank_layers("m_fp32.tflite", "m_int8.tflite", samples)           # doctest: +SKIP
    >>> [r.output for r in ranking[:3]]                                              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["LayerError", "rank_layers"]

#: Samples used for ranking (the ranking is stable after a few).
RANK_SAMPLES = 8
#: Operators the quantiser inserts itself; they cannot be "kept in float". Every other operator is
#: ranked, data movers included: a TRANSPOSE after a float CONCATENATION quantises the model's
#: output again (YOLOX's class probabilities and box offsets in one int8 range) and must be named.
_CONVERSION_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class LayerError:
    """Quantisation error an operator adds (relative RMS, averaged over samples)."""

    index: int
    op: str
    output: str
    error: float  # relative RMS error of its output
    added: float  # error minus the worst error of its inputs


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    return it


def _tensor_values(it, feeds: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    for d, x in zip(it.get_input_details(), feeds):
        q = d.get("quantization", (0.0, 0))
        if d["dtype"] != np.float32 and q[0]:
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / q[0] + q[1]), info.min, info.max).astype(d["dtype"])
        it.set_tensor(d["index"], x.astype(d["dtype"], copy=False))
    it.invoke()
    out = {}
    for d in it.get_tensor_details():
        try:
            v = it.get_tensor(d["index"])
        except ValueError:  # tensors without data (e.g. optional inputs)
            continue
        scale, zp = d.get("quantization", (0.0, 0))
        if np.issubdtype(v.dtype, np.integer) and scale:
            v = (v.astype(np.float32) - zp) * scale
        elif not np.issubdtype(v.dtype, np.floating):
            continue
        out[d["name"]] = v.astype(np.float32, copy=False)
    return out


def rank_layers(float_tflite: str | Path, int8_tflite: str | Path, samples: Sequence[dict]) -> list[LayerError]:
    """Operators of the integer model, worst added quantisation error first.

    Args:
        float_tflite / int8_tflite: the same model before and after full-integer quantisation
            (tensor names are shared: ai-edge-quantizer keeps them).
        samples: calibration feeds (``{input name: float array}``), the first few are used.
    """
    from export.tflite.flatbuffer import list_ops

    ops = list_ops(int8_tflite)
    f_it, q_it = _interpreter(Path(float_tflite)), _interpreter(Path(int8_tflite))
    errors: dict[str, list[float]] = {}
    for feed in list(samples)[:RANK_SAMPLES]:
        xs = [np.asarray(v, np.float32) for v in feed.values()]
        fv, qv = _tensor_values(f_it, xs), _tensor_values(q_it, xs)
        for name, ref in fv.items():
            got = qv.get(name)
            if got is None or got.shape != ref.shape:
                continue
            denom = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))) or 1.0
            errors.setdefault(name, []).append(float(np.sqrt(np.mean((got - ref).astype(np.float64) ** 2))) / denom)
    mean_err = {k: float(np.mean(v)) for k, v in errors.items()}
    # Inputs of each op, by name, in the integer model.
    producers_inputs = _op_input_names(int8_tflite)
    ranked = []
    for op in ops:
        if op.op in _CONVERSION_OPS or op.output not in mean_err:
            continue
        before = max((mean_err.get(n, 0.0) for n in producers_inputs[op.index]), default=0.0)
        ranked.append(LayerError(op.index, op.op, op.output, mean_err[op.output], mean_err[op.output] - before))
    ranked.sort(key=lambda r: -r.added)
    return ranked


def _op_input_names(path: str | Path) -> dict[int, list[str]]:
    from export.tflite.flatbuffer import _name, _read

    model = _read(Path(path).read_bytes())
    sg = model.subgraphs[0]
    return {i: [_name(sg.tensors[t]) for t in op.inputs if t >= 0] for i, op in enumerate(sg.operators)}
