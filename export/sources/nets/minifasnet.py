"""MiniFASNetV2 and MiniFASNetV1SE, the passive anti-spoofing pair of Silent-Face-Anti-Spoofing.

Re-declared from the checkpoints' state-dict names and shapes (``module.``-prefixed keys) and the
MiniFASNet design (a channel-pruned MobileFaceNet): module names match the upstream
``src/model_lib/MiniFASNet.py`` of minivision-ai/Silent-Face-Anti-Spoofing, so the ``.pth``
files load with ``strict=True``.

Topology for an 80×80 input (spatial size after each stage):

- ``conv1`` 3×3/2 conv-BN-PReLU (40) → ``conv2_dw`` depthwise 3×3 conv-BN-PReLU (40)
- ``conv_23`` bottleneck /2 (20) → ``conv_3`` 4 residual bottlenecks
- ``conv_34`` bottleneck /2 (10) → ``conv_4`` 6 residual bottlenecks
- ``conv_45`` bottleneck /2 (5) → ``conv_5`` 2 residual bottlenecks
- ``conv_6_sep`` 1×1 conv-BN-PReLU to 512 → ``conv_6_dw`` depthwise 5×5 conv-BN (1×1)
- flatten → ``linear`` 512→128 (no bias) → ``bn`` (BatchNorm1d) → dropout → ``prob`` 128→3

A bottleneck (``Depth_Wise``) is 1×1 expand conv-BN-PReLU, depthwise 3×3 conv-BN-PReLU,
1×1 project conv-BN (linear), plus the input when residual. In the SE variant the last block of
each residual stage squeezes-and-excites its output (avg-pool, 1×1 conv to C/4, BN, ReLU,
1×1 conv to C, BN, sigmoid, multiply) before adding the shortcut.

Input: ``N×3×80×80`` float, BGR 0–255 (no normalisation). Output: 3 logits; after softmax
class 1 = live face (0 and 2 are spoof kinds).

Example:
    >>> net = load_minifasnet("antispoof/minifasnet_v2_scale2.7_80x80.pth")   # doctest: +SKIP
    >>> net(torch.zeros(1, 3, 80, 80)).shape                                   # doctest: +SKIP
    torch.Size([1, 3])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["MiniFASNet", "MiniFASNetSpec", "MINIFASNET_V2", "MINIFASNET_V1SE", "minifasnet_v2",
           "minifasnet_v1se", "load_minifasnet", "spec_from_state_dict", "INPUT_SIZE", "NUM_CLASSES",
           "LIVE_CLASS"]

#: Side of the square input crop the shared checkpoints were trained on.
INPUT_SIZE = 80
#: Output classes; index 1 is a live face.
NUM_CLASSES = 3
LIVE_CLASS = 1
#: Stem channels, stage output channels, head widths (shared by both checkpoints).
STEM_CHANNELS = 32
STAGE_CHANNELS = (64, 128, 128)  # outputs of conv_3, conv_4, conv_5
HEAD_CHANNELS = 512
EMBEDDING_SIZE = 128
#: SE bottleneck reduction of the V1SE checkpoint (64→16, 128→32).
SE_REDUCTION = 4
_STAGE_NAMES = (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5"))


@dataclass(frozen=True)
class MiniFASNetSpec:
    """Expanded widths of a (channel-pruned) MiniFASNet.

    Attributes:
        down: expand widths of the three down-sampling bottlenecks ``conv_23/34/45``.
        stages: expand widths of the residual blocks of ``conv_3``, ``conv_4``, ``conv_5``.
        se: the last block of each residual stage has a squeeze-and-excite module.
        conv6_kernel: kernel of the final depthwise conv (input side / 16, rounded up).
    """

    down: tuple[int, int, int]
    stages: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    se: bool = False
    conv6_kernel: int = (INPUT_SIZE + 15) // 16


#: ``2.7_80x80_MiniFASNetV2.pth``.
MINIFASNET_V2 = MiniFASNetSpec(down=(103, 231, 308), stages=((13, 13, 13, 13), (231, 52, 26, 77, 26, 26), (26, 26)))
#: ``4_0_0_80x80_MiniFASNetV1SE.pth``.
MINIFASNET_V1SE = MiniFASNetSpec(down=(103, 231, 308), stages=((13, 26, 13, 52), (154, 52, 26, 52, 26, 26), (26, 26)),
                                 se=True)


class ConvBlock(nn.Module):
    """conv (no bias) → BN → PReLU (upstream ``Conv_block``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """conv (no bias) → BN, no activation (upstream ``Linear_block``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SEModule(nn.Module):
    """Squeeze-and-excite with BN after each 1×1 conv (upstream ``SEModule``)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        mid = channels // reduction
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(mid, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.sigmoid(self.bn2(self.fc2(self.relu(self.bn1(self.fc1(self.avg_pool(x)))))))
        return x * w


class DepthWise(nn.Module):
    """Bottleneck: 1×1 expand, depthwise 3×3, 1×1 linear project (+ SE, + shortcut)."""

    def __init__(self, cin: int, mid: int, cout: int, *, stride: int, residual: bool, se: bool = False):
        super().__init__()
        self.conv = ConvBlock(cin, mid, 1)
        self.conv_dw = ConvBlock(mid, mid, 3, stride, 1, groups=mid)
        self.project = LinearBlock(mid, cout, 1)
        self.residual = residual
        if se:
            self.se_module = SEModule(cout)
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se:
            y = self.se_module(y)
        return x + y if self.residual else y


class Residual(nn.Module):
    """A stage of residual bottlenecks kept in ``.model`` (upstream ``Residual``/``ResidualSE``)."""

    def __init__(self, channels: int, widths: tuple[int, ...], se_last: bool):
        super().__init__()
        self.model = nn.Sequential(*[
            DepthWise(channels, w, channels, stride=1, residual=True, se=se_last and i == len(widths) - 1)
            for i, w in enumerate(widths)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """MiniFASNet for ``N×3×80×80`` BGR 0–255 input; returns ``N×3`` logits."""

    def __init__(self, spec: MiniFASNetSpec, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.spec = spec
        self.conv1 = ConvBlock(3, STEM_CHANNELS, 3, 2, 1)
        self.conv2_dw = ConvBlock(STEM_CHANNELS, STEM_CHANNELS, 3, 1, 1, groups=STEM_CHANNELS)
        cin = STEM_CHANNELS
        for (down_name, stage_name), down_w, widths, cout in zip(_STAGE_NAMES, spec.down, spec.stages, STAGE_CHANNELS):
            setattr(self, down_name, DepthWise(cin, down_w, cout, stride=2, residual=False))
            setattr(self, stage_name, Residual(cout, widths, spec.se))
            cin = cout
        self.conv_6_sep = ConvBlock(cin, HEAD_CHANNELS, 1)
        self.conv_6_dw = LinearBlock(HEAD_CHANNELS, HEAD_CHANNELS, spec.conv6_kernel, groups=HEAD_CHANNELS)
        self.linear = nn.Linear(HEAD_CHANNELS, EMBEDDING_SIZE, bias=False)
        self.bn = nn.BatchNorm1d(EMBEDDING_SIZE)
        self.drop = nn.Dropout(0.0)
        self.prob = nn.Linear(EMBEDDING_SIZE, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2_dw(self.conv1(x))
        x = self.conv_3(self.conv_23(x))
        x = self.conv_4(self.conv_34(x))
        x = self.conv_5(self.conv_45(x))
        x = self.conv_6_dw(self.conv_6_sep(x))
        x = torch.flatten(x, 1)
        return self.prob(self.drop(self.bn(self.linear(x))))


def minifasnet_v2() -> MiniFASNet:
    return MiniFASNet(MINIFASNET_V2)


def minifasnet_v1se() -> MiniFASNet:
    return MiniFASNet(MINIFASNET_V1SE)


def _strip_module(state: dict) -> dict:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def spec_from_state_dict(state: dict) -> MiniFASNetSpec:
    """Read the expand widths (and whether SE modules exist) off a checkpoint.

    Raises:
        ValueError: the state dict is not a MiniFASNet's (names the missing key).
    """
    sd = _strip_module(state)

    def width(prefix: str) -> int:
        key = f"{prefix}.conv.conv.weight"
        if key not in sd:
            raise ValueError(f"not a MiniFASNet state dict: missing {key!r}")
        return int(sd[key].shape[0])

    down, stages = [], []
    for down_name, stage_name in _STAGE_NAMES:
        down.append(width(down_name))
        widths, i = [], 0
        while f"{stage_name}.model.{i}.conv.conv.weight" in sd:
            widths.append(width(f"{stage_name}.model.{i}"))
            i += 1
        if not widths:
            raise ValueError(f"not a MiniFASNet state dict: stage {stage_name!r} has no blocks")
        stages.append(tuple(widths))
    se = any(".se_module." in k for k in sd)
    k6 = sd.get("conv_6_dw.conv.weight")
    kernel = int(k6.shape[-1]) if k6 is not None else (INPUT_SIZE + 15) // 16
    return MiniFASNetSpec(down=tuple(down), stages=tuple(stages), se=se, conv6_kernel=kernel)


def load_minifasnet(path: str | Path, spec: MiniFASNetSpec | None = None) -> MiniFASNet:
    """Build the network described by a ``.pth`` state dict and load it strictly (eval mode).

    Args:
        path: the checkpoint (keys may carry the ``module.`` prefix of ``DataParallel``).
        spec: widths to build; inferred from the checkpoint when ``None``.

    Raises:
        ValueError: not a MiniFASNet checkpoint.
        RuntimeError: a key or shape mismatch (strict loading).
    """
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    sd = _strip_module(state)
    net = MiniFASNet(spec or spec_from_state_dict(sd))
    net.load_state_dict(sd, strict=True)
    return net.eval()
