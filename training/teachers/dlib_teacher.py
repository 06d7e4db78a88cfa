"""dlib's pretrained 128-d ResNet (face-recognition-models), fed dlib's own 150-px aligned chips."""

from __future__ import annotations

import numpy as np

from lrface.alignment import CHIP_SIZE, _load_dlib
from training.teachers import register
from training.teachers.base import Teacher, l2_normalise


@register("dlib")
class DlibTeacher(Teacher):
    name = "dlib"
    version = "dlib_face_recognition_resnet_model_v1"
    licence = "dlib model: CC0 (face-recognition-models, MIT)"
    embedding_size = 128
    chip_size = CHIP_SIZE

    def __init__(self) -> None:
        dlib, models = _load_dlib()
        self._model = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"dlib teacher wants (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) chips, got {chips.shape}")
        batch = [np.ascontiguousarray(chip) for chip in chips]
        return l2_normalise(np.asarray(self._model.compute_face_descriptor(batch), dtype=np.float32))
