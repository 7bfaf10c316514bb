"""MSE-optimal activation ranges for full-integer TFLite quantisation.

ai-edge-quantizer takes per-tensor activation ranges ("QSVs", ``{"min", "max"}``) from a
calibration run. Min/max keeps every outlier and so makes the int8 step coarse; a smoothed
min/max (AEQ's default) clips at an average of per-sample extremes. :func:`mse_ranges` instead
builds a histogram of every tensor over the calibration samples (within the min/max range) and
picks, per tensor, the clipping range that minimises the expected squared error of 8-bit
quantisation — rounding noise inside the range (step²/12 per value) plus the clipping error of
the values outside it — among ranges that cut a given share of the tails.

Example:
    >>> qsvs = mse_ranges("m_fp32.tflite", samples, minmax_qsvs)     # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["mse_ranges", "HIST_BINS", "TAIL_FRACTIONS", "HIST_SAMPLES"]

#: Histogram resolution per tensor.
HIST_BINS = 2048
#: Shares of each tail that a candidate range may cut (0: the full min/max range).
TAIL_FRACTIONS = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
#: Calibration samples histogrammed (the ranges are stable well before this).
HIST_SAMPLES = 32
_LEVELS = 255


def _best_range(h: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    edges = np.linspace(lo, hi, len(h) + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    cum = np.cumsum(h)
    total = cum[-1]
    best = (np.inf, lo, hi)
    for q in TAIL_FRACTIONS:
        if q == 0:
            a, b = lo, hi
        else:
            a = float(centers[min(len(h) - 1, np.searchsorted(cum, q * total))])
            b = float(centers[min(len(h) - 1, np.searchsorted(cum, (1 - q) * total))])
        a, b = min(a, 0.0), max(b, 0.0)  # the range must hold zero (zero point is an integer)
        if b <= a:
            continue
        step = (b - a) / _LEVELS
        below, above = centers < a, centers > b
        err = (h[~below & ~above].sum() * step * step / 12.0 + (h[below] * (centers[below] - a) ** 2).sum()
               + (h[above] * (centers[above] - b) ** 2).sum())
        if err < best[0]:
            best = (err, a, b)
    return best[1], best[2]


def mse_ranges(float_tflite: str | Path, samples: Sequence[dict], minmax: dict, *, threads: int = 2) -> dict:
    """QSVs with MSE-optimal clipping, from min/max QSVs and real samples.

    Args:
        float_tflite: the fp32 model.
        samples: calibration feeds (``{input name: array}``), matched to the inputs by position.
        minmax: QSVs from a min/max calibration run (the histogram range per tensor).
        threads: interpreter threads.

    Returns:
        QSVs in the same form (tensors without usable values keep their min/max).
    """
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(float_tflite), experimental_preserve_all_tensors=True, num_threads=threads)
    it.allocate_tensors()
    details = {d["name"]: d for d in it.get_tensor_details()}
    inputs = it.get_input_details()
    ranges = {n: (float(np.min(q["min"])), float(np.max(q["max"]))) for n, q in minmax.items()
              if n in details and "min" in q and "max" in q}
    hist = {n: np.zeros(HIST_BINS) for n, (lo, hi) in ranges.items() if hi > lo}
    for feed in list(samples)[:HIST_SAMPLES]:
        for d, x in zip(inputs, feed.values()):
            it.set_tensor(d["index"], np.asarray(x, np.float32))
        it.invoke()
        for n in hist:
            try:
                v = it.get_tensor(details[n]["index"])
            except ValueError:  # a tensor without data (optional input)
                continue
            if v.dtype != np.float32:
                continue
            h, _ = np.histogram(v, bins=HIST_BINS, range=ranges[n])
            hist[n] += h
    out = {}
    for n, q in minmax.items():
        if n in hist and hist[n].sum() > 0:
            a, b = _best_range(hist[n], *ranges[n])
            out[n] = {**q, "min": np.full_like(q["min"], a), "max": np.full_like(q["max"], b)}
        else:
            out[n] = q
    return out
