"""ONNX int8 (static QDQ) and fp16 variants.

:func:`quantize_onnx_int8` is onnxruntime's ``quantize_static`` behind one typed options
dataclass (:class:`QuantOptions`) instead of an ``extra_options`` dict of magic strings: paths
in and out, an enum per choice, ``ValueError`` on an illegal combination, an
:class:`~export.variants.ExportStepError` naming the model and the step when onnxruntime fails.

Calibration is the expensive part (every activation of every calibration image). Pass
``calibration_cache=`` to keep the ranges in a JSON file: the fallback loop
(:mod:`export.quant.fallback`) re-quantises with more layers in float many times and calibrates once.

Example:
    >>> reader = ImageFolderReader(files, card)                                      # doctest: +SKIP
    >>> quantize_onnx_int8("m_fp32.onnx", "m_int8.onnx", reader,
    ...                    QuantOptions(calibration=CalibrationMethod.PERCENTILE))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from export.quant.adaround import AdaRoundOptions
from export.variants import ExportStepError

log = logging.getLogger(__name__)

__all__ = ["CalibrationMethod", "QuantType", "QuantOptions", "DEFAULT_PERCENTILE", "quantize_onnx_int8",
           "convert_onnx_fp16", "quantizable_op_types"]

#: Percentile of |activation| kept by PERCENTILE calibration when none is given.
DEFAULT_PERCENTILE = 99.99
#: Histogram bins for ENTROPY calibration (TensorRT uses 2048; 512 keeps the O(bins²) KL search
#: to seconds). onnxruntime's default, 128 bins for
#: 128 quantised bins, leaves the KL search one candidate — the full range, i.e. MinMax — and
#: quantize_static does not pass a bin count through, so the ranges are computed here.
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128
STEP_INT8 = "onnx_int8"
STEP_FP16 = "onnx_fp16"


class CalibrationMethod(str, enum.Enum):
    """How each activation's range is chosen from the calibration data."""

    MINMAX = "minmax"  # the observed min and max: no clipping, coarse steps when there are outliers
    ENTROPY = "entropy"  # the range minimising the KL divergence of a 2048-bin histogram (TensorRT's)
    PERCENTILE = "percentile"  # clip |x| at a percentile of its histogram


class QuantType(str, enum.Enum):
    """8-bit integer type of a quantised tensor."""

    INT8 = "int8"
    UINT8 = "uint8"


