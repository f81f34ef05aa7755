"""The seed projects' Keras-tutorial CNN, kept as the reference point everything else must beat."""
from __future__ import annotations

from torch import nn

from .registry import register_model


class SeedCNN(nn.Module):
    """Two conv + max-pool blocks, flatten, two dense layers (no batch norm), as in the seeds."""

    def __init__(self, num_classes: int = 7, hidden: int = 256, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(dropout),  # 48 -> 46 -> 44 -> 22
            nn.Conv2d(64, 128, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 22 -> 20 -> 10
            nn.Conv2d(128, 128, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 10 -> 8 -> 4
            nn.Dropout(dropout),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 4 * 4, hidden), nn.ReLU(inplace=True),
            nn.Dropout(2 * dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def baseline(num_classes: int = 7, **kw) -> nn.Module:
    """Seed-project baseline: 2 conv/pool blocks + 2 dense layers, no batch norm."""
    return SeedCNN(num_classes, **kw)
