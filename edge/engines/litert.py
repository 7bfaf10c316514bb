"""LiteRT (TensorFlow Lite) backend: ``ai-edge-litert`` first, ``tflite_runtime`` as fallback.

``tflite-runtime`` 2.14, its last release, silently returns zeros for some newer quantised
models under numpy 2, which is why it is only the fallback.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import numpy as np

from edge.engines.base import EngineBase, TensorInfo
from edge.errors import EngineError

log = logging.getLogger(__name__)

#: Interpreters kept per input shape for a model of free height/width. The face tracker searches
#: regions of a few sizes (a 32-px grid); making an interpreter for a new shape costs 1–5 ms with
#: YuNet, about as much as running it. 8 kept: on benchmarks/face_speed.py's stream (8 people,
#: 23 region shapes) median detection 3.7 ms vs 4.3 ms with 4 (16: 3.4 ms); a YuNet int8
#: interpreter at 640×480 holds about 2 MB.
SHAPE_CACHE = 8


def _import_interpreter():
    """Return ``(Interpreter class, module name)``, preferring ai-edge-litert."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite_runtime"
    except ImportError as e:
        raise ImportError(
            "the litert backend needs ai-edge-litert: pip install 'edgesight[litert]' "
            "(or 'edgesight[tflite-legacy]' for tflite-runtime on old images)"
        ) from e


def _quant(detail) -> tuple[float, int] | None:
    scale, zp = detail.get("quantization", (0.0, 0))
    if detail["dtype"] in (np.uint8, np.int8, np.int16) and scale:
        return float(scale), int(zp)
    return None


class LiteRTEngine(EngineBase):
    """Run a ``.tflite`` model with the LiteRT interpreter (XNNPACK on CPU).

    Args:
        path: the ``.tflite`` file.
        threads: XNNPACK / interpreter threads (``None``: the runtime's default).
        raw_io: when True, quantised inputs and outputs are passed through as integers; by
            default float inputs are quantised and integer outputs dequantised with each
            tensor's scale and zero point, so callers always see float32.

    Inputs already in the tensor's integer dtype (e.g. ``uint8`` pixels for a coral model)
    are fed unchanged. A model whose inputs have free dimensions (shape signature ``-1``) runs at
    the shape it is fed; up to :data:`SHAPE_CACHE` interpreters, one per input shape, stay ready.
    """

    backend = "litert"

    def __init__(self, path: str | Path, *, threads: int | None = None, raw_io: bool = False) -> None:
        Interpreter, self.runtime = _import_interpreter()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        try:
            self._it = Interpreter(model_path=str(self.path), num_threads=threads)
            self._it.allocate_tensors()
        except Exception as e:
            raise EngineError(f"LiteRT could not load {self.path}: {e}") from e
        self.threads = threads
        self.raw_io = raw_io
        self._Interpreter = Interpreter
        self._in = self._it.get_input_details()
        self._by_shape: OrderedDict[tuple, object] = OrderedDict({self._shapes(self._in): self._it})
        self._out = self._it.get_output_details()

        def info(d):
            q = _quant(d)
            dtype = np.dtype(d["dtype"]) if (raw_io or q is None) else np.dtype(np.float32)
            shape = tuple(int(s) if s >= 0 else None for s in d.get("shape_signature", d["shape"]))
            return TensorInfo(d["name"], shape, dtype, q, np.dtype(d["dtype"]))

        self.inputs = [info(d) for d in self._in]
        self.outputs = [info(d) for d in self._out]

    @staticmethod
    def _shapes(details) -> tuple:
        return tuple(tuple(int(v) for v in d["shape"]) for d in details)

    def _interpreter_for(self, shapes: tuple):
        """The interpreter allocated for these input shapes (made, or the least recently used replaced)."""
        it = self._by_shape.get(shapes)
        if it is not None:
            self._by_shape.move_to_end(shapes)
            return it
        try:
            it = self._Interpreter(model_path=str(self.path), num_threads=self.threads)
            for d, shape in zip(self._in, shapes):
                it.resize_tensor_input(d["index"], list(shape))
            it.allocate_tensors()
        except Exception as e:
            raise EngineError(f"LiteRT cannot run {self.path.name} at input shape(s) {list(shapes)}: {e}") from e
        self._by_shape[shapes] = it
        if len(self._by_shape) > SHAPE_CACHE:
            self._by_shape.popitem(last=False)
        return it

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_feeds(feeds)
        xs = []
        for d in self._in:
            x = np.asarray(feeds[d["name"]])
            want = np.dtype(d["dtype"])
            q = _quant(d)
            if x.dtype != want:
                if q is not None and np.issubdtype(x.dtype, np.floating):
                    info = np.iinfo(want)
                    x = np.clip(np.round(x / q[0] + q[1]), info.min, info.max).astype(want)
                else:
                    x = x.astype(want)
            xs.append(np.ascontiguousarray(x))
        self._it = self._interpreter_for(tuple(tuple(x.shape) for x in xs))
        for d, x in zip(self._in, xs):
            self._it.set_tensor(d["index"], x)
        try:
            self._it.invoke()
        except Exception as e:
            raise EngineError(f"LiteRT failed running {self.path.name}: {e}") from e
        out = {}
        for d in self._out:
            y = self._it.get_tensor(d["index"])
            q = _quant(d)
            if q is not None and not self.raw_io:
                y = (y.astype(np.float32) - q[1]) * q[0]
            else:
                y = y.copy()
            out[d["name"]] = y
        return out

    def close(self) -> None:
        self._it = None
        self._by_shape.clear()