def quantizable_op_types() -> frozenset[str]:
    """Operator types onnxruntime's QDQ quantiser knows how to quantise."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QLinearOpsRegistry) | frozenset(QDQRegistry)


@dataclass(frozen=True)
class QuantOptions:
    """Options of :func:`quantize_onnx_int8`.

    Attributes:
        calibration: how activation ranges are chosen.
        per_channel: one weight scale per output channel (needs opset >= 13).
        activation_type / weight_type: 8-bit types. Int8 activations with uint8 weights is not
            a combination onnxruntime can run. Default U8S8: measured here (AVX512-VNNI,
            onnxruntime 1.32) 1.3-2.3x faster than S8S8 on MobileFaceNet and YuNet, same accuracy.
        nodes_to_exclude: node names left in float (the fallback's output).
        op_types: operator types to quantise; ``None``: every type onnxruntime can.
        percentile: the percentile for ``PERCENTILE`` calibration (default
            :data:`DEFAULT_PERCENTILE`); setting it with another method is an error.
        reduce_range: 7-bit weights (only helps on x86 CPUs without VNNI).
        symmetric_activations: zero point 0 for every activation.
        bias_correction: subtract each layer's mean output shift caused by rounding its weights
            (:mod:`export.quant.bias_correction`; one extra quantisation pass, ranges reused).
        adaround: choose each weight's rounding (down or up) to minimise its layer's output error
            on the calibration data (:mod:`export.quant.adaround`) instead of rounding to nearest;
            ``None``: round to nearest. Needs a calibration reader (not a cache alone).

    Raises:
        ValueError: an illegal combination (the message says which).
    """

    calibration: CalibrationMethod = CalibrationMethod.MINMAX
    per_channel: bool = True
    activation_type: QuantType = QuantType.UINT8
    weight_type: QuantType = QuantType.INT8
    nodes_to_exclude: tuple[str, ...] = ()
    op_types: tuple[str, ...] | None = None
    percentile: float | None = None
    reduce_range: bool = False
    symmetric_activations: bool = False
    bias_correction: bool = True
    adaround: AdaRoundOptions | None = None

    def __post_init__(self) -> None:
        if self.adaround is not None and not isinstance(self.adaround, AdaRoundOptions):
            raise ValueError(f"QuantOptions.adaround must be an AdaRoundOptions or None, got {self.adaround!r}")
        for fname, enum_cls in (("calibration", CalibrationMethod), ("activation_type", QuantType),
                                ("weight_type", QuantType)):
            value = getattr(self, fname)
            if not isinstance(value, enum_cls):
                try:
                    object.__setattr__(self, fname, enum_cls(value))
                except ValueError:
                    valid = ", ".join(m.value for m in enum_cls)
                    raise ValueError(f"QuantOptions.{fname} must be one of {valid}, got {value!r}") from None
        if self.activation_type is QuantType.INT8 and self.weight_type is QuantType.UINT8:
            raise ValueError("QuantOptions: int8 activations with uint8 weights is not supported by onnxruntime "
                             "(use int8 weights, or uint8 activations)")
        if self.percentile is not None:
            if self.calibration is not CalibrationMethod.PERCENTILE:
                raise ValueError(f"QuantOptions.percentile applies to PERCENTILE calibration only, "
                                 f"not {self.calibration.name}")
            if not 0.0 < float(self.percentile) <= 100.0:
                raise ValueError(f"QuantOptions.percentile must be in (0, 100], got {self.percentile}")
        if isinstance(self.nodes_to_exclude, str):
            raise ValueError("QuantOptions.nodes_to_exclude must be a tuple of node names, not a string")
        object.__setattr__(self, "nodes_to_exclude", tuple(self.nodes_to_exclude))
        if self.op_types is not None:
            if isinstance(self.op_types, str):
                raise ValueError("QuantOptions.op_types must be a tuple of operator types, not a string")
            ops = tuple(self.op_types)
            if not ops:
                raise ValueError("QuantOptions.op_types is empty: nothing would be quantised (use None for all)")
            unknown = sorted(set(ops) - quantizable_op_types())
            if unknown:
                raise ValueError(f"QuantOptions.op_types: onnxruntime cannot quantise {', '.join(unknown)} "
                                 f"(quantisable: {', '.join(sorted(quantizable_op_types()))})")
            object.__setattr__(self, "op_types", ops)

    @property
    def effective_percentile(self) -> float | None:
        if self.calibration is not CalibrationMethod.PERCENTILE:
            return None
        return float(self.percentile if self.percentile is not None else DEFAULT_PERCENTILE)

    def describe(self) -> dict:
        """JSON-ready summary for reports."""
        return {"format": "QDQ", "calibration": self.calibration.value, "percentile": self.effective_percentile,
                "per_channel": self.per_channel, "activation_type": self.activation_type.value,
                "weight_type": self.weight_type.value, "reduce_range": self.reduce_range,
                "symmetric_activations": self.symmetric_activations, "bias_correction": self.bias_correction,
                "adaround": dataclasses.asdict(self.adaround) if self.adaround is not None else None,
                "op_types": list(self.op_types) if self.op_types else "all",
                "nodes_to_exclude": list(self.nodes_to_exclude)}


def _ort_enums(options: QuantOptions):
    from onnxruntime.quantization import CalibrationMethod as OrtCal
    from onnxruntime.quantization import QuantType as OrtType

    cal = {CalibrationMethod.MINMAX: OrtCal.MinMax, CalibrationMethod.ENTROPY: OrtCal.Entropy,
           CalibrationMethod.PERCENTILE: OrtCal.Percentile}[options.calibration]
    types = {QuantType.INT8: OrtType.QInt8, QuantType.UINT8: OrtType.QUInt8}
    return cal, types[options.activation_type], types[options.weight_type]


def _check_model(model, options: QuantOptions, name: str) -> None:
    from export.onnx.prep import MIN_QDQ_OPSET, default_opset

    opset = default_opset(model)
    if options.per_channel and opset < MIN_QDQ_OPSET:
        raise ValueError(f"{name}: per-channel quantisation needs opset >= {MIN_QDQ_OPSET} (DequantizeLinear "
                         f"axis), the model is opset {opset}: run export.onnx.prep.prepare_onnx first")
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv"}:
        raise ValueError(f"{name}: the model is already quantised (it has QuantizeLinear/DequantizeLinear nodes); "
                         "quantise its float source")
    names = {n.name for n in model.graph.node}
    unknown = [n for n in options.nodes_to_exclude if n not in names]
    if unknown:
        raise ValueError(f"{name}: nodes_to_exclude names node(s) the model does not have: "
                         f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}")


class _DropPreprocessHint(logging.Filter):
    """onnxruntime asks on the root logger for its pre-processing, which export.onnx.prep has done."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider")


