"""Tiny ONNX graphs built with onnx.helper for the quantisation and gate tests.

Each builder returns a ``ModelProto`` with one input ``input`` ``[1, 3, S, S]`` (pixels scaled
to 0..1 by the card, see :func:`tiny_card`) and one output ``logits``.
"""

from __future__ import annotations

import numpy as np

from edge.cards import InputSpec, Licence, ModelCard, OutputSpec, Source

SIZE = 32


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def tiny_card(name: str = "tiny", classes: int = 4, size: int = SIZE) -> ModelCard:
    """A classification card: RGB, pixels / 255, stretched to ``size``×``size``."""
    return ModelCard(name=name, task="classification", format="onnx", file=f"{name}.onnx", sha256="0" * 64,
                     licence=Licence("MIT"), source=Source(),
                     inputs=(InputSpec("input", (1, 3, size, size), color="RGB", mean=(0.0, 0.0, 0.0),
                                       std=(255.0, 255.0, 255.0)),),
                     outputs=(OutputSpec("logits", (1, classes)),))


def _model(nodes, inits, classes: int, opset: int, weights_as_inputs: bool = False, drop_inits: bool = False):
    onnx, TensorProto, helper, numpy_helper = _onnx()
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in tensors]
    graph = helper.make_graph(nodes, "tiny", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
                              initializer=[] if drop_inits else tensors)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def conv_net(opset: int = 13, *, prelu: bool = False, weights_as_inputs: bool = False, drop_inits: bool = False,
             seed: int = 0):
    """Conv 3→8 (3×3) → Relu or PRelu → Conv 8→4 (1×1) → GlobalAveragePool → Flatten."""
    _, _, helper, _ = _onnx()
    rng = np.random.default_rng(seed)
    inits = {"w1": rng.normal(0, 0.5, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
             "w2": rng.normal(0, 0.5, (4, 8, 1, 1)), "b2": rng.normal(0, 0.1, 4)}
    act = helper.make_node("Relu", ["h1"], ["a1"], name="act1")
    if prelu:
        inits["slope"] = rng.uniform(0.05, 0.3, (8, 1, 1))
        act = helper.make_node("PRelu", ["h1", "slope"], ["a1"], name="act1")
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["h1"], name="conv1", pads=[1, 1, 1, 1]), act,
             helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["h2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["logits"], name="flatten")]
    return _model(nodes, inits, 4, opset, weights_as_inputs, drop_inits)


def colour_net(zero_weights: bool = False):
    """4 classes: 0 never wins (bias −10), 1/2/3 = the dominant R/G/B channel.

    GlobalAveragePool → Flatten → Gemm. With ``zero_weights`` every weight and bias is 0: all
    logits equal, argmax 0 for every image — the "converter that succeeded with a broken
    model" a gate must catch.
    """
    _, _, helper, _ = _onnx()
    w = np.zeros((4, 3))
    w[1:, :] = 10.0 * np.eye(3)
    b = np.array([-10.0, 0.0, 0.0, 0.0])
    if zero_weights:
        w, b = np.zeros_like(w), np.zeros_like(b)
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w", "b"], ["logits"], name="fc", transB=1)]
    return _model(nodes, {"w": w, "b": b}, 4, 13)


HOSTILE_NODE = "hostile_conv"


def hostile_net(seed: int = 0):
    """A net whose node :data:`HOSTILE_NODE` cannot be quantised per channel.

    ``conv1`` (1×1, 3→8) makes channel 0 always 0 (zero weights, bias −1, then Relu). The
    hostile 1×1 conv (8→8) multiplies that dead channel by 50 in every output channel — no
    effect in float — and the 7 live channels by weights of ~0.05: per-channel int8 gives each
    output channel a scale of 50/127, and every useful weight rounds to 0. Kept float, the
    rest quantises well.
    """
    _, _, helper, _ = _onnx()
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1.0, (8, 3, 1, 1))
    w1[0] = 0.0
    b1 = rng.normal(0, 0.1, 8)
    b1[0] = -1.0
    w2 = rng.normal(0, 0.05, (8, 8, 1, 1))
    w2[:, 0] = 50.0
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": np.zeros(8), "w3": rng.normal(0, 1.0, (4, 8)), "b3": np.zeros(4)}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["h1"], name="conv1"),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], name=HOSTILE_NODE),
             helper.make_node("GlobalAveragePool", ["h2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1)]
    return _model(nodes, inits, 4, 13)


def save(model, path):
    onnx, *_ = _onnx()
    onnx.save(model, str(path))
    return path
