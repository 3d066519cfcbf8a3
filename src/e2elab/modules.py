"""Small reusable building blocks for tasks' systems."""

from __future__ import annotations

from torch import nn


def mlp(inputs: int, hidden: int, outputs: int, layers: int = 2) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear read-out."""
    parts: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        parts += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    parts.append(nn.Linear(width, outputs))
    return nn.Sequential(*parts)


def conv_stages(channels: int, width: int) -> list[nn.Module]:
    """Two 3x3 conv + ReLU + 2x2 max-pool stages (``width`` then ``2 * width``
    channels), flattened: (B, channels, H, W) -> (B, 2 * width * (H // 4) * (W // 4)).
    Each ReLU follows its pooling: the two commute exactly, and the ReLU then touches a
    quarter of the values."""
    return [
        nn.Conv2d(channels, width, 3, padding=1),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Flatten(),
    ]
