"""Backbones behind a factory: ``get_model("mobileface-s", input_size=16, embedding_size=128)``.

All take ``(N, 3, S, S)`` normalised LR (or HR) faces and return un-normalised embeddings; the
service L2-normalises. MobileFaceNet-style inverted residual blocks buy capacity for few FLOPs.
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


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear project, with a skip when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.block = nn.Sequential(
            _conv_bn(cin, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=False),
        )
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.skip else out


class MobileFaceLR(nn.Module):
    """A MobileFaceNet for small inputs: two stride-2 stages, then a global depthwise conv."""

    def __init__(
        self,
        input_size: int = 16,
        embedding_size: int = 128,
        width: int = 64,
        blocks: tuple[int, int, int] = (2, 3, 2),
        expansion: int = 2,
        head_channels: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4, got {input_size}")
        widths = (width, width * 2, width * 2)
        layers: list[nn.Module] = [_conv_bn(3, width, 3), _conv_bn(width, width, 3, groups=width)]
        cin = width
        for stage, (n_blocks, cout) in enumerate(zip(blocks, widths, strict=True)):
            for i in range(n_blocks):
                stride = 2 if (i == 0 and stage > 0) else 1
                layers.append(InvertedResidual(cin, cout, stride, expansion if stride == 1 else expansion * 2))
                cin = cout
        layers.append(_conv_bn(cin, head_channels, 1))
        self.features = nn.Sequential(*layers)
        final = input_size // 4
        self.gdconv = _conv_bn(head_channels, head_channels, final, groups=head_channels, act=False)
        self.gdconv[0].padding = (0, 0)  # type: ignore[index,assignment]
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.Linear(head_channels, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gdconv(self.features(x)).flatten(1)
        return self.bn(self.embed(self.dropout(x)))


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


class PlainCNN(nn.Module):
    """A plain 6-conv CNN, the simple baseline student."""

    def __init__(self, input_size: int = 16, embedding_size: int = 128, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w, 3),
            _conv_bn(w, w, 3),
            nn.MaxPool2d(2),
            _conv_bn(w, 2 * w, 3),
            _conv_bn(2 * w, 2 * w, 3),
            nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w, 3),
            _conv_bn(4 * w, 4 * w, 3),
        )
        final = input_size // 4
        self.embed = nn.Linear(4 * w * final * final, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.embed(self.features(x).flatten(1)))


_MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobileface-s": lambda **kw: MobileFaceLR(width=64, blocks=(2, 3, 2), expansion=2, **kw),
    "mobileface-xs": lambda **kw: MobileFaceLR(width=32, blocks=(1, 2, 1), expansion=2, head_channels=256, **kw),
    "mobileface-m": lambda **kw: MobileFaceLR(width=96, blocks=(3, 4, 3), expansion=3, **kw),
    "plain-cnn": lambda **kw: PlainCNN(**kw),
    "resface-s": lambda **kw: ResFaceLR(widths=(32, 64, 128), blocks=(2, 2), **kw),
    "resface-sw": lambda **kw: ResFaceLR(widths=(32, 96, 160), blocks=(2, 2), **kw),
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
