"""OpenCV DNN backend (optional, mainly for comparison with the dedicated runtimes)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from edge.engines.base import EngineBase, TensorInfo
from edge.errors import EngineError


class OpenCVEngine(EngineBase):
    """Run an ONNX (or TFLite, where OpenCV's importer supports it) model with ``cv2.dnn``.

    Args:
        path: model file.
        threads: ``cv2.setNumThreads`` value (process-wide in OpenCV).

    OpenCV's importer exposes neither input names nor shapes, so ``inputs`` carries dynamic
    dims unless ``input_shapes`` (name -> shape, e.g. from the model card) is given. A
    single-input model accepts its feed under any name.
    """

    backend = "opencv"

    def __init__(self, path: str | Path, *, threads: int | None = None,
                 input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
        self._given_names = list(input_shapes or {})
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        if threads is not None:
            cv2.setNumThreads(int(threads))
        data = self.path.read_bytes()
        try:
            if self.path.suffix.lower() == ".onnx":
                from edge.engines.onnx_wire import strip_weight_inputs

                data, _ = strip_weight_inputs(data)
                self._net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
            elif self.path.suffix.lower() == ".tflite":
                self._net = cv2.dnn.readNetFromTFLite(np.frombuffer(data, np.uint8))
            else:
                self._net = cv2.dnn.readNet(str(self.path))
        except cv2.error as e:
            raise EngineError(f"OpenCV DNN could not load {self.path}: {e}") from e
        self.threads = threads
        names = self._input_names()
        shapes = dict(input_shapes or {})
        self.inputs = [TensorInfo(n, tuple(shapes.get(n, (None, None, None, None))), np.dtype(np.float32))
                       for n in names]
        self._out_names = list(self._net.getUnconnectedOutLayersNames())
        self.outputs = [TensorInfo(n, (), np.dtype(np.float32)) for n in self._out_names]

    def _input_names(self) -> list[str]:
        # cv2.dnn.Net has no input-name accessor; names come from the caller (model card).
        return list(self._given_names) or ["input"]

    def _check_feeds(self, feeds) -> None:
        if len(feeds) != len(self.inputs):
            names = [t.name for t in self.inputs]
            raise EngineError(f"opencv: {len(feeds)} feeds given, the model takes {len(names)} ({names})")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_feeds(feeds)
        if len(feeds) == 1:
            self._net.setInput(np.ascontiguousarray(next(iter(feeds.values())), dtype=np.float32))
        else:
            for name, x in feeds.items():
                self._net.setInput(np.ascontiguousarray(x, dtype=np.float32), name)
        try:
            outs = self._net.forward(self._out_names)
        except cv2.error as e:
            raise EngineError(f"OpenCV DNN failed running {self.path.name}: {e}") from e
        return {n: np.asarray(o) for n, o in zip(self._out_names, outs)}

    def close(self) -> None:
        self._net = None
