"""2nd-order knowledge: the batch's pairwise distance structure (RKD-D, Park et al., CVPR 2019).

    psi(x_i, x_j) = |x_i - x_j|_2 / mu,   mu = mean_{i != j} |x_i - x_j|_2
    L = mean_{i != j} huber( psi_S(s_i, s_j), psi_T(t_i, t_j) )

Embeddings are L2-normalised first (the service compares unit vectors). The distances are divided
by their own mean, so student and teacher need not share a scale or even a dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalised_distances(x: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` Euclidean distances of unit-normalised rows divided by their off-diagonal mean."""
    x = F.normalize(x)
    sq = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    dist = sq.clamp_min(1e-12).sqrt() * (1 - torch.eye(len(x), device=x.device, dtype=x.dtype))
    n = len(x)
    mean = dist.sum() / (n * (n - 1))
    return dist / mean.clamp_min(1e-12)


class PairwiseDistanceLoss(nn.Module):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher) or len(student) < 2:
            raise ValueError(f"need (N, D) batches of equal N >= 2, got {tuple(student.shape)}, {tuple(teacher.shape)}")
        with torch.no_grad():
            target = normalised_distances(teacher)
        mask = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
        return F.smooth_l1_loss(normalised_distances(student)[mask], target[mask])
