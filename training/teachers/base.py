"""What every HR teacher offers the distillation code."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Teacher(ABC):
    """A frozen HR face embedder working on aligned uint8 RGB chips of ``chip_size``."""

    name: str = "teacher"
    version: str = "0"
    licence: str = "unknown"
    embedding_size: int = 128

    @abstractmethod
    def embed(self, chips: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 chips -> ``(N, D)`` float32, L2-normalised."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
