"""ONNX → PyTorch: rebuild an ONNX graph as a ``torch.nn.Module`` that litert-torch can convert.

This is the first half of the ONNX → TFLite route (see ``docs/tflite_route.md``). Every value
that ONNX passes as a tensor but that is really a shape or an index (Reshape's shape, Slice's
starts/ends, Resize's scales, Clip's bounds …) is folded into a Python value when the module is
built, so ``torch.export`` sees static shapes only. Weights and other float constants become
buffers. onnx2torch, the obvious alternative, keeps those values as tensors and reads them with
``.numpy()`` inside ``forward``, which ``torch.export`` refuses (YOLOX-Nano's Slice, YuNet's
Reshape) — and it imports torchvision, which does not import beside the CPU torch here.

Only the operators in :data:`OPS` are supported; anything else raises
:class:`UnsupportedOperatorError` naming the model, the node and the operator, at build time.

Example:
    >>> module = onnx_to_torch("detection/yolox_nano_416.onnx")        # doctest: +SKIP
    >>> module(torch.zeros(1, 3, 416, 416))[0].shape                     # doctest: +SKIP
    torch.Size([1, 3549, 85])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from export.onnx.from_torch import ExportError
from export.onnx.prep import strip_weight_inputs

__all__ = ["OPS", "UnsupportedOperatorError", "OnnxGraphModule", "onnx_to_torch", "load_onnx_model"]

#: ONNX's "up to the end" for Slice ends (INT64_MAX), clamped to the dimension.
_INT_MAX = 2**62


class UnsupportedOperatorError(ExportError):
    """The ONNX graph uses an operator (or an attribute value) the ONNX → PyTorch step cannot map."""


@dataclass(frozen=True)
class _Node:
    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict


class _Ctx:
    """What an operator implementation sees: its node, input tensors and folded constants."""

    def __init__(self, module: "OnnxGraphModule", node: _Node, env: dict) -> None:
        self.m, self.node, self.env = module, node, env

    @property
    def attrs(self) -> dict:
        return self.node.attrs

    def has(self, i: int) -> bool:
        return i < len(self.node.inputs) and self.node.inputs[i] != ""

    def t(self, i: int) -> torch.Tensor:
        name = self.node.inputs[i]
        if name in self.env:
            return self.env[name]
        return self.m.const_tensor(name)

    def c(self, i: int) -> np.ndarray:
        """Input ``i`` as a constant folded at build time (shapes, indices, scales)."""
        name = self.node.inputs[i]
        if name not in self.m.consts:
            raise UnsupportedOperatorError(
                f"{self.m.model_name}: ONNX→PyTorch step: {self.node.op} node {self.node.name!r} needs input "
                f"{i} ({name!r}) to be a constant, but it is computed at run time")
        return self.m.consts[name]


def _pads_2d(ctx: _Ctx, x: torch.Tensor, kernel: list[int], strides: list[int], dil: list[int]) -> tuple[list[int], bool]:
    """(pads as [top, left, bottom, right], symmetric?) including ``auto_pad``."""
    auto = ctx.attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dil):
            out = math.ceil(size / s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else big)
            pads_e.append(big if auto == "SAME_UPPER" else small)
        pads = pads_b + pads_e
    elif auto == "VALID":
        pads = [0] * (2 * len(kernel))
    else:
        pads = list(ctx.attrs.get("pads", [0] * (2 * len(kernel))))
    n = len(kernel)
    return pads, pads[:n] == pads[n:]


def _torch_pad(pads: list[int]) -> list[int]:
    # ONNX [b1, b2, e1, e2] → F.pad's last-dim-first (b2, e2, b1, e1)
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def _conv(ctx: _Ctx):
    x, w = ctx.t(0), ctx.t(1)
    b = ctx.t(2) if ctx.has(2) else None
    k = list(w.shape[2:])
    strides = list(ctx.attrs.get("strides", [1] * len(k)))
    dil = list(ctx.attrs.get("dilations", [1] * len(k)))
    pads, sym = _pads_2d(ctx, x, k, strides, dil)
    if len(k) != 2:
        raise UnsupportedOperatorError(f"{ctx.m.model_name}: ONNX→PyTorch step: Conv node {ctx.node.name!r} is "
                                       f"{len(k)}-D; only 2-D convolutions are supported")
    if not sym:
        x, pads = F.pad(x, _torch_pad(pads)), [0] * 4
    return F.conv2d(x, w, b, stride=strides, padding=pads[:2], dilation=dil, groups=ctx.attrs.get("group", 1))


def _pool(kind: str):
    def run(ctx: _Ctx):
        x = ctx.t(0)
        k = list(ctx.attrs["kernel_shape"])
        strides = list(ctx.attrs.get("strides", [1] * len(k)))
        pads, sym = _pads_2d(ctx, x, k, strides, [1] * len(k))
        ceil = bool(ctx.attrs.get("ceil_mode", 0))
        if not sym or any(p > kk // 2 for p, kk in zip(pads, k + k)):
            fill = float("-inf") if kind == "max" else 0.0
            x, pads = F.pad(x, _torch_pad(pads), value=fill), [0] * 4
        if kind == "max":
            return F.max_pool2d(x, k, strides, pads[:2], ceil_mode=ceil)
        return F.avg_pool2d(x, k, strides, pads[:2], ceil_mode=ceil,
                            count_include_pad=bool(ctx.attrs.get("count_include_pad", 0)))
    return run


def _resize(ctx: _Ctx):
    x = ctx.t(0)
    mode = ctx.attrs.get("mode", b"nearest").decode()
    ctm = ctx.attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
    sizes = ctx.c(3) if ctx.has(3) else None
    scales = ctx.c(2) if ctx.has(2) and ctx.c(2).size else None
    size = [int(s) for s in sizes[2:]] if sizes is not None and sizes.size else None
    if size is None:
        if scales is None:
            raise UnsupportedOperatorError(f"{ctx.m.model_name}: ONNX→PyTorch step: Resize node {ctx.node.name!r} has "
                                           f"neither scales nor sizes")
        size = [int(math.floor(d * float(s))) for d, s in zip(x.shape[2:], scales[2:])]
    if mode == "nearest":
        nearest = ctx.attrs.get("nearest_mode", b"round_prefer_floor").decode()
        if ctm == "asymmetric" and nearest == "floor":
            return F.interpolate(x, size=size, mode="nearest")
        if ctm in ("half_pixel", "pytorch_half_pixel") and nearest in ("round_prefer_ceil", "round_prefer_floor"):
            return F.interpolate(x, size=size, mode="nearest-exact")
    elif mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=ctm == "align_corners")
    raise UnsupportedOperatorError(f"{ctx.m.model_name}: ONNX→PyTorch step: Resize node {ctx.node.name!r}: mode "
                                   f"{mode!r} with coordinate_transformation_mode {ctm!r} is not supported")


def _slice(ctx: _Ctx):
    x = ctx.t(0)
    starts, ends = ctx.c(1).tolist(), ctx.c(2).tolist()
    axes = ctx.c(3).tolist() if ctx.has(3) else list(range(len(starts)))
    steps = ctx.c(4).tolist() if ctx.has(4) else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise UnsupportedOperatorError(f"{ctx.m.model_name}: ONNX→PyTorch step: Slice node {ctx.node.name!r} has "
                                           f"step {st}; only positive steps are supported")
        dim = x.shape[a]
        index[a] = slice(max(-dim, min(s, dim)), max(-dim, min(e, dim)), st)
    return x[tuple(index)]


def _reshape(ctx: _Ctx):
    x = ctx.t(0)
    shape = [int(s) for s in ctx.c(1).tolist()]
    if not ctx.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(ctx: _Ctx):
    x = ctx.t(0)
    axis = ctx.attrs.get("axis", 1) % max(x.dim(), 1)
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _gemm(ctx: _Ctx):
    a, b = ctx.t(0), ctx.t(1)
    if ctx.attrs.get("transA", 0):
        a = a.t()
    if not ctx.attrs.get("transB", 0):
        b = b.t()
    alpha, beta = ctx.attrs.get("alpha", 1.0), ctx.attrs.get("beta", 1.0)
    c = ctx.t(2) * beta if ctx.has(2) else None
    return F.linear(a * alpha if alpha != 1.0 else a, b, c)


def _batchnorm(ctx: _Ctx):
    return F.batch_norm(ctx.t(0), ctx.t(3), ctx.t(4), ctx.t(1), ctx.t(2), False, 0.0, ctx.attrs.get("epsilon", 1e-5))


def _prelu(ctx: _Ctx):
    """``x + (1 − slope) · relu(−x)``: PRelu without a stand-alone RELU.

    litert-torch lowers ``F.prelu`` to RELU, MUL(−1, fused RELU), MUL(slope), SUB. XNNPACK
    (ai-edge-litert 2.3) does not take an int8 RELU that is not fused into the op before it, so
    each PRelu ended an XNNPACK partition: full-integer SFace fell into 28 pieces and ran 3× slower
    than fp32. Here the only RELU is fused into MUL(−1), and full-integer SFace is one partition,
    1.95× faster than fp32 (docs/quantisation.md). Same function: for ``x ≥ 0`` the second term is
    0; for ``x < 0`` it is ``x − (1 − slope)·x = slope·x``.
    """
    x, slope = ctx.t(0), ctx.t(1)
    if slope.numel() in (1, x.shape[1]) and x.dim() >= 2:
        s = slope.reshape(1, -1, *([1] * (x.dim() - 2)))
        return x + F.relu(x * -1.0) * (1.0 - s)
    return torch.where(x >= 0, x, x * slope)


def _clip(ctx: _Ctx):
    lo = float(ctx.c(1)) if ctx.has(1) else ctx.attrs.get("min", None)
    hi = float(ctx.c(2)) if ctx.has(2) else ctx.attrs.get("max", None)
    return torch.clamp(ctx.t(0), lo, hi)


def _softmax(ctx: _Ctx):
    return F.softmax(ctx.t(0), dim=ctx.attrs.get("axis", -1))


def _squeeze(ctx: _Ctx):
    axes = ctx.c(1).tolist() if ctx.has(1) else ctx.attrs.get("axes")
    x = ctx.t(0)
    if axes is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _unsqueeze(ctx: _Ctx):
    axes = ctx.c(1).tolist() if ctx.has(1) else ctx.attrs["axes"]
    x = ctx.t(0)
    for a in sorted(a % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(a)
    return x


def _binary(fn: Callable) -> Callable:
    return lambda ctx: fn(ctx.t(0), ctx.t(1))


def _unary(fn: Callable) -> Callable:
    return lambda ctx: fn(ctx.t(0))


#: ONNX operator → implementation. Each returns one tensor (all supported ops have one output).
OPS: dict[str, Callable[[_Ctx], torch.Tensor]] = {
    "Conv": _conv, "MaxPool": _pool("max"), "AveragePool": _pool("avg"), "Resize": _resize, "Slice": _slice,
    "Reshape": _reshape, "Flatten": _flatten, "Gemm": _gemm, "BatchNormalization": _batchnorm, "PRelu": _prelu,
    "Clip": _clip, "Softmax": _softmax, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _binary(torch.div),
    "MatMul": _binary(torch.matmul), "Max": _binary(torch.maximum), "Min": _binary(torch.minimum),
    "Relu": _unary(F.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh), "Exp": _unary(torch.exp),
    "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg), "Abs": _unary(torch.abs),
    "HardSwish": _unary(F.hardswish), "Identity": _unary(lambda x: x), "Dropout": _unary(lambda x: x),
    "LeakyRelu": lambda ctx: F.leaky_relu(ctx.t(0), ctx.attrs.get("alpha", 0.01)),
    "HardSigmoid": lambda ctx: torch.clamp(ctx.t(0) * ctx.attrs.get("alpha", 0.2) + ctx.attrs.get("beta", 0.5), 0, 1),
    "GlobalAveragePool": lambda ctx: ctx.t(0).mean(dim=(2, 3), keepdim=True),
    "Concat": lambda ctx: torch.cat([ctx.t(i) for i in range(len(ctx.node.inputs))], dim=ctx.attrs["axis"]),
    "Transpose": lambda ctx: ctx.t(0).permute(*(ctx.attrs.get("perm") or reversed(range(ctx.t(0).dim())))),
}


def load_onnx_model(src, model_name: str | None = None):
    """Load an ONNX file (or take a ModelProto) without weight inputs (see :func:`strip_weight_inputs`)."""
    import onnx

    if isinstance(src, (str, Path)):
        try:
            model = onnx.load(str(src))
        except Exception as e:  # noqa: BLE001 - onnx raises DecodeError, OSError, …
            raise ExportError(f"{model_name or src}: cannot read the ONNX file {src}: {e}") from e
    else:
        model = src
    strip_weight_inputs(model)
    return model


class OnnxGraphModule(nn.Module):
    """An ONNX graph run node by node in torch; constants folded, weights as buffers.

    Args:
        model: an ``onnx.ModelProto`` (weights embedded).
        model_name: used in error messages.

    Raises:
        UnsupportedOperatorError: an operator outside :data:`OPS`, or a non-constant shape input.
    """

    def __init__(self, model, model_name: str = "model") -> None:
        super().__init__()
        from onnx import numpy_helper
        from onnx.helper import get_attribute_value

        self.model_name = model_name
        g = model.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.input_names = [i.name for i in g.input]
        self.output_names = [o.name for o in g.output]
        self._buffer_of: dict[str, str] = {}
        nodes: list[_Node] = []
        unsupported: list[str] = []
        for i, n in enumerate(g.node):
            attrs = {a.name: get_attribute_value(a) for a in n.attribute}
            node = _Node(n.op_type, n.name or f"{n.op_type}_{i}", tuple(n.input), tuple(n.output), attrs)
            if n.domain not in ("", "ai.onnx"):
                unsupported.append(f"{n.domain}::{n.op_type} (node {node.name!r})")
                continue
            if n.op_type == "Constant":
                self.consts[n.output[0]] = self._constant_value(node, numpy_helper)
                continue
            if n.op_type not in OPS:
                unsupported.append(f"{n.op_type} (node {node.name!r})")
                continue
            if all(x == "" or x in self.consts for x in node.inputs):
                self._fold(node)  # e.g. SFace's Reshape of its dequantised weights
                continue
            nodes.append(node)
        if unsupported:
            raise UnsupportedOperatorError(
                f"{model_name}: ONNX→PyTorch step: unsupported operator(s): {', '.join(unsupported[:8])}"
                f"{' …' if len(unsupported) > 8 else ''}. Supported: {', '.join(sorted(OPS))}, Constant")
        self._nodes = nodes
        # Every constant becomes a (non-persistent) buffer now: torch.export lifts buffers as
        # constants, and registering them lazily inside forward() would happen while tracing.
        for i, (name, arr) in enumerate(self.consts.items()):
            t = torch.from_numpy(np.array(arr, copy=True))
            self.register_buffer(f"c{i}", t.float() if t.dtype == torch.float64 else t, persistent=False)
            self._buffer_of[name] = f"c{i}"

    def _fold(self, node: _Node) -> None:
        """Evaluate a node whose inputs are all constants now, so its output is a constant too."""
        env = {name: torch.from_numpy(np.array(self.consts[name], copy=True)) for name in node.inputs if name}
        with torch.no_grad():
            out = OPS[node.op](_Ctx(self, node, env))
        self.consts[node.outputs[0]] = out.numpy()

    def _constant_value(self, node: _Node, numpy_helper) -> np.ndarray:
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in node.attrs:
                v = node.attrs[key]
                return numpy_helper.to_array(v) if key == "value" else np.asarray(v)
        raise UnsupportedOperatorError(f"{self.model_name}: ONNX→PyTorch step: Constant node {node.name!r} has "
                                       f"no supported value attribute ({sorted(node.attrs)})")

    def const_tensor(self, name: str) -> torch.Tensor:
        """A constant (initialiser or Constant node) as its buffer tensor."""
        if name not in self._buffer_of:
            raise ExportError(f"{self.model_name}: ONNX→PyTorch step: tensor {name!r} is used before it is produced")
        return getattr(self, self._buffer_of[name])

    def forward(self, *inputs: torch.Tensor):
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs))
        for node in self._nodes:
            env[node.outputs[0]] = OPS[node.op](_Ctx(self, node, env))
        outs = tuple(env[n] if n in env else self.const_tensor(n) for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def onnx_to_torch(src, model_name: str | None = None) -> OnnxGraphModule:
    """Build a torch module computing the same function as an ONNX file.

    Args:
        src: ``.onnx`` path or ``onnx.ModelProto``.
        model_name: name used in error messages (default: the file stem).

    Raises:
        ExportError: the file cannot be read.
        UnsupportedOperatorError: an operator outside :data:`OPS`.
    """
    name = model_name or (Path(src).stem if isinstance(src, (str, Path)) else "model")
    return OnnxGraphModule(load_onnx_model(src, name), name).eval()
