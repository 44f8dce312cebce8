"""Model factories that configs name by path (`models.zoo:mlp`).

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
    def __init__(self, side: int, num_classes: int, channels: tuple[int, int], dropout: float, in_channels: int):
        super().__init__()
        c1, c2 = channels
        self.side, self.in_channels = side, in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        pooled = side // 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c2 * pooled * pooled, 128), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(x.shape[0], self.in_channels, self.side, self.side)))


def convnet(in_features: int, num_classes: int, channels: list[int] | tuple[int, int] = (32, 64),
            dropout: float = 0.25, in_channels: int = 1) -> nn.Module:
    """A small CNN for square images of `in_channels` channels given flattened channel-first
    ([B, in_channels*side*side], as an image source's inputs are)."""
    side = math.isqrt(in_features // in_channels)
    if in_channels * side * side != in_features:
        raise ValueError(f"convnet needs square images of {in_channels} channels; in_features={in_features} is not "
                         f"{in_channels} x a square (set kwargs.in_channels to the images' channels)")
    return _ImageConvNet(side, num_classes, tuple(channels), dropout, in_channels)


class _TextClassifier(nn.Module):
    input_dtype = torch.long  # token ids: what a shape probe feeds it (`teachers.backend.dummy_inputs`)

    def __init__(self, vocab_size: int, num_classes: int, dim: int, hidden: int, pad_id: int):
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != self.pad_id).unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(x) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled)


def text_classifier(in_features: int, num_classes: int, vocab_size: int, dim: int = 64, hidden: int = 64,
                    pad_id: int = 0) -> nn.Module:
    """Token ids [B, in_features] (a text input column, tokenized to data.sequence_length) to
    logits: the mean of the tokens' embeddings (padding left out), then an MLP. `vocab_size`
    and `pad_id` are the tokenizer's."""
    del in_features  # any length: the mean pools over it
    return _TextClassifier(vocab_size, num_classes, dim, hidden, pad_id)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with its query, key and value projections as named submodules
    (`query`, `key`, `value`), so feature hooks can read them (MiniLM distillation)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return self.out((attention @ v).transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), _SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _RowTransformer(nn.Module):
    def __init__(self, side: int, num_classes: int, dim: int, heads: int, layers: int):
        super().__init__()
        self.side = side
        self.embed = nn.Linear(side, dim)
        self.position = nn.Parameter(torch.zeros(1, side, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.view(x.shape[0], self.side, self.side)) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(1))


def row_transformer(in_features: int, num_classes: int, dim: int = 64, heads: int = 4, layers: int = 2) -> nn.Module:
    """A small pre-norm transformer over the rows of a square image (each row one token).
    Block `i` exposes `blocks.i.attention.{query,key,value}` and its output `blocks.i`."""
    side = math.isqrt(in_features)
    if side * side != in_features:
        raise ValueError(f"row_transformer needs square images, in_features={in_features} is not a square")
    return _RowTransformer(side, num_classes, dim, heads, layers)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
