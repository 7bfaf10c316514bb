"""TFLite variants, produced offline: litert-torch for the float model, ai-edge-quantizer for the rest.

Routes (why: ``docs/tflite_route.md``):

- PyTorch sources (MobileNetV2, MiniFASNet): ``litert_torch.convert(model, sample)`` → fp32.
- ONNX sources (YOLOX, YuNet, SFace, MobileFaceNet, a user's file): the graph is rebuilt as a
  torch module by :mod:`export.onnx.to_torch`, then converted the same way.
- Every other precision is made from that float ``.tflite`` by ai-edge-quantizer (AEQ):
  fp16 weights (``FLOAT_CASTING``), dynamic-range int8 (int8 weights, float activations) and
  full-integer int8 (calibrated activations, per-channel weights, int8 I/O; uint8 I/O by
  wrapping it, :func:`export.tflite.flatbuffer.to_uint8_io`).

Each artefact is written to a temporary name and renamed, then loaded with ``edge``'s LiteRT
engine and compared with its source on a real input (:func:`check_variant`), within the
per-format tolerance of :mod:`export.variants`; a converter that "succeeds" with a broken model
fails there.

Example:
    >>> onnx_to_tflite("detection/yolox_nano_416.onnx", "out/yolox_fp32.tflite")        # doctest: +SKIP
    >>> quantize_tflite("out/yolox_fp32.tflite", "out/yolox_int8.tflite", "tflite_int8",
    ...                 calibration=samples)                                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from export.onnx.from_torch import ExportError, isolated_caches
from export.tflite.flatbuffer import float_outputs, names_from_signature, rename_io, to_uint8_io
from export.variants import Agreement, ExportStepError, StepResult, check_agreement, export_step, get_target

log = logging.getLogger(__name__)

__all__ = ["TFLITE_KEYS", "CalibrationStat", "TfliteQuantOptions", "converter_versions", "torch_to_tflite",
           "onnx_to_tflite", "quantize_tflite", "calibrate_tflite", "calibration_samples", "check_variant", "make_variant", "tflite_card"]

#: The TFLite rows of :func:`export.variants.export_formats`, float first.
TFLITE_KEYS = ("tflite_fp32", "tflite_fp16", "tflite_int8_dynamic", "tflite_int8", "tflite_int8_uint8io")
#: litert-torch's signature name for a single-signature model.
SIGNATURE = "serving_default"
#: Permissions of written model files.
FILE_MODE = 0o644
#: Python packages whose versions go into reports.
CONVERTER_PACKAGES = ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "torch", "onnx", "onnxruntime")


class CalibrationStat(str, enum.Enum):
    """How per-tensor activation ranges are accumulated over the calibration samples."""

    MOVING_AVERAGE = "moving_average"  # AEQ's default: min/max smoothed across samples (0.95)
    MINMAX = "minmax"  # the absolute min and max over all samples
    MSE = "mse"  # per-tensor clipping minimising 8-bit quantisation error (export.tflite.calib)


@dataclass(frozen=True)
class TfliteQuantOptions:
    """Options of :func:`quantize_tflite`.

    Attributes:
        stat: activation-range statistic for full-integer int8.
        keep_float: output tensor names (see :func:`export.tflite.flatbuffer.list_ops`) of operators
            left in float — the fallback for layers that quantise badly.
        threads: interpreter threads used during calibration.
        activation_bits: 8 (int8 × int8) or 16 (LiteRT's 16×8: int16 activations, int8 weights;
            AEQ's ``static_wi8_ai16`` recipe).
    """

    stat: CalibrationStat = CalibrationStat.MOVING_AVERAGE
    keep_float: tuple[str, ...] = ()
    threads: int = 2
    activation_bits: int = 8

    def __post_init__(self) -> None:
        if self.activation_bits not in (8, 16):
            raise ValueError(f"TfliteQuantOptions.activation_bits must be 8 or 16, got {self.activation_bits!r}")


def converter_versions() -> dict[str, str]:
    """Versions of the converter packages (for reports)."""
    out = {}
    for pkg in CONVERTER_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@contextlib.contextmanager
def _quiet():
    """Silence litert-torch's progress lines and AEQ's report and progress bars (logged instead)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield
    if buf.getvalue().strip():
        log.debug("converter output:\n%s", buf.getvalue())


def _atomic_write(dst: Path, data: bytes) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}-", suffix=".tflite.tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; a model file is not a secret
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def torch_to_tflite(model, samples: Sequence[np.ndarray], dst: str | Path, *, input_names: Sequence[str],
                    output_names: Sequence[str], model_name: str | None = None) -> Path:
    """Convert a torch module to a float32 ``.tflite`` with litert-torch.

    Args:
        model: the module (put in eval mode).
        samples: one example array per input (fixes the static shapes of the model).
        dst: output file.
        input_names / output_names: the source model's tensor names, given to the TFLite tensors.
        model_name: for error messages.

    Raises:
        ExportStepError: litert-torch failed (step ``tflite_fp32``), with its message.
    """
    import torch

    name = model_name or Path(dst).stem
    dst = Path(dst)
    try:
        import litert_torch

        with isolated_caches(), _quiet(), torch.no_grad():
            args = tuple(torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)) for s in samples)
            edge_model = litert_torch.convert(model.eval(), args)
            with tempfile.TemporaryDirectory(prefix="edgesight-litert-") as tmp:
                raw = Path(tmp) / "model.tflite"
                edge_model.export(str(raw))
                data = raw.read_bytes()
    except ExportError:
        raise
    except Exception as e:  # litert-torch raises torch.export / MLIR errors of many types
        raise ExportStepError(name, "tflite_fp32", f"litert-torch conversion failed: {type(e).__name__}: "
                                                   f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return _atomic_write(dst, rename_io(data, input_names, output_names, name))


def onnx_to_tflite(src: str | Path, dst: str | Path, *, model_name: str | None = None) -> Path:
    """Convert an ONNX file to a float32 ``.tflite`` (ONNX → torch module → litert-torch).

    Dynamic dimensions are fixed to 1: the converted graph is static-shaped
    (:mod:`export.tflite.resizable` frees a convolutional graph's height and width afterwards).

    Raises:
        UnsupportedOperatorError: an operator the ONNX → PyTorch step does not cover.
        ExportStepError: litert-torch failed.
    """
    from export.onnx.to_torch import onnx_to_torch

    name = model_name or Path(src).stem
    module = onnx_to_torch(src, name)
    from export.onnx.to_torch import load_onnx_model

    graph = load_onnx_model(src, name).graph
    samples = []
    for vi in graph.input:
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
        samples.append(np.zeros(dims, np.float32))
    return torch_to_tflite(module, samples, dst, input_names=module.input_names, output_names=module.output_names,
                           model_name=name)


def _signature_inputs(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    sigs = it.get_signature_list()
    if SIGNATURE not in sigs:
        raise ExportError(f"{path.name}: no {SIGNATURE!r} signature (found {sorted(sigs)})")
    return list(sigs[SIGNATURE]["inputs"])


def calibration_samples(calibration: Any, input_names: Sequence[str], model_name: str) -> list[dict]:
    """Materialise calibration data as a list of ``{input name: float32 array}``.

    Accepts an iterable of feed dicts (or of arrays, for one-input models) or an onnxruntime-style
    reader with ``get_next()``. Feeds are matched to ``input_names`` by position.

    Raises:
        ExportStepError: no samples (step ``calibration``).
    """
    if hasattr(calibration, "get_next"):
        if hasattr(calibration, "rewind"):
            calibration.rewind()
        items = list(iter(calibration.get_next, None))
    else:
        items = list(calibration or [])
    out = []
    for item in items:
        values = list(item.values()) if isinstance(item, Mapping) else [item]
        out.append({n: np.asarray(v, np.float32) for n, v in zip(input_names, values)})
    if not out:
        raise ExportStepError(model_name, "calibration", "the calibration data is empty")
    return out


def _minmax(old: dict, new: dict) -> dict:
    if not old:
        return new
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def _keep_float(quantizer, names: Iterable[str]) -> None:
    from ai_edge_quantizer import algorithm_manager, qtyping

    # AEQ matches an op by its "scope": its output tensor names joined by ";" plus a trailing ";".
    for n in names:
        quantizer.update_quantization_recipe(f"^{re.escape(n)};$", qtyping.TFLOperationName.ALL_SUPPORTED,
                                             algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)


def calibrate_tflite(float_tflite: str | Path, calibration: Any, options: TfliteQuantOptions = TfliteQuantOptions(),
                     *, model_name: str | None = None) -> dict:
    """Activation ranges (AEQ "QSVs") of every tensor of the float model over the calibration data.

    The result can be passed to :func:`quantize_tflite` again and again (the fallback search
    re-quantises with more layers in float without calibrating again).

    Raises:
        ExportStepError: empty calibration data, or the calibration run failed.
    """
    from ai_edge_quantizer import calibrator, recipe
    from ai_edge_quantizer.recipe_manager import RecipeManager
    from ai_edge_quantizer.utils import qsv_utils

    src = Path(float_tflite)
    name = model_name or src.stem
    samples = calibration_samples(calibration, _signature_inputs(src), name)
    update = qsv_utils.moving_average_update if options.stat is CalibrationStat.MOVING_AVERAGE else _minmax
    manager = RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())
    try:
        with _quiet():
            cal = calibrator.Calibrator(src.read_bytes(), num_threads=options.threads, qsv_update_func=update)
            cal.calibrate({SIGNATURE: samples}, manager)
        qsvs = cal.get_model_qsvs()
        if options.stat is CalibrationStat.MSE:
            from export.tflite.calib import mse_ranges

            qsvs = mse_ranges(src, samples, qsvs, threads=options.threads)
    except Exception as e:  # noqa: BLE001 - the interpreter's errors are untyped
        raise ExportStepError(name, "calibration", f"calibrating {src.name} failed: {type(e).__name__}: {e}") from e
    return qsvs


def quantize_tflite(float_tflite: str | Path, dst: str | Path, key: str, calibration: Any = None,
                    options: TfliteQuantOptions = TfliteQuantOptions(), *, qsvs: dict | None = None,
                    model_name: str | None = None) -> Path:
    """Make one TFLite variant from the float32 model with ai-edge-quantizer.

    Args:
        float_tflite: the fp32 ``.tflite`` (from :func:`torch_to_tflite` / :func:`onnx_to_tflite`).
        dst: output file.
        key: ``tflite_fp16``, ``tflite_int8_dynamic``, ``tflite_int8`` or ``tflite_int8_uint8io``.
        calibration: real, preprocessed samples (see :func:`calibration_samples`); required for
            the full-integer keys.
        options: range statistic, layers kept in float.
        qsvs: activation ranges from :func:`calibrate_tflite` (skips calibrating again).
        model_name: for error messages.

    Raises:
        ValueError: an unknown or non-quantised key, or calibration missing for full-integer.
        ExportStepError: the quantiser failed (step = ``key``) or the calibration data is empty.
    """
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe

    src, dst = Path(float_tflite), Path(dst)
    name = model_name or src.stem
    target = get_target(key)
    if key not in TFLITE_KEYS[1:]:
        raise ValueError(f"quantize_tflite: key must be one of {', '.join(TFLITE_KEYS[1:])}, got {key!r}")
    if target.calibrated and calibration is None and qsvs is None:
        raise ValueError(f"{name}: {key} needs calibration data (full-integer quantisation)")
    try:
        with _quiet():
            if key == "tflite_fp16":
                q = quantizer.Quantizer(str(src))
                q.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16,
                                         algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
                qsvs = None
            elif key == "tflite_int8_dynamic":
                q = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
                qsvs = None
            else:
                q = quantizer.Quantizer(str(src), recipe.static_wi8_ai16() if options.activation_bits == 16
                                        else recipe.static_wi8_ai8())
                if qsvs is None:
                    qsvs = calibrate_tflite(src, calibration, options, model_name=name)
            _keep_float(q, options.keep_float)
            data = names_from_signature(bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model))
        if options.keep_float:  # an output whose producers are float stays float (flatbuffer.float_outputs)
            data = float_outputs(data)
        if key == "tflite_int8_uint8io":
            data = to_uint8_io(data, name)
    except ExportError:
        raise
    except Exception as e:  # AEQ raises ValueError/RuntimeError/KeyError from deep inside
        raise ExportStepError(name, key, f"ai-edge-quantizer failed: {type(e).__name__}: {e}") from e
    return _atomic_write(dst, data)


