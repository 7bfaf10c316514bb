"""The :class:`Engine` protocol every inference backend implements.

Engines move raw tensors only. Pre- and post-processing live in pure-numpy modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one model input or output.

    ``shape`` entries are ints or ``None`` for dynamic dimensions. ``quantization`` is
    ``(scale, zero_point)`` for a quantised TFLite tensor, else ``None``; engines quantise and
    dequantise such tensors themselves, so callers always see ``float32``; ``storage`` is then
    the tensor's own dtype in the file (``uint8``/``int8``).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    quantization: tuple[float, int] | None = None
    storage: np.dtype | None = None


@runtime_checkable
class Engine(Protocol):
    """A loaded model that runs feeds to outputs.

    Example:
        >>> with load_engine("model.onnx", threads=2) as eng:       # doctest: +SKIP
        ...     out = eng.run({eng.inputs[0].name: x})
    """

    backend: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc) -> None: ...


class EngineBase:
    """Shared helpers: context manager and feed validation."""

    backend = "base"
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        from edge.errors import EngineError

        names = {t.name for t in self.inputs}
        missing = names - set(feeds)
        extra = set(feeds) - names
        if missing or extra:
            raise EngineError(
                f"{self.backend}: feeds {sorted(feeds)} do not match the model inputs {sorted(names)}"
                + (f"; missing {sorted(missing)}" if missing else "")
                + (f"; unknown {sorted(extra)}" if extra else "")
            )
        for t in self.inputs:
            x = feeds[t.name]
            if not isinstance(x, np.ndarray):
                raise EngineError(f"{self.backend}: input {t.name!r} must be a numpy array")
            if len(t.shape) != x.ndim or any(d is not None and d != s for d, s in zip(t.shape, x.shape)):
                want = "×".join("?" if d is None else str(d) for d in t.shape)
                raise EngineError(
                    f"{self.backend}: input {t.name!r} expects shape {want}, got {'×'.join(map(str, x.shape))}"
                )
