"""The table of export targets, shared by the exporter, the gates and the bundle builder.

One row per artefact the tool-chain can produce (Ultralytics' ``export_formats()`` is the
precedent): its format, precision, quantisation scheme, file suffix, the ``edge`` backend that
loads it, the dtype of its inputs/outputs and the tolerance within which it must agree with its
source on real inputs. Adding a target is adding a row, not an ``elif``.

Every conversion step is wrapped by :func:`export_step`, which times the step, loads the
artefact with :func:`edge.engines.load_engine`, runs it on a real input, refuses an empty or
non-finite output and logs one line. A converter that "succeeds" with a broken file is caught
there (crash of the runtime, NaN) or by :func:`check_agreement` (wrong numbers).

Example:
    >>> t = get_target("onnx_int8")
    >>> t.format, t.precision, t.scheme
    (<Format.ONNX: 'onnx'>, <Precision.INT8: 'int8'>, <Scheme.STATIC_QDQ: 'static_qdq'>)
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from export.onnx.from_torch import ExportError

log = logging.getLogger(__name__)

__all__ = ["Precision", "Format", "Scheme", "Tolerance", "Target", "Agreement", "StepResult",
           "ExportStepError", "UserInputError", "export_formats", "get_target", "targets", "target_for_file",
           "check_agreement", "check_outputs", "export_step"]


class Precision(str, enum.Enum):
    """Numeric precision of a model's weights and arithmetic."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Format(str, enum.Enum):
    """File format; each is loaded by one ``edge`` backend (see :attr:`Target.backend`)."""

    ONNX = "onnx"
    TFLITE = "tflite"


class Scheme(str, enum.Enum):
    """How a variant was made from the float model."""

    FLOAT = "float"  # fp32 or fp16 weights and arithmetic, no integer tensors
    STATIC_QDQ = "static_qdq"  # ONNX QuantizeLinear/DequantizeLinear pairs, calibrated activations
    DYNAMIC_RANGE = "dynamic_range"  # TFLite: int8 weights, float activations quantised on the fly
    FULL_INTEGER = "full_integer"  # TFLite: int8 weights and activations, calibrated


@dataclass(frozen=True)
class Tolerance:
    """How closely an artefact must reproduce its source on the same real input.

    Both measures are taken per output tensor and the worst tensor counts:

    Attributes:
        min_cosine: cosine similarity of the flattened outputs (scale-free shape of the answer).
        max_rel_err: ``q-quantile of |source - artefact|, divided by max |source|`` (an element's
            error against the tensor's range).
        quantile: ``q`` above; 1.0 is the worst element. Reduced-precision rows use 0.999: a raw
            detector output holds thousands of background anchors whose box logits are never
            decoded, and fp16 moves a handful of them by a quarter of the range (YOLOX-Nano,
            with an unchanged mAP) — the accuracy gate judges those, this table catches a
            broken converter.
        atol: an output whose (quantile) absolute error is at most this passes whatever its
            cosine: a probability map that is ~0 everywhere (YuNet's stride-8 objectness on an
            image without small faces) has a meaningless direction, and int8 rounds it to 0.
    """

    min_cosine: float
    max_rel_err: float
    quantile: float = 1.0
    atol: float = 0.0


# Per-format tolerances, one table (why each number):
# - fp32 re-export or conversion: only summation order changes. 1e-4 of the range on 99.9 % of
#   the elements; the worst element is allowed more because XNNPACK's fused kernels change the
#   order of long sums (YOLOX-Nano TFLite fp32: max 2.1e-4 of the range, cosine 1.0, mAP identical).
# - fp16: 10-bit mantissa, errors compound over ~50 layers; 2e-2 of the range (99.9 % of the
#   elements), cosine 0.9995. Measured: MobileNetV2 5e-3, YuNet 1.6e-2 (worst element).
# - dynamic-range int8: int8 weights, float activations; per-channel weight error ~0.4 %.
# - static / full-integer int8: activations rounded to 1/255 of their calibrated range at every
#   layer. The tolerance is a sanity bound that catches a broken converter (a model answering
#   noise has cosine ~0 with its source); whether the variant is good enough is the accuracy
#   gate's job (export.gates.base), not this table's.
TOL_FP32 = Tolerance(min_cosine=0.99999, max_rel_err=1e-4, quantile=0.999, atol=1e-6)
TOL_FP16 = Tolerance(min_cosine=0.9995, max_rel_err=2e-2, quantile=0.999, atol=1e-3)
TOL_DYNAMIC_INT8 = Tolerance(min_cosine=0.99, max_rel_err=0.1, quantile=0.999, atol=1e-2)
TOL_STATIC_INT8 = Tolerance(min_cosine=0.95, max_rel_err=0.35, quantile=0.999, atol=2e-2)


