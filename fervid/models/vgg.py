"""VGG-style stacks with batch norm: the family behind the best from-scratch FER-2013 results.

Four stages of 3x3 convs with a 2x2 max-pool after each take 48 -> 3; the head flattens
the 3x3 map (keeping where on the face a feature fired, which global pooling would
throw away) into one hidden layer. Widths are the knob for speed against accuracy.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .registry import register_model


def conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGG(nn.Module):
    def __init__(self, num_classes: int = 7, widths: Sequence[int] = (32, 64, 128, 256),
                 depths: Sequence[int] = (2, 2, 2, 2), hidden: int = 256, dropout: float = 0.4,
                 input_size: int = 48):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for w, d in zip(widths, depths):
            for _ in range(d):
                layers += conv_bn(cin, w)
                cin = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(cin * side * side, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def vgg_tiny(num_classes: int = 7, **kw) -> nn.Module:
    """VGG, widths 16-32-64-128, one conv in the first stage: fastest, for laptops and tests."""
    return VGG(num_classes, widths=(16, 32, 64, 128), depths=(1, 2, 2, 2), hidden=128, **kw)


@register_model
def vgg_s(num_classes: int = 7, **kw) -> nn.Module:
    """VGG, widths 32-64-128-256, one conv in the first stage: the speed/accuracy default."""
    return VGG(num_classes, widths=(32, 64, 128, 256), depths=(1, 2, 2, 2), hidden=256, **kw)


@register_model
def vgg_m(num_classes: int = 7, **kw) -> nn.Module:
    """VGG, widths 48-96-192-384, two convs per stage."""
    return VGG(num_classes, widths=(48, 96, 192, 384), depths=(2, 2, 2, 2), hidden=384, **kw)


@register_model
def vgg_l(num_classes: int = 7, **kw) -> nn.Module:
    """VGG, widths 64-128-256-512, three convs in the later stages (Khaireddin & Chen-like)."""
    return VGG(num_classes, widths=(64, 128, 256, 512), depths=(2, 2, 3, 3), hidden=512, **kw)


@register_model
def vgg_d(num_classes: int = 7, **kw) -> nn.Module:
    """VGG, widths 48-96-192-352, three convs in the last two stages, 256-unit head: deeper than vgg_m, under 5M.

    The extra convs go where the map is small (12x12, 6x6), so depth costs 1.3x vgg_m's
    FLOPs; a narrower last stage and head keep it under issue #4's 5M-parameter cap.
    """
    return VGG(num_classes, widths=(48, 96, 192, 352), depths=(2, 2, 3, 3), hidden=256, **kw)
