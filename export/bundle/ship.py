"""What ships is already rewritten: output-identical graph rewrites applied to the bundle's ONNX files.

The device loads a bundle's model as is, so any rewrite that makes it faster without changing its
outputs must happen here, on the exact file that goes into the bundle. :func:`shipped_model` is
called by ``edge-export build`` for each chosen variant:

* ONNX: every remaining ``PRelu`` is rewritten as ``x + (slope − 1) · Min(x, 0)``
  (:func:`export.onnx.graph_opt.rewrite_prelu`; onnxruntime's PRelu kernel is its slowest CPU op), the
  rewritten file is checked against the chosen one on random inputs (max |Δ| ≤
  :data:`export.onnx.graph_opt.REWRITE_ATOL`), and the card records every rewrite the file carries,
  including those made earlier while preparing the float model (``provenance.rewrites``);
* TFLite: nothing to do (PRELU is a native TFLite/XNNPACK kernel); the card says so.

Example:
    >>> path, card = shipped_model(chosen.path, chosen.card, work_dir, prep=outcome.prep)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec

from edge.cards import ModelCard, Rewrite

__all__ = ["shipped_model", "count_ops"]


def count_ops(path: Path, op_type: str) -> int:
    """How many nodes of ``op_type`` an ONNX file's main graph holds."""
    import onnx

    return sum(n.op_type == op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _float_or_none(x) -> float | None:
    return None if x is None else float(x)


def shipped_model(path: str | Path, card: ModelCard, work: str | Path, *, prep: dict | None = None
                  ) -> tuple[Path, ModelCard]:
    """The model file and card to put into the bundle for a chosen variant.

    Args:
        path: the chosen variant's file.
        card: its card.
        work: a scratch directory for a rewritten copy.
        prep: the float preparation record (``ModelOutcome.prep``) whose ``rewrites`` the file inherits.

    Raises:
        ExportStepError: a rewrite changed the outputs beyond float rounding (nothing ships).
    """
    from export.onnx.graph_opt import REWRITE_ATOL, _max_output_diff, rewrite_prelu
    from export.variants import ExportStepError

    path = Path(path)
    inherited = [Rewrite(name=r["name"], nodes=int(r["nodes"]), max_abs_diff=_float_or_none(r.get("max_abs_diff")),
                         stage="float preparation") for r in (prep or {}).get("rewrites", [])]
    if path.suffix.lower() != ".onnx":
        prov = msgspec.structs.replace(card.provenance, rewrites=(),
                                       rewrites_note="none needed: PRELU is a native TFLite/XNNPACK kernel")
        return path, dataclasses.replace(card, provenance=prov)
    rewrites = inherited  # every variant is made from the prepared float model
    if count_ops(path, "PRelu"):
        dst = Path(work) / "shipped" / path.name
        n = rewrite_prelu(path, dst)
        diff = _max_output_diff(path, dst)
        if diff > REWRITE_ATOL:
            raise ExportStepError(card.name, "ship", f"the PRelu rewrite of {path.name} changed its outputs by "
                                  f"{diff:.2e} (> {REWRITE_ATOL}): not shipped")
        rewrites = [r for r in rewrites if r.name != "prelu"] + [
            Rewrite(name="prelu", nodes=int(n), max_abs_diff=float(diff), stage="shipping")]
        path = dst
    # a checked property of the shipped graph, whatever made it so (float preparation, the torch
    # exporter's own rewrite, or the rewrite above)
    prov = msgspec.structs.replace(card.provenance, rewrites=tuple(rewrites), prelu_nodes=0)
    return path, dataclasses.replace(card, provenance=prov)