def check_variant(result: StepResult, reference: Mapping[str, np.ndarray], model_name: str) -> Agreement:
    """Compare a variant's outputs (from :func:`export.variants.export_step`) with its source's.

    Raises:
        ExportStepError: outside the target's tolerance, naming the worst output and both measures.
    """
    ag = check_agreement(reference, result.outputs, result.target.tolerance)
    if not ag.passed:
        tol = result.target.tolerance
        raise ExportStepError(model_name, f"{result.target.key} check",
                              f"{result.path.name} disagrees with its source on output {ag.output!r}: cosine "
                              f"{ag.cosine:.5f} (min {tol.min_cosine}), max rel. error {ag.rel_err:.3g} "
                              f"(max {tol.max_rel_err}) — the converter produced a wrong model")
    return ag


def make_variant(key: str, float_tflite: str | Path, dst: str | Path, *, check_feeds: Mapping[str, np.ndarray],
                 reference: Mapping[str, np.ndarray], calibration: Any = None,
                 options: TfliteQuantOptions = TfliteQuantOptions(), qsvs: dict | None = None,
                 model_name: str | None = None, strict: bool = True) -> tuple[StepResult, Agreement]:
    """Quantise, load with ``edge``'s LiteRT engine, run on ``check_feeds`` and check agreement.

    ``key == "tflite_fp32"`` checks the float file itself (``dst`` must be ``float_tflite``).

    Args:
        strict: raise when the variant is outside its tolerance. The builder passes ``False`` for
            quantised variants: their agreement is recorded and the accuracy gate (which repeats
            the tolerance check) rejects them, so one bad int8 model does not stop the build.

    Raises:
        ExportStepError: the conversion failed, the file does not run, or (``strict``) the
            outputs disagree with ``reference`` beyond the target's tolerance.
    """
    name = model_name or Path(float_tflite).stem

    @export_step(key)
    def step(src, out):
        if key == "tflite_fp32":
            return Path(src)
        return quantize_tflite(src, out, key, calibration, options, qsvs=qsvs, model_name=name)

    result = step(float_tflite, dst, check_feeds=check_feeds)
    if not strict:
        return result, check_agreement(reference, result.outputs, result.target.tolerance)
    return result, check_variant(result, reference, name)


