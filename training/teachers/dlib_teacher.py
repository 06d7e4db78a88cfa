"""dlib's pretrained 128-d ResNet (face-recognition-models), fed dlib's own 150-px aligned chips: the
core's :class:`lrface.teacher.DlibEmbedder`, which the service also runs."""

from __future__ import annotations

import numpy as np

from lrface.alignment import CHIP_SIZE
from lrface.teacher import DLIB_LICENCE, DLIB_VERSION, DlibEmbedder
from training.teachers import register
from training.teachers.base import Teacher


@register("dlib")
class DlibTeacher(Teacher):
    name = "dlib"
    version = DLIB_VERSION
    licence = DLIB_LICENCE
    embedding_size = 128
    chip_size = CHIP_SIZE

    def __init__(self) -> None:
        import torch

        # As many threads as torch uses here: 1 in a data-loader or cache worker, all cores in the main process.
        self._embedder = DlibEmbedder(threads=torch.get_num_threads())

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"dlib teacher wants (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) chips, got {chips.shape}")
        return self._embedder.embed_chips(chips)
