"""1st-order (instance) knowledge: each student output matches the teacher's for the same face.

Embedding match (cosine):  L = mean_i (1 - <s_i/|s_i|, t_i/|t_i|>)
Embedding match (L2):      L = mean_i |s_i/|s_i| - t_i/|t_i||^2          (= 2 x the cosine form)
Logit KD (Hinton et al.):  L = T^2 * mean_i KL( softmax(t_i / T) || softmax(s_i / T) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be equal (N, D)")


class EmbeddingMatchLoss(nn.Module):
    def __init__(self, metric: str = "cosine") -> None:
        super().__init__()
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
        self.metric = metric

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        _check(student, teacher)
        cos = (F.normalize(student) * F.normalize(teacher)).sum(dim=1)
        per_sample = 1.0 - cos if self.metric == "cosine" else 2.0 - 2.0 * cos
        return per_sample.mean()


class LogitKDLoss(nn.Module):
    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        _check(student_logits, teacher_logits)
        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=1)
        p_teacher = F.softmax(teacher_logits / t, dim=1)
        return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t
