"""Network definitions whose state dicts match upstream checkpoints, so no model zoo is needed."""

from export.sources.nets.mobilenet_v2 import (
    MobileNetV2,
    MobileNetV3,
    StateDictMismatchError,
    load_mobilenet_v2,
    load_state_dict_strict,
    mobilenet_v3_large,
    mobilenet_v3_small,
)

__all__ = ["MobileNetV2", "MobileNetV3", "StateDictMismatchError", "load_mobilenet_v2",
           "load_state_dict_strict", "mobilenet_v3_large", "mobilenet_v3_small"]
