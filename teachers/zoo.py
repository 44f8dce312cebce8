"""Model factories that configs name by path (`teachers.zoo:mlp`).

Every factory takes `in_features` and `num_classes` (filled in from the dataset when a config
leaves them out) and returns a plain `torch.nn.Module` mapping float inputs [B, in_features]
to logits [B, num_classes].
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(in_features: int, num_classes: int, hidden: list[int] | tuple[int, ...] = (64,), dropout: float = 0.0,
        input_dropout: float = 0.0) -> nn.Module:
    """A multi-layer perceptron with ReLU; `hidden=[]` gives logistic regression."""
    layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout > 0 else []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class _ImageConvNet(nn.Module):
    def __init__(self, side: int, num_classes: int, channels: tuple[int, int], dropout: float):
        super().__init__()
        c1, c2 = channels
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        pooled = side // 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c2 * pooled * pooled, 128), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(x.shape[0], 1, self.side, self.side)))


def convnet(in_features: int, num_classes: int, channels: list[int] | tuple[int, int] = (32, 64),
            dropout: float = 0.25) -> nn.Module:
    """A small CNN for square single-channel images given flattened ([B, side*side])."""
    side = math.isqrt(in_features)
    if side * side != in_features:
        raise ValueError(f"convnet needs square images, in_features={in_features} is not a square")
    return _ImageConvNet(side, num_classes, tuple(channels), dropout)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