def tflite_card(template, tflite_path: str | Path, key: str, **changes):
    """The model card of a TFLite variant, derived from its source's card.

    Preprocessing, labels, licence and thresholds come from ``template``; shapes and the
    quantisation (scale, zero point) of integer I/O come from the file. Inputs stay ``float32``
    in the card: the LiteRT engine quantises float feeds and dequantises integer outputs itself.
    ``provenance`` records the variant, its I/O dtype and the converter versions; ``macs`` is
    counted from the file.

    Args:
        template: the source model's :class:`~edge.cards.ModelCard`.
        tflite_path: the variant file (the card's ``file`` is its name).
        key: the variant's target key (e.g. ``tflite_int8``).
        **changes: card fields to override (a ``provenance`` dict is merged).

    Raises:
        ExportError: the file's input/output count differs from the template's.
    """
    import dataclasses

    from edge.cards import OutputSpec, Quantization
    from edge.engines import load_engine
    from export.onnx.from_torch import derived_card

    p = Path(tflite_path)
    with load_engine(p, backend="litert", threads=1) as eng:
        ins, outs = eng.inputs, eng.outputs
    if len(ins) != len(template.inputs) or len(outs) != len(template.outputs):
        raise ExportError(f"{p.name}: {len(ins)} input(s)/{len(outs)} output(s), but card {template.name!r} "
                          f"describes {len(template.inputs)}/{len(template.outputs)}")

    def quant(t):
        return Quantization(float(t.quantization[0]), int(t.quantization[1])) if t.quantization else None

    inputs = tuple(dataclasses.replace(s, name=t.name, shape=tuple(t.shape), dtype="float32", quantization=quant(t))
                   for s, t in zip(template.inputs, ins))
    outputs = tuple(dataclasses.replace(s, name=t.name, shape=tuple(t.shape), quantization=quant(t))
                    if isinstance(s, OutputSpec) else s for s, t in zip(template.outputs, outs))
    target = get_target(key)
    return derived_card(template, p, format="tflite", inputs=inputs, outputs=outputs,
                        made_by={"variant": key, "io_dtype": target.io_dtype, "converter": converter_versions()},
                        describe=f"{target.description} (from {template.name}).", **changes)
