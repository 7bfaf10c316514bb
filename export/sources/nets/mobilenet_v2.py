"""MobileNetV2 / V3 whose module names match torchvision's, so its checkpoints load strictly.

torchvision from PyPI does not import beside the CPU-only torch build on these machines
(``operator torchvision::nms does not exist``, see ``../shared/models/MANIFEST.md``), so the
architectures are re-declared here. Module names and shapes follow
``torchvision/models/mobilenetv2.py`` and ``mobilenetv3.py`` (``Conv2dNormActivation`` is a
``Sequential(conv, bn, act)``; inverted residuals keep their layers in ``.conv`` (V2) or
``.block`` (V3)).

Example:
    >>> model = load_mobilenet_v2("classification/mobilenet_v2_torchvision_b0353104.pth")  # doctest: +SKIP
    >>> model(torch.zeros(1, 3, 224, 224)).shape                                       # doctest: +SKIP
    torch.Size([1, 1000])
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

#: torchvision's MobileNetV2 blocks: expansion t, output channels c, repeats n, first stride s.
MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

#: torchvision's MobileNetV3 blocks: in, kernel, expanded, out, squeeze-excite, activation, stride.
MOBILENET_V3_SMALL = (
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
)
MOBILENET_V3_LARGE = (
    (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
)


class StateDictMismatchError(ValueError):
    """A checkpoint's keys or tensor shapes do not match the network definition."""


def _make_divisible(v: float, divisor: int = 8) -> int:
    # torchvision's rounding of channel counts (from the TF MobileNet reference code).
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvNormAct(nn.Sequential):
    """conv → BatchNorm → activation, named ``0``/``1``/``2`` like torchvision's ``Conv2dNormActivation``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 act: Callable[..., nn.Module] | None = nn.ReLU6) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                                   norm(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class InvertedResidualV2(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(cin, hidden, kernel=1))
        layers += [ConvNormAct(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _init_weights(model: nn.Module) -> None:
    # torchvision's initialisation, so random-weight models have sane activations.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetV2(nn.Module):
    """torchvision's ``mobilenet_v2`` (width 1.0): ``features.0..18``, ``classifier.1``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin, last = 32, 1280
        features: list[nn.Module] = [ConvNormAct(3, cin, stride=2)]
        for t, c, n, s in MOBILENET_V2_SETTING:
            for i in range(n):
                features.append(InvertedResidualV2(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(ConvNormAct(cin, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision's ``SqueezeExcitation`` with ``Hardsigmoid`` scale (MobileNetV3)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool, act: str, stride: int,
                 norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        act_layer = nn.Hardswish if act == "HS" else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvNormAct(cin, expanded, kernel=1, norm=norm, act=act_layer))
        layers.append(ConvNormAct(expanded, expanded, kernel, stride, groups=expanded, norm=norm, act=act_layer))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8)))
        layers.append(ConvNormAct(expanded, cout, kernel=1, norm=norm, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(nn.Module):
    """torchvision's ``MobileNetV3`` layout (``features``, ``avgpool``, ``classifier.0``/``.3``)."""

    def __init__(self, setting, last_channel: int, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        # torchvision uses eps=0.001, momentum=0.01 for V3 (TF-ported hyper-parameters).
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        first = setting[0][0]
        layers: list[nn.Module] = [ConvNormAct(3, first, stride=2, norm=norm, act=nn.Hardswish)]
        layers += [InvertedResidualV3(*row, norm=norm) for row in setting]
        last_in = setting[-1][3]
        layers.append(ConvNormAct(last_in, 6 * last_in, kernel=1, norm=norm, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """torchvision's ``mobilenet_v3_small`` architecture with random weights, in eval mode."""
    return MobileNetV3(MOBILENET_V3_SMALL, 1024, num_classes).eval()


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    """torchvision's ``mobilenet_v3_large`` architecture with random weights, in eval mode."""
    return MobileNetV3(MOBILENET_V3_LARGE, 1280, num_classes).eval()


def load_state_dict_strict(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the state dict at ``path`` into ``model`` strictly and return it in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StateDictMismatchError: missing / unexpected keys or mismatched shapes, naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a bad pickle
        raise StateDictMismatchError(f"{p}: cannot read as a torch state dict ({e})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise StateDictMismatchError(f"{p}: expected a state dict, got {type(state).__name__}")
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs {type(model).__name__} {tuple(v.shape)}"
              for k, v in want.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:3]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) e.g. {shapes[:3]}")
        raise StateDictMismatchError(f"{p}: state dict does not match {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_mobilenet_v2(path: str | Path, num_classes: int = 1000) -> MobileNetV2:
    """torchvision MobileNetV2 weights at ``path`` in a :class:`MobileNetV2`, eval mode.

    Raises:
        StateDictMismatchError: the file is not a matching MobileNetV2 state dict (names the file).
    """
    return load_state_dict_strict(MobileNetV2(num_classes), path)