@dataclass(frozen=True)
class Target:
    """One row of the export table.

    Attributes:
        key: stable identifier used on the command line, in file names and in reports.
        format / precision / scheme: what the artefact is.
        suffix: appended to the model name to make the file name (``name + suffix``).
        backend: the :data:`edge.engines.BACKENDS` name that loads it.
        io_dtype: dtype of the artefact's own input/output tensors (the LiteRT engine converts
            int8/uint8 I/O to and from float32 with each tensor's scale and zero point).
        calibrated: needs a calibration data reader.
        tolerance: agreement with the float source on real inputs (:func:`check_agreement`).
        description: one line for help texts and reports.
    """

    key: str
    format: Format
    precision: Precision
    scheme: Scheme
    suffix: str
    backend: str
    io_dtype: str
    calibrated: bool
    tolerance: Tolerance
    description: str

    def filename(self, model_name: str) -> str:
        return f"{model_name}{self.suffix}"


_TABLE: tuple[Target, ...] = (
    Target("onnx_fp32", Format.ONNX, Precision.FP32, Scheme.FLOAT, "_fp32.onnx", "onnxruntime", "float32",
           False, TOL_FP32, "ONNX float32 (weight inputs stripped, opset >= 13, optional rewrites)"),
    Target("onnx_fp16", Format.ONNX, Precision.FP16, Scheme.FLOAT, "_fp16.onnx", "onnxruntime", "float32",
           False, TOL_FP16, "ONNX float16 weights and arithmetic, float32 inputs/outputs"),
    Target("onnx_int8", Format.ONNX, Precision.INT8, Scheme.STATIC_QDQ, "_int8.onnx", "onnxruntime", "float32",
           True, TOL_STATIC_INT8, "ONNX static int8 QDQ, per-channel weights, calibrated activations"),
    Target("tflite_fp32", Format.TFLITE, Precision.FP32, Scheme.FLOAT, "_fp32.tflite", "litert", "float32",
           False, TOL_FP32, "TFLite float32"),
    Target("tflite_fp16", Format.TFLITE, Precision.FP16, Scheme.FLOAT, "_fp16.tflite", "litert", "float32",
           False, TOL_FP16, "TFLite float16 weights (computed in fp32 or fp16 by the delegate)"),
    Target("tflite_int8_dynamic", Format.TFLITE, Precision.INT8, Scheme.DYNAMIC_RANGE, "_int8_dynamic.tflite",
           "litert", "float32", False, TOL_DYNAMIC_INT8, "TFLite dynamic-range int8 (int8 weights, float I/O)"),
    Target("tflite_int8", Format.TFLITE, Precision.INT8, Scheme.FULL_INTEGER, "_int8.tflite", "litert", "int8",
           True, TOL_STATIC_INT8, "TFLite full-integer int8, int8 inputs/outputs"),
    Target("tflite_int8_uint8io", Format.TFLITE, Precision.INT8, Scheme.FULL_INTEGER, "_int8_uint8io.tflite",
           "litert", "uint8", True, TOL_STATIC_INT8, "TFLite full-integer int8, uint8 inputs/outputs"),
)


def export_formats() -> tuple[Target, ...]:
    """Every export target, in a stable order (ONNX first, then TFLite; float before int8)."""
    return _TABLE


def targets(format: Format | None = None, precision: Precision | None = None) -> tuple[Target, ...]:
    """The targets of one format and/or precision."""
    return tuple(t for t in _TABLE if (format is None or t.format is format)
                 and (precision is None or t.precision is precision))


def get_target(key: str) -> Target:
    """The target called ``key``.

    Raises:
        ValueError: unknown key (the message lists the valid ones).
    """
    for t in _TABLE:
        if t.key == key:
            return t
    raise ValueError(f"unknown export target {key!r}; valid: {', '.join(t.key for t in _TABLE)}")


def target_for_file(path: str | Path) -> Target:
    """The target whose suffix ends ``path``'s name (the longest matching suffix wins).

    Raises:
        ValueError: no target's suffix matches.
    """
    name = Path(path).name
    hits = sorted((t for t in _TABLE if name.endswith(t.suffix)), key=lambda t: -len(t.suffix))
    if not hits:
        raise ValueError(f"{name}: no export target has a matching suffix "
                         f"(known: {', '.join(t.suffix for t in _TABLE)})")
    return hits[0]


class UserInputError(ValueError):
    """A user source or data set that cannot be used, naming the option/field and what was expected."""


class ExportStepError(ExportError):
    """A step of the export (prep, quantise, convert, check, gate) failed for one model.

    Attributes:
        model: model (or file) name.
        step: the step, e.g. ``"onnx_int8"`` or ``"calibration"``.
    """

    def __init__(self, model: str, step: str, message: str) -> None:
        self.model, self.step = model, step
        super().__init__(f"{model}: {step}: {message}")


