"""ONNX graph rewrites that keep a model's function and make it faster on CPU runtimes.

:func:`rewrite_prelu` replaces every ``PRelu(x, slope)`` by ``x + (slope − 1) · Min(x, 0)`` —
the same function in three element-wise ops on onnxruntime's vectorised kernels. onnxruntime's
CPU PRelu kernel is two thirds of MobileFaceNet's fp32 time (``../shared/models/MANIFEST.md``);
measured here at 1 thread: 11.8 ms → 6.7 ms with ``Max(x,0) + slope·Min(x,0)`` (four ops) and
6.1 ms with this form. (``Max(x, slope·x)`` would need two ops but is only correct for slopes
≤ 1; 26 of MobileFaceNet's 33 PRelus have slopes above 1.)

:func:`optimized_embedder` applies it to a registry embedder and writes the new ONNX file and
its card (a new name and sha256, with the source's thresholds: the outputs agree to float
rounding), cached so it is built once.

Example:
    >>> onnx_path, card_path = optimized_embedder("mobilefacenet_128d", "out/")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from export.onnx.from_torch import ExportError

log = logging.getLogger(__name__)

__all__ = ["rewrite_prelu", "optimized_embedder", "FAST_PRELU_SUFFIX", "REWRITE_ATOL"]

#: Recorded in the card; a cached copy made by another rewrite is rebuilt.
REWRITE_ID = "prelu_to_x_plus_slope_m1_min"
#: Appended to the card name of a PRelu-rewritten model.
FAST_PRELU_SUFFIX = "_fastprelu"
#: Max |original − rewritten| allowed on any output value (float32 rounding only).
REWRITE_ATOL = 1e-4
#: Random inputs the equivalence check runs.
CHECK_SAMPLES = 3


def rewrite_prelu(model_in: str | Path, model_out: str | Path) -> int:
    """Write ``model_in`` with every PRelu rewritten as Min/Mul/Add (and no weight-inputs).

    Args:
        model_in: source ``.onnx``.
        model_out: destination ``.onnx`` (written to a temporary name, then renamed).

    Returns:
        The number of PRelu nodes rewritten.

    Raises:
        ExportError: the rewritten graph fails ``onnx.checker``.
    """
    import onnx

    from edge.engines.onnx_wire import strip_weight_inputs

    # Weights listed as graph inputs (SFace's old exporter) are dropped from the inputs first, so
    # the rewritten file has only its real input (they stay initialisers).
    data, _ = strip_weight_inputs(Path(model_in).read_bytes())
    m = onnx.load_from_string(data)
    from export.onnx.prep import rewrite_prelu as rewrite_in_memory
    from export.onnx.prep import save_checked

    count = rewrite_in_memory(m)
    out = save_checked(m, model_out, f"PRelu rewrite of {model_in}")
    log.info("rewrote %d PRelu nodes of %s into %s", count, model_in, out)
    return count


def _max_output_diff(a: Path, b: Path, seed: int = 0) -> float:
    from edge.engines import load_engine

    rng = np.random.default_rng(seed)
    with load_engine(a, threads=1) as ea, load_engine(b, threads=1) as eb:
        info = ea.inputs[0]
        shape = tuple(d if d is not None else 1 for d in info.shape)
        worst = 0.0
        for _ in range(CHECK_SAMPLES):
            x = rng.uniform(0, 255, shape).astype(np.float32)
            ya = next(iter(ea.run({info.name: x}).values()))
            yb = next(iter(eb.run({eb.inputs[0].name: x}).values()))
            worst = max(worst, float(np.abs(ya - yb).max()))
    return worst


def optimized_embedder(name_or_path: str | Path, out_dir: str | Path, *, force: bool = False) -> tuple[Path, Path]:
    """A PRelu-rewritten copy of an ONNX embedder, with its card; reused when already built.

    Args:
        name_or_path: registry name (e.g. ``"mobilefacenet_128d"``), model file or card JSON.
        out_dir: where ``<name>_fastprelu.onnx`` and ``.json`` go (a cache directory).
        force: rebuild even when a valid cached copy exists.

    Returns:
        ``(onnx_path, card_path)``.

    Raises:
        ExportError: the model has no PRelu, or the rewrite changes its outputs.
    """
    import dataclasses

    from edge.cards import Rewrite, load_card
    from edge.registry import resolve, sha256_file
    from export.onnx.from_torch import write_card

    ref = resolve(name_or_path)
    if ref.card is None:
        raise ExportError(f"no model card for {ref.path}: cannot name the optimised copy")
    name = f"{ref.card.name}{FAST_PRELU_SUFFIX}"
    out = Path(out_dir)
    onnx_path, card_path = out / f"{name}.onnx", out / f"{name}.json"
    if not force and onnx_path.is_file() and card_path.is_file():
        card = load_card(card_path)
        prov = card.provenance
        if (card.sha256 == sha256_file(onnx_path) and prov.graph_rewrite == REWRITE_ID
                and prov.derived_from is not None and prov.derived_from.sha256 == ref.card.sha256):
            return onnx_path, card_path
    n = rewrite_prelu(ref.path, onnx_path)
    if n == 0:
        onnx_path.unlink()
        raise ExportError(f"{ref.path} has no PRelu node: nothing to optimise")
    diff = _max_output_diff(ref.path, onnx_path)
    if diff > REWRITE_ATOL:
        raise ExportError(f"PRelu rewrite changed the outputs of {ref.card.name} by {diff:.2e} (> {REWRITE_ATOL})")
    tpl = dataclasses.replace(ref.card)
    write_card(tpl, onnx_path, card_path, name=name,
               description=f"{ref.card.description} PRelu rewritten as x + (slope-1)*Min(x,0) (same function; "
                           f"max |Δ| {diff:.1e} on random inputs).",
               provenance={"converter": "export.onnx.graph_opt.rewrite_prelu", "graph_rewrite": REWRITE_ID,
                           "prelu_rewritten": n, "rewrites": (Rewrite(name="prelu", nodes=int(n), max_abs_diff=float(diff),
                                                                      stage="graph_opt"),)})
    return onnx_path, card_path