@contextlib.contextmanager
def _quiet_ort():
    """Silence onnxruntime's calibration chatter (print() to stdout, a root-logger hint)."""
    root = logging.getLogger()
    hint = _DropPreprocessHint()
    root.addFilter(hint)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(hint)


def _entropy_ranges(src: Path, reader, options: QuantOptions, cache: Path, name: str) -> None:
    """Calibrate with :data:`ENTROPY_BINS` histogram bins and write the ranges to ``cache``."""
    from onnxruntime.quantization import CalibrationMethod as OrtCal
    from onnxruntime.quantization import save_tensors_data
    from onnxruntime.quantization.calibrate import create_calibrator

    with tempfile.TemporaryDirectory(prefix="edgesight-entropy-") as tmp:
        try:
            cal = create_calibrator(src, list(options.op_types) if options.op_types else None,
                                    augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                    calibrate_method=OrtCal.Entropy,
                                    extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS,
                                                   "symmetric": options.symmetric_activations})
            with _quiet_ort():
                cal.collect_data(reader)
                save_tensors_data(cal.compute_data(), cache)
        except Exception as e:
            raise ExportStepError(name, STEP_INT8, f"entropy calibration failed: {type(e).__name__}: {e}") from e


def _quantize_static(src: Path, dst: Path, reader, options: QuantOptions, cache: Path, name: str) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    if options.calibration is CalibrationMethod.ENTROPY and not cache.is_file():
        _entropy_ranges(src, reader, options, cache, name)
        if hasattr(reader, "rewind"):
            reader.rewind()
    cal, act, wt = _ort_enums(options)
    extra = {"ActivationSymmetric": options.symmetric_activations}
    if options.effective_percentile is not None:
        extra["CalibPercentile"] = options.effective_percentile
    try:
        with _quiet_ort():
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(options.op_types) if options.op_types else None,
                            per_channel=options.per_channel, reduce_range=options.reduce_range,
                            activation_type=act, weight_type=wt,
                            nodes_to_exclude=list(options.nodes_to_exclude) or None, calibrate_method=cal,
                            extra_options=extra, calibration_cache_path=str(cache))
    except Exception as e:  # onnxruntime raises ValueError/RuntimeError/its own types from deep inside
        raise ExportStepError(name, STEP_INT8, f"onnxruntime quantize_static failed: {type(e).__name__}: {e}") from e


def _patch(path: Path, ints: dict, name: str) -> None:
    import onnx

    from export.quant.adaround import apply_rounding

    try:
        onnx.save(apply_rounding(onnx.load(str(path)), ints), str(path))
    except ValueError as e:
        raise ExportStepError(name, STEP_INT8, f"adaround: {e}") from e


def _adaround(src: Path, quantised: Path, reader, options: QuantOptions, name: str) -> dict:
    """Choose the weights' rounding on the calibration data and write it into ``quantised``."""
    from export.quant.adaround import adaround_weights

    try:
        ints, stats = adaround_weights(src, quantised, reader, options.adaround)
    except Exception as e:
        raise ExportStepError(name, STEP_INT8, f"adaround failed: {type(e).__name__}: {e}") from e
    _patch(quantised, ints, name)
    done = [s for s in stats if not s.skipped]
    log.info("%s: adaround: %d of %d layer(s) optimised, %d changed; output error %.4g -> %.4g", name, len(done),
             len(stats), len(ints), sum(s.error_nearest for s in done), sum(s.error_adaround for s in done))
    return ints