@dataclass(frozen=True)
class Agreement:
    """How an artefact's outputs compare with its source's on one input (worst output tensor)."""

    cosine: float
    rel_err: float
    tolerance: Tolerance
    output: str  # name of the worst output
    abs_err: float = 0.0  # the quantile absolute error

    @property
    def passed(self) -> bool:
        t = self.tolerance
        return (self.cosine >= t.min_cosine and self.rel_err <= t.max_rel_err) or self.abs_err <= t.atol


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def check_agreement(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    tolerance: Tolerance) -> Agreement:
    """Compare two runs' outputs, matched by position (converters rename tensors).

    Args:
        reference: the source model's outputs.
        candidate: the artefact's outputs on the same input.
        tolerance: typically ``target.tolerance``.

    Returns:
        The worst output's :class:`Agreement` (check ``.passed``).

    Raises:
        ValueError: different numbers of outputs, or an output's element count differs.
    """
    ref, got = list(reference.items()), list(candidate.values())
    if len(ref) != len(got):
        raise ValueError(f"{len(got)} output(s), the source has {len(ref)}")
    if not ref:
        raise ValueError("no outputs to compare")
    results = []
    for (name, a), b in zip(ref, got):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if a.size != b.size:
            raise ValueError(f"output {name!r}: {b.size} elements, the source has {a.size}")
        scale = float(np.abs(a).max()) if a.size else 0.0
        err = np.abs(a.ravel() - b.ravel())
        diff = float(np.quantile(err, tolerance.quantile)) if a.size else 0.0
        rel = diff / scale if scale > 0 else diff
        results.append(Agreement(_cosine(a, b), rel, tolerance, name, diff))
    # The worst output: a failing one before a passing one, then the lowest cosine.
    return min(results, key=lambda ag: (ag.passed, ag.cosine))


def check_outputs(outputs: Mapping[str, np.ndarray], model: str, step: str) -> None:
    """Refuse an empty, all-constant-NaN or non-finite output.

    Raises:
        ExportStepError: naming the model, the step and the bad output.
    """
    if not outputs:
        raise ExportStepError(model, step, "the artefact produced no outputs")
    for name, y in outputs.items():
        y = np.asarray(y)
        if y.size == 0:
            raise ExportStepError(model, step, f"output {name!r} is empty (shape {y.shape})")
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
            bad = int(np.size(y) - np.isfinite(y).sum())
            raise ExportStepError(model, step, f"output {name!r} has {bad} NaN/inf value(s) of {y.size}")


@dataclass(frozen=True)
class StepResult:
    """What one export step produced (the decorated function's return value)."""

    target: Target
    path: Path
    seconds: float
    size: int
    outputs: dict  # the artefact's outputs on the check input (for agreement checks)


def export_step(key: str) -> Callable:
    """Decorate a conversion ``f(src, dst, *args, **kwargs) -> Path`` for target ``key``.

    The wrapped function takes one extra keyword-only argument, ``check_feeds``: a real input
    (``{input name: array}``, prepared with the model card) the artefact is run on after it is
    written. The wrapper times the step, loads the artefact with ``edge``'s engine for the
    target's backend, refuses an empty or non-finite output, logs, and returns a
    :class:`StepResult`. Any exception from the conversion itself becomes an
    :class:`ExportStepError` naming the model and the step.

    Example:
        >>> @export_step("onnx_fp16")
        ... def to_fp16(src, dst): ...
        >>> res = to_fp16("m_fp32.onnx", "m_fp16.onnx", check_feeds={"input": x})  # doctest: +SKIP
    """
    target = get_target(key)

    def deco(fn: Callable[..., Path]) -> Callable[..., StepResult]:
        @functools.wraps(fn)
        def wrapper(src, dst, *args, check_feeds: Mapping[str, np.ndarray], **kwargs) -> StepResult:
            from edge.engines import load_engine

            model = Path(src).stem
            t0 = time.perf_counter()
            try:
                out = Path(fn(src, dst, *args, **kwargs))
            except ExportStepError:
                raise
            except Exception as e:  # a converter's own exception types are unknown: name the step
                raise ExportStepError(model, key, f"{type(e).__name__}: {e}") from e
            seconds = time.perf_counter() - t0
            if not out.is_file() or out.stat().st_size == 0:
                raise ExportStepError(model, key, f"the converter wrote no file (expected {out})")
            try:
                with load_engine(out, backend=target.backend, threads=1) as eng:
                    feeds = {i.name: f for i, f in zip(eng.inputs, check_feeds.values())}
                    outputs = eng.run(feeds)
            except Exception as e:
                raise ExportStepError(model, key, f"the artefact {out.name} does not run: {e}") from e
            check_outputs(outputs, model, key)
            size = out.stat().st_size
            log.info("%s: %s written in %.1f s (%.2f MB): %s", model, key, seconds, size / 1e6, out.name)
            return StepResult(target, out, seconds, size, dict(outputs))

        return wrapper

    return deco
