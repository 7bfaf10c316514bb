"""Accuracy and speed targets a quantised (int8) variant must meet to ship as int8.

The gate limits of the profile say "not broken"; these targets say "as good as published
post-training quantisation gets" (issue 13):

=================  ==========================================  ==============================
role               accuracy (variant vs float, same images)     speed (vs fp32, same runtime)
=================  ==========================================  ==============================
classifier         labelled top-1 at most 0.5 points lower      at least 1.5× faster
detector           mAP50-95 at most 1.0 point lower             at least 1.5× faster
face embedder      ROC AUC at most 0.002 lower                  at least 1.5× faster
=================  ==========================================  ==============================

:func:`check_target` is applied to the selection split's figures (the build's decision) and to
the report split's (the figures the report states). A variant missing either is refused and the
reason says by how much. The report split only ever vetoes an int8 variant (falling back to a
float one); it never picks among variants.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "MIN_SPEEDUP", "check_target", "is_int8"]

#: An int8 variant must be at least this many times faster than its fp32 on the target runtime.
MIN_SPEEDUP = 1.5


@dataclass(frozen=True)
class Target:
    """``metric_float - metric`` must not exceed ``max_drop`` (``scale`` converts to the unit said)."""

    metric: str
    float_metric: str
    max_drop: float
    unit: str
    scale: float


TARGETS: dict[str, Target] = {
    "classifier": Target("labelled_top1", "labelled_top1_float", 0.005, "points of top-1", 100.0),
    "detector": Target("map50_95", "map50_95_float", 0.010, "points of mAP50-95", 100.0),
    "face_embedder": Target("roc_auc", "roc_auc_float", 0.002, "ROC AUC", 1.0),
}


def is_int8(key: str) -> bool:
    """A fully calibrated int8 variant (dynamic-range int8 keeps float activations and is not one)."""
    return key.endswith("_int8") or key.endswith("_int8_uint8io")


def check_target(role: str, key: str, metrics: dict | None, *, latency_ms: float | None = None,
                 fp32_latency_ms: float | None = None, split: str = "selection", where: str = "here") -> list[str]:
    """Sentences naming each missed target (empty: met, or no target for this role/variant)."""
    if not is_int8(key):
        return []
    out = []
    t = TARGETS.get(role)
    if t is not None and metrics and metrics.get(t.metric) is not None and metrics.get(t.float_metric) is not None:
        drop = float(metrics[t.float_metric]) - float(metrics[t.metric])
        if drop > t.max_drop + 1e-12:
            out.append(f"{split} split: {drop * t.scale:.2f} {t.unit} below float (target at most "
                       f"{t.max_drop * t.scale:.2f}; misses by {(drop - t.max_drop) * t.scale:.2f})")
    if latency_ms and fp32_latency_ms:
        speedup = fp32_latency_ms / latency_ms
        if speedup < MIN_SPEEDUP:
            out.append(f"only {speedup:.2f}x faster than fp32 {where} ({latency_ms:.2f} vs {fp32_latency_ms:.2f} ms; "
                       f"target {MIN_SPEEDUP}x)")
    return out
