"""Distillation and identity losses, one module per idea (RepDistiller's layout)."""

from training.losses.angle import TripletAngleLoss
from training.losses.identity import MarginSoftmax
from training.losses.instance import EmbeddingMatchLoss, LogitKDLoss
from training.losses.pairwise import PairwiseDistanceLoss

__all__ = ["EmbeddingMatchLoss", "LogitKDLoss", "MarginSoftmax", "PairwiseDistanceLoss", "TripletAngleLoss"]
