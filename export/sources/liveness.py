"""Export the MiniFASNet anti-spoofing pair to ONNX with the edge model cards.

Both checkpoints of the registry (``minifasnet_v2_scale2.7``, ``minifasnet_v1se_scale4.0``)
are loaded strictly into :mod:`export.sources.nets.minifasnet`, exported (input ``input``
``1×3×80×80`` float BGR 0–255, output ``logits`` ``1×3``), checked against torch on random
crops, and described by cards (task ``liveness``, ``face_crop.crop_scale`` 2.7 / 4.0) that
:class:`edge.face.liveness.PassiveLiveness` reads.

Example:
    >>> written = export_liveness("bundle/")          # doctest: +SKIP
    >>> [p.name for p, _ in written]
    ['minifasnet_v2_scale2.7.onnx', 'minifasnet_v1se_scale4.0.onnx']
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from edge.cards import FaceCrop, Parity
from edge.registry import get_card, resolve
from export.onnx.from_torch import ExportError, export_onnx, isolated_caches, write_card
from export.onnx.graph_opt import rewrite_prelu
from export.sources.nets.minifasnet import INPUT_SIZE, load_minifasnet

log = logging.getLogger(__name__)

__all__ = ["LIVENESS_MODELS", "LOGITS_ATOL", "export_liveness", "export_one", "check_parity"]

#: Registry names of the float sources, in the order the original project averages them.
LIVENESS_MODELS = ("minifasnet_v2_scale2.7", "minifasnet_v1se_scale4.0")
#: Max |torch − onnxruntime| on any logit (fp32; measured ≈1e-5 here).
LOGITS_ATOL = 1e-3
#: Random crops the parity check runs on.
PARITY_SAMPLES = 4
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def check_parity(model: torch.nn.Module, onnx_path: Path, *, atol: float = LOGITS_ATOL, seed: int = 0) -> float:
    """Max |torch − onnxruntime| logit difference over random 0–255 crops.

    Raises:
        ExportError: the difference exceeds ``atol``.
    """
    rng = np.random.default_rng(seed)
    with isolated_caches():
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for _ in range(PARITY_SAMPLES):
        x = rng.uniform(0, 255, (1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > atol:
        raise ExportError(f"{onnx_path}: ONNX logits differ from torch by {worst:.2e} (> {atol})")
    return worst


def export_one(name: str, out_dir: str | Path, *, fast_prelu: bool = True) -> tuple[Path, Path]:
    """Export one registry MiniFASNet checkpoint; returns ``(onnx_path, card_path)``.

    With ``fast_prelu`` its PRelus are rewritten as element-wise ops (:mod:`export.onnx.graph_opt`):
    the same function, faster on onnxruntime's CPU kernels.
    """
    ref = resolve(name)
    card = get_card(name)
    model = load_minifasnet(ref.path)
    out = Path(out_dir)
    onnx_path = export_onnx(model, out / f"{name}.onnx", (1, 3, INPUT_SIZE, INPUT_SIZE), INPUT_NAME, OUTPUT_NAME)
    prelus = rewrite_prelu(onnx_path, onnx_path) if fast_prelu else 0
    diff = check_parity(model, onnx_path)  # checked after the rewrite: the file shipped is the one compared
    card_path = write_card(card, onnx_path, out / f"{name}.json",
                           face_crop=FaceCrop(crop_scale=card.face_crop.crop_scale, live_class=1),
                           provenance={"parity": Parity(max_abs_diff=float(diff)), "prelu_rewritten": int(prelus)})
    log.info("exported %s (max |Δlogit| %.2e)", onnx_path, diff)
    return onnx_path, card_path


def export_liveness(out_dir: str | Path, names: tuple[str, ...] = LIVENESS_MODELS, *,
                    fast_prelu: bool = True) -> list[tuple[Path, Path]]:
    """Export every liveness model of ``names`` into ``out_dir``."""
    return [export_one(n, out_dir, fast_prelu=fast_prelu) for n in names]
