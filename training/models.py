"""Backbones behind a factory: ``get_model("resface-s", input_size=16, embedding_size=128)``.

All take ``(N, 3, S, S)`` normalised LR (or HR) faces and return un-normalised embeddings; the
service L2-normalises. ``resface-s`` is the released student (1.1 M parameters), ``resface-m`` the
assistant; the configs in ``training/configs`` name them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity skip (ResNet), cheap at 8x8 and 4x4."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels, 3), _conv_bn(channels, channels, 3, act=False))
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ResFaceLR(nn.Module):
    """A small ResNet for LR faces: a full-resolution stem, then residual stages at S/2 and S/4,
    and a flattened linear head that keeps where on the face each feature was found."""

    def __init__(
        self,
        input_size: int = 16,
        embedding_size: int = 128,
        widths: tuple[int, int, int] = (32, 64, 128),
        blocks: tuple[int, int] = (2, 2),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4, got {input_size}")
        w0, w1, w2 = widths
        layers: list[nn.Module] = [_conv_bn(3, w0, 3), _conv_bn(w0, w0, 3), _conv_bn(w0, w1, 3, stride=2)]
        layers += [BasicBlock(w1) for _ in range(blocks[0])]
        layers.append(_conv_bn(w1, w2, 3, stride=2))
        layers += [BasicBlock(w2) for _ in range(blocks[1])]
        self.features = nn.Sequential(*layers)
        final = input_size // 4
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.Linear(w2 * final * final, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.embed(self.dropout(self.features(x).flatten(1))))


_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resface-s": lambda **kw: ResFaceLR(widths=(32, 64, 128), blocks=(2, 2), **kw),
    "resface-m": lambda **kw: ResFaceLR(widths=(48, 128, 256), blocks=(3, 3), **kw),
}


def model_names() -> list[str]:
    return sorted(_MODELS)


def get_model(name: str, input_size: int = 16, embedding_size: int = 128) -> nn.Module:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {model_names()}")
    return _MODELS[name](input_size=input_size, embedding_size=embedding_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
