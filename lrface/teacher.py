"""The HR embedder beside the student: dlib's 128-d ResNet (the distillation teacher), run without
torch, for faces large enough that it identifies them better than the student (see the model card's
``routing``). It sees each face as a 150-px chip made by :func:`lrface.preprocessing.hr_chip`: the
dlib-aligned chip of a detected face, or the face's square (its box, or the whole chip) brought to
150 px, bicubic when enlarging, as evaluation feeds it up-sampled probes.

Callers: the service (enrollment, identification and verification of large faces) and the training
side's ``dlib`` teacher (``training.teachers.dlib_teacher``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lrface.alignment import CHIP_SIZE, _load_dlib
from lrface.embedder import FaceInput
from lrface.preprocessing import hr_chip

DLIB_VERSION = "dlib_face_recognition_resnet_model_v1"
DLIB_LICENCE = "dlib model: CC0 (face-recognition-models, MIT)"


class DlibEmbedder:
    """dlib's face descriptor on 150-px chips; unit-length float32 embeddings."""

    name = "dlib"
    version = DLIB_VERSION
    embedding_size = 128
    chip_size = CHIP_SIZE

    def __init__(self) -> None:
        dlib, models = _load_dlib()
        self._model = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    @property
    def model_id(self) -> str:
        return f"teacher-{self.name}:{self.version}"

    def embed_chips(self, chips: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """``(N, 150, 150, 3)`` uint8 chips -> ``(N, 128)`` unit vectors."""
        batch = [np.ascontiguousarray(chip) for chip in chips]
        if any(chip.shape != (CHIP_SIZE, CHIP_SIZE, 3) for chip in batch):
            raise ValueError(f"the dlib embedder wants {CHIP_SIZE}x{CHIP_SIZE} RGB chips")
        if not batch:
            return np.zeros((0, self.embedding_size), np.float32)
        out = np.asarray(self._model.compute_face_descriptor(batch), dtype=np.float32)
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def embed(self, faces: Sequence[FaceInput]) -> np.ndarray:
        """Unit embeddings of decoded faces (image and optional box), through :func:`hr_chip`."""
        return self.embed_chips([hr_chip(face.image, face.box) for face in faces])
