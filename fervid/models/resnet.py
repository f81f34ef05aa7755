"""ResNet-style nets: basic residual blocks, a 3x3 stem at full 48x48 resolution, global pooling."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 7, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (2, 2, 2, 2), dropout: float = 0.3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2))  # 48 -> 24: full-res blocks cost too much on a CPU
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: starts as identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


@register_model
def resnet_s(num_classes: int = 7, **kw) -> nn.Module:
    """ResNet-18 layout (2-2-2-2 basic blocks), widths 32-64-128-256."""
    return ResNet(num_classes, widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2), **kw)


@register_model
def resnet_m(num_classes: int = 7, **kw) -> nn.Module:
    """ResNet-18 layout, widths 64-128-256-512."""
    return ResNet(num_classes, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), **kw)