def quantize_onnx_int8(src: str | Path, dst: str | Path, reader, options: QuantOptions = QuantOptions(), *,
                       calibration_cache: str | Path | None = None, model_name: str | None = None) -> Path:
    """Statically quantise an fp32 ONNX model to int8 QDQ.

    Args:
        src: the prepared fp32 model (:func:`export.onnx.prep.prepare_onnx`).
        dst: output ``.onnx`` (written to a temporary name and renamed).
        reader: a calibration data reader (``get_next() -> feeds | None``, e.g.
            :class:`export.quant.calibration.ImageFolderReader`); rewound first when it can be. May
            be ``None`` when ``calibration_cache`` already exists.
        options: typed quantisation options.
        calibration_cache: JSON file of activation ranges: read when it exists (no calibration
            run), written after calibrating otherwise.
        model_name: used in messages (default: the file stem).

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: illegal options for this model (opset too old for per-channel, unknown
            node names, an already-quantised model, no reader and no cache).
        ExportStepError: onnxruntime failed to calibrate or quantise (step ``onnx_int8``).
    """
    import onnx

    src, out = Path(src), Path(dst)
    name = model_name or src.stem
    try:
        model = onnx.load(str(src))
    except Exception as e:
        raise ExportStepError(name, STEP_INT8, f"cannot read {src}: {e}") from e
    _check_model(model, options, name)
    cache = Path(calibration_cache) if calibration_cache is not None else None
    if reader is None and (cache is None or not cache.is_file()):
        raise ValueError(f"{name}: quantize_onnx_int8 needs a calibration reader (or an existing calibration cache)")
    if reader is None and options.adaround is not None:
        raise ValueError(f"{name}: QuantOptions.adaround needs a calibration reader (a calibration cache holds "
                         "ranges, not the activations the rounding is chosen on)")
    if reader is not None and not hasattr(reader, "feeds"):  # a plain get_next() reader: read it once
        from export.quant.calibration import FeedReader

        reader = FeedReader.from_feeds(list(iter(reader.get_next, None)), model_name=name)
    if reader is not None and hasattr(reader, "rewind"):
        reader.rewind()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"edgesight-q-{out.stem}-", dir=out.parent) as work:
        if cache is None:  # bias correction quantises twice: calibrate once
            cache = Path(work) / "calibration.json"
        tmp = Path(work) / "model.onnx"
        _quantize_static(src, tmp, reader, options, cache, name)
        ints = _adaround(src, tmp, reader, options, name) if options.adaround is not None else {}
        if options.bias_correction:
            from export.quant.bias_correction import bias_corrected_model

            try:  # with AdaRound, the shift of its rounding (the patched integers) is what is corrected
                corrected, n = bias_corrected_model(src, tmp, reader)
            except Exception as e:
                raise ExportStepError(name, STEP_INT8, f"bias correction failed: {type(e).__name__}: {e}") from e
            if n:
                fixed = Path(work) / "float_bias_corrected.onnx"
                onnx.save(corrected, str(fixed))
                _quantize_static(fixed, tmp, None, options, cache, name)
                if ints:  # same float weights, so the same scales: the chosen integers go back in
                    _patch(tmp, ints, name)
        os.replace(tmp, out)
    log.info("%s: int8 QDQ (%s%s, %d node(s) float) -> %s", name, options.calibration.value,
             ", per-channel" if options.per_channel else "", len(options.nodes_to_exclude), out.name)
    return out


def convert_onnx_fp16(src: str | Path, dst: str | Path, keep_io_types: bool = True, *,
                      op_block_list: tuple[str, ...] | None = None, model_name: str | None = None) -> Path:
    """Convert an fp32 ONNX model to fp16 weights and arithmetic.

    Uses ``onnxruntime.transformers.float16`` (shipped with onnxruntime; the same code as
    onnxconverter-common's converter), so no extra package is needed.

    Args:
        src: fp32 ``.onnx``.
        dst: output ``.onnx``.
        keep_io_types: keep float32 graph inputs/outputs (casts are inserted inside), so the
            caller feeds and reads float32 as for the fp32 model.
        op_block_list: operator types kept in fp32 (default: the converter's own list).
        model_name: used in messages.

    Raises:
        ExportStepError: the conversion failed (step ``onnx_fp16``).
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src, out = Path(src), Path(dst)
    name = model_name or src.stem
    try:
        model = onnx.load(str(src))
        blocked = list(op_block_list) if op_block_list is not None else list(DEFAULT_OP_BLOCK_LIST)
        m16 = convert_float_to_float16(model, keep_io_types=keep_io_types, op_block_list=blocked)
    except Exception as e:
        raise ExportStepError(name, STEP_FP16, f"fp16 conversion failed: {type(e).__name__}: {e}") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    onnx.save(m16, str(tmp))
    os.replace(tmp, out)
    return out
