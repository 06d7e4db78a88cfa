"""Identity loss: softmax cross-entropy with an additive angular margin.

    L = -log( e^{s cos(theta_y + m1) - s m2} / (e^{s cos(theta_y + m1) - s m2} + sum_{j != y} e^{s cos theta_j}) )

with ``cos theta_j = <x/|x|, W_j/|W_j|>``: ArcFace is ``m1 > 0, m2 = 0``, CosFace ``m1 = 0, m2 > 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MarginSoftmax(nn.Module):
    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        scale: float = 32.0,
        arc_margin: float = 0.3,
        cos_margin: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)
        self.scale, self.arc_margin, self.cos_margin = scale, arc_margin, cos_margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` cosine of each embedding with each class centre (the logits before margin)."""
        return F.linear(F.normalize(embeddings), F.normalize(self.weight))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
            raise ValueError(f"expected (N, D) embeddings and (N,) labels, got {embeddings.shape}, {labels.shape}")
        # In float32 whatever autocast is active: under float16/bfloat16 autocast the cosines would be
        # half precision while acos/cos give float32 (a dtype clash in scatter), and 1 - 1e-7 rounds to 1.
        with torch.autocast(embeddings.device.type, enabled=False):
            return self._loss(embeddings.float(), labels)

    def _loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None])
        # cos(theta + m), kept monotonic past theta = pi - m as in insightface.
        theta = torch.acos(target)
        with_margin = (
            torch.where(
                theta + self.arc_margin < torch.pi, torch.cos(theta + self.arc_margin), target - self.arc_margin
            )
            - self.cos_margin
        )
        logits = cos.scatter(1, labels[:, None], with_margin) * self.scale
        return F.cross_entropy(logits, labels)
