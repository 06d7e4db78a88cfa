"""3rd-order knowledge: the angles of every triplet in the batch (RKD-A, Park et al., CVPR 2019).

    e_ij = (x_i - x_j) / |x_i - x_j|,   psi(x_i, x_j, x_k) = <e_ij, e_kj>   (angle at vertex j)
    L = mean_{i, j, k} huber( psi_S, psi_T )

Embeddings are L2-normalised first. Cost is O(N^3 D) memory-light through one batched matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def triplet_cosines(x: torch.Tensor) -> torch.Tensor:
    """``(N, N, N)``: entry ``[j, i, k]`` is the cosine of the angle at ``x_j`` between ``x_i`` and ``x_k``."""
    x = F.normalize(x)
    diff = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # diff[j, i] = unit(x_i - x_j)
    return torch.bmm(diff, diff.transpose(1, 2))


class TripletAngleLoss(nn.Module):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher) or len(student) < 3:
            raise ValueError(f"need (N, D) batches of equal N >= 3, got {tuple(student.shape)}, {tuple(teacher.shape)}")
        with torch.no_grad():
            target = triplet_cosines(teacher)
        return F.smooth_l1_loss(triplet_cosines(student), target)
