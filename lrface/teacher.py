"""The HR embedder beside the student: dlib's 128-d ResNet (the distillation teacher), run by ONNX
Runtime from ``models/teacher-dlib`` (exported from dlib's own file by ``lrface export-teacher``,
descriptors within 1e-4 of dlib's: the same embedding space), for faces large enough that it
identifies them better than the student (see the model card's ``routing``). It sees each face as a
150-px chip made by :func:`lrface.preprocessing.hr_chip`: the dlib-aligned chip of a detected face,
or the face's square (its box, or the whole chip) brought to 150 px, bicubic when enlarging, as
evaluation feeds it up-sampled probes.

Callers: the service (enrollment, identification and verification of large faces) and the training
side's ``dlib`` teacher (``training.teachers.dlib_teacher``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lrface.embedder import FaceInput, onnx_session
from lrface.model_card import file_sha256
from lrface.preprocessing import HR_CHIP_SIDE, hr_chip
from lrface.settings import PROJECT_ROOT

DLIB_VERSION = "dlib_face_recognition_resnet_model_v1"
DLIB_LICENCE = "dlib model: CC0 (face-recognition-models, MIT)"
BUNDLED_TEACHER_DIR = PROJECT_ROOT / "models" / "teacher-dlib"
TEACHER_FILE = "dlib_resnet.onnx"
TEACHER_CARD = "card.json"


class TeacherUnavailable(RuntimeError):
    """The teacher's ONNX file is missing, altered or unreadable."""


class DlibEmbedder:
    """dlib's face descriptor on 150-px chips; unit-length float32 embeddings. ``batch`` bounds the
    chips run at once (memory)."""

    name = "dlib"
    version = DLIB_VERSION
    embedding_size = 128
    chip_size = HR_CHIP_SIDE
    batch = 64

    def __init__(self, model_dir: Path = BUNDLED_TEACHER_DIR, providers: str = "auto", threads: int = 0) -> None:
        path = Path(model_dir) / TEACHER_FILE
        card_path = Path(model_dir) / TEACHER_CARD
        if not path.is_file() or not card_path.is_file():
            raise TeacherUnavailable(
                f"teacher model missing: {path} and {card_path} (they ship in models/teacher-dlib; "
                "`lrface export-teacher` rebuilds them from dlib's file)"
            )
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as exc:
            raise TeacherUnavailable(f"unreadable teacher card {card_path}: {exc}") from None
        if not isinstance(card, dict) or card.get("version") != DLIB_VERSION:
            raise TeacherUnavailable(f"{card_path} does not describe {DLIB_VERSION}")
        if not isinstance(card.get("sha256"), str):
            raise TeacherUnavailable(f"{card_path} gives no SHA-256 of {TEACHER_FILE}: the file cannot be checked")
        if file_sha256(path) != card["sha256"]:
            raise TeacherUnavailable(f"{path} is not the network {card_path} describes (SHA-256 differs)")
        try:
            self.session = onnx_session(path, providers, threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise TeacherUnavailable(f"cannot load {path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name

    @property
    def model_id(self) -> str:
        return f"teacher-{self.name}:{self.version}"

    def embed_chips(self, chips: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """``(N, 150, 150, 3)`` uint8 chips -> ``(N, 128)`` unit vectors, ``batch`` chips per run (the
        session is ONNX Runtime's, whose ``run`` may be called from several threads at once)."""
        batch = [np.asarray(chip) for chip in chips]
        # uint8 as dlib took them: a float chip in 0-1 would give a descriptor of a black face.
        if any(chip.shape != (HR_CHIP_SIDE, HR_CHIP_SIDE, 3) or chip.dtype != np.uint8 for chip in batch):
            raise ValueError(f"the dlib embedder wants {HR_CHIP_SIDE}x{HR_CHIP_SIDE} uint8 RGB chips")
        if not batch:
            return np.zeros((0, self.embedding_size), np.float32)
        parts = []
        for start in range(0, len(batch), self.batch):
            x = np.stack(batch[start : start + self.batch]).transpose(0, 3, 1, 2).astype(np.float32)
            (out,) = self.session.run(None, {self.input_name: x})
            parts.append(np.asarray(out, dtype=np.float32))
        out = np.concatenate(parts)
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def embed(self, faces: Sequence[FaceInput]) -> np.ndarray:
        """Unit embeddings of decoded faces (image and optional box), through :func:`hr_chip`."""
        return self.embed_chips([hr_chip(face.image, face.box) for face in faces])
