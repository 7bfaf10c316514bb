"""The one mixed-precision search: keep the worst layers in float, more each round, until a gate passes.

Both int8 paths use it with their own ranker and quantiser: onnxruntime QDQ
(:func:`export.quant.fallback.quantize_with_fallback`, nodes ranked by SQNR lost,
:func:`~export.quant.fallback.rank_nodes`) and full-integer TFLite (the build's TFLite
fallback, operators ranked by relative error added, :func:`export.tflite.fallback.rank_layers`).
Each round ranks the *current* variant afresh: once a layer is float, the damage shows up at the
next quantised layer downstream (the concatenation after a float sigmoid requantises its output
again), which the fresh ranking then names. Rounds add 1, 2, 4 … layers (a layer may bring a
group that must go float with it: the element-wise nodes feeding an ONNX Conv); a group is never
split, and the search stops when the next group would exceed the float limit.

Example:
    >>> steps = grow_float_set(rank, quantize, accept, first=all_int8, total=120)   # doctest: +SKIP
    >>> steps[-1].accepted, steps[-1].keep_float                                      # doctest: +SKIP
    (True, ('conv_3',))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

__all__ = ["FallbackStep", "grow_float_set", "MAX_FLOAT_FRACTION", "MAX_ROUNDS"]

#: Defaults (the TFLite fallback's limits; the ONNX fallback passes its own FallbackOptions).
#: At most this fraction of the layers may be kept in float before the search gives up.
MAX_FLOAT_FRACTION = 0.25
#: Re-quantisations before the search gives up.
MAX_ROUNDS = 7


@dataclass(frozen=True)
class FallbackStep:
    """One attempt: the layers kept in float, what ``quantize`` made, and the gate's answer."""

    keep_float: tuple[str, ...]
    variant: object  # what ``quantize`` returned (a path, or the caller's attempt record)
    accepted: bool
    detail: object = None  # what the gate returned

    @property
    def path(self):
        return getattr(self.variant, "path", self.variant)


def grow_float_set(rank: Callable[[object, frozenset], Iterable[str]], quantize: Callable[[tuple[str, ...], int], object],
                   accept: Callable[[object], tuple[bool, object]], *, first: object, total: int,
                   max_fraction: float = MAX_FLOAT_FRACTION, max_rounds: int = MAX_ROUNDS, first_step: int = 1,
                   seed: Sequence[str] = (), group: Callable[[str, frozenset], Sequence[str]] | None = None,
                   say: Callable[[str], None] | None = None) -> list[FallbackStep]:
    """Keep more and more of the worst layers in float until ``accept`` says yes.

    Args:
        rank: ``rank(variant, kept)`` → layer names of ``variant`` worst first (layers the ranker
            finds harmless left out); names in ``kept`` are skipped here anyway.
        quantize: ``quantize(keep_float, round)`` → the variant with those layers in float.
        accept: the gate: ``accept(variant)`` → ``(passed, detail)``.
        first: the all-int8 variant that failed its gate (ranked first).
        total: layers that could be kept in float (for the limit).
        max_fraction: give up beyond this fraction of ``total`` in float.
        max_rounds: give up after this many re-quantisations.
        first_step: layers added in the first round (a group is taken whole, so a round may add
            more); doubled each round.
        seed: layers already float in ``first``.
        group: ``group(name, kept)`` → the layers that go float with ``name`` (default: itself).
        say: progress lines.

    Returns:
        Every attempt in order; the last one is accepted unless a limit was reached.
    """
    say = say or (lambda line: log.info("%s", line))
    limit = max(1, int(total * max_fraction))
    keep = list(seed)
    steps: list[FallbackStep] = []
    current, step = first, max(1, first_step)
    for rnd in range(1, max_rounds + 1):
        kept = frozenset(keep)
        add: list[str] = []
        for name in rank(current, kept):
            if len(add) >= step:
                break
            if name in kept or name in add:
                continue
            members = [m for m in (group(name, kept) if group else [name]) if m not in kept and m not in add]
            if not members:
                continue
            if len(keep) + len(add) + len(members) > limit:
                break
            add += members
        if not add:
            say(f"fallback: stopping: no layer left to keep in float within {max_fraction:.0%} of {total}")
            break
        keep += add
        current = quantize(tuple(keep), rnd)
        ok, detail = accept(current)
        steps.append(FallbackStep(tuple(keep), current, ok, detail))
        log.info("fallback: %d layer(s) in float -> %s", len(keep), "accepted" if ok else "rejected")
        if ok or len(keep) >= limit:
            break
        step *= 2
    return steps
