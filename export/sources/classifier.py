"""Export the torchvision MobileNetV2 source (registry ``mobilenet_v2_torchvision``) to ONNX fp32.

The exported file is checked against the torch model on a real image, preprocessed exactly
as the edge runtime does it (``edge.preprocess.prepare`` with the card's input spec).

Example:
    >>> onnx_path, card_path = export_mobilenet_v2_onnx("bundle/")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge import paths
from edge.cards import ModelCard, Parity
from edge.imageio import load_image
from edge.preprocess import prepare
from edge.registry import resolve
from export.onnx.from_torch import ExportError, export_onnx, isolated_caches, write_card
from export.sources.nets import load_mobilenet_v2

log = logging.getLogger(__name__)

__all__ = ["SOURCE_MODEL", "ONNX_LOGITS_ATOL", "CHECK_IMAGE", "ParityResult", "check_onnx_parity",
           "export_mobilenet_v2_onnx"]

#: Registry name of the float source.
SOURCE_MODEL = "mobilenet_v2_torchvision"
#: Max |torch − onnxruntime| allowed on any logit (fp32 export; measured ~1e-5 here).
ONNX_LOGITS_ATOL = 1e-3
#: The image the parity check runs on, relative to the data directory.
CHECK_IMAGE = "samples/cat.bmp"


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    torch_top1: int
    onnx_top1: int
    image: str


def _check_input(card: ModelCard, image: str | Path | None) -> tuple[np.ndarray, str]:
    if image is None:
        data = paths.data_dir()
        if data is None or not (data / CHECK_IMAGE).is_file():
            raise ExportError(f"no check image: {CHECK_IMAGE} not found in the data directory "
                              f"({data}); set EDGE_DATA_DIR or pass check_image=")
        image = data / CHECK_IMAGE
    x, _ = prepare(load_image(image), card.inputs[0])
    return x, str(image)


def check_onnx_parity(model: torch.nn.Module, onnx_path: str | Path, card: ModelCard,
                      image: str | Path | None = None, atol: float = ONNX_LOGITS_ATOL) -> ParityResult:
    """Run ``model`` and the ONNX file on one preprocessed image and compare the logits.

    Raises:
        ExportError: the max absolute difference exceeds ``atol`` (or top-1 differs).
    """
    x, img = _check_input(card, image)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    # onnxruntime writes a telemetry device id under $XDG_CACHE_HOME (else ~/.cache) when first
    # imported, so import it with the caches pointed away from $HOME.
    with isolated_caches():
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if got.shape != ref.shape:
        raise ExportError(f"{onnx_path}: output shape {got.shape} differs from torch {ref.shape}")
    diff = float(np.abs(got - ref).max())
    res = ParityResult(diff, int(ref[0].argmax()), int(got[0].argmax()), img)
    if not diff < atol or res.torch_top1 != res.onnx_top1:
        raise ExportError(f"{onnx_path}: ONNX logits differ from torch on {img}: max |diff| {diff:.3g} "
                          f"(allowed < {atol:g}), top-1 torch {res.torch_top1} vs onnx {res.onnx_top1}")
    return res


def export_mobilenet_v2_onnx(out_dir: str | Path, *, opset: int = 17, dynamic_batch: bool = False,
                             check_image: str | Path | None = None) -> tuple[Path, Path]:
    """Export MobileNetV2 (torchvision ImageNet weights) to ``out_dir`` as ONNX fp32 + card.

    Args:
        out_dir: output directory; receives ``mobilenet_v2_torchvision_fp32.onnx`` and ``.json``.
        opset: ONNX opset.
        dynamic_batch: symbolic batch dimension.
        check_image: image for the parity check (default: ``samples/cat.bmp`` of the data dir).

    Returns:
        ``(onnx_path, card_path)``.

    Raises:
        ModelNotFoundError / ModelIntegrityError: the source weights cannot be resolved.
        StateDictMismatchError: the weights do not fit the network definition.
        ExportError: export failed or the ONNX output differs from torch by ≥ ``ONNX_LOGITS_ATOL``.
    """
    out = Path(out_dir)
    ref = resolve(SOURCE_MODEL)
    card = ref.card
    spec = card.inputs[0]
    model = load_mobilenet_v2(ref.path)
    name = f"{SOURCE_MODEL}_fp32"
    t0 = time.perf_counter()
    onnx_path = export_onnx(model, out / f"{name}.onnx", input_shape=tuple(spec.shape), input_name=spec.name,
                            output_name=card.outputs[0].name, opset=opset, dynamic_batch=dynamic_batch)
    seconds = time.perf_counter() - t0
    parity = check_onnx_parity(model, onnx_path, card, check_image)
    log.info("%s: exported in %.2f s, max |torch - onnx| %.3g on %s", onnx_path, seconds, parity.max_abs_diff,
             parity.image)
    card_path = write_card(card, onnx_path, out / f"{name}.json", name=name,
                           provenance={"parity": Parity(image=Path(parity.image).name,
                                                        max_abs_diff=float(parity.max_abs_diff), atol=ONNX_LOGITS_ATOL)})
    return onnx_path, card_path
