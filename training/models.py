"""Backbones behind a factory: ``get_model("resface-s", input_size=16, embedding_size=128)``.

All take ``(N, 3, S, S)`` normalised LR (or HR) faces and return un-normalised embeddings; the
service L2-normalises. ``resface-s`` is the released student (1.1 M parameters), ``resface-m`` the
assistant; ``teacher-lr`` is the teacher's own network (5.6 M parameters) initialised from the released
teacher and fine-tuned to read LR faces; the configs in ``training/configs`` name them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


class TeacherLR(nn.Module):
    """dlib's ResNet (the teacher), initialised from the released ``models/teacher-dlib`` ONNX file,
    reading an LR face: the normalised ``S``-px input is brought back to 0-255 and up-sampled
    (bilinear) to the teacher's 150 px inside the network, so the service feeds it the same LR input
    as any student. Its output is the teacher's unit embedding minus :attr:`centre` (the mean teacher
    embedding of the training faces, set by the training loop): at the start of training an HR face
    already gives the centred target the distillation losses compare against. Everything a student
    is trained with applies; what it adds is 3 M faces' worth of the teacher's training."""

    def __init__(self, input_size: int = 16, embedding_size: int = 128, teacher_onnx: Path | None = None) -> None:
        super().__init__()
        from lrface.preprocessing import HR_CHIP_SIDE, Normalisation
        from lrface.settings import get_settings
        from lrface.teacher import TEACHER_FILE
        from training.teacher_export import DlibResNet, layers_from_onnx

        path = teacher_onnx or get_settings().teacher_model / TEACHER_FILE
        self.net = DlibResNet(layers_from_onnx(path))
        for param in self.net.params:
            param.requires_grad_(True)
        if embedding_size != self.net.params[-1].shape[1]:
            raise ValueError(f"teacher-lr embeds in {self.net.params[-1].shape[1]} dimensions, not {embedding_size}")
        norm = Normalisation()
        self.side = HR_CHIP_SIDE
        self.input_size = input_size
        self.scale: torch.Tensor
        self.offset: torch.Tensor
        self.centre: torch.Tensor
        self.register_buffer("scale", 255.0 * torch.tensor(norm.std).view(1, 3, 1, 1))
        self.register_buffer("offset", 255.0 * torch.tensor(norm.mean).view(1, 3, 1, 1))
        self.register_buffer("centre", torch.zeros(embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * self.scale + self.offset
        pixels = nn.functional.interpolate(pixels, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return nn.functional.normalize(self.net(pixels), dim=1) - self.centre


_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resface-s": lambda **kw: ResFaceLR(widths=(32, 64, 128), blocks=(2, 2), **kw),
    "resface-m": lambda **kw: ResFaceLR(widths=(48, 128, 256), blocks=(3, 3), **kw),
    "teacher-lr": lambda **kw: TeacherLR(**kw),
}


def model_names() -> list[str]:
    return sorted(_MODELS)


def get_model(name: str, input_size: int = 16, embedding_size: int = 128) -> nn.Module:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {model_names()}")
    return _MODELS[name](input_size=input_size, embedding_size=embedding_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
