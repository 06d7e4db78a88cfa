"""Any face embedder exported to ONNX (e.g. an ArcFace model), given its input size and normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.preprocessing import Normalisation, normalise, resize
from training.teachers import register
from training.teachers.base import Teacher, l2_normalise


@register("onnx")
class OnnxTeacher(Teacher):
    name = "onnx"
    licence = "as the ONNX model's owner states"

    def __init__(
        self,
        path: str | Path,
        input_size: int = 112,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    ) -> None:
        import onnxruntime as ort

        model_path = Path(path)
        if not model_path.is_file():
            raise FileNotFoundError(f"ONNX teacher {model_path} does not exist")
        self._session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.input_size = input_size
        self.norm = Normalisation(mean, std)
        self.version = model_path.name
        self.embedding_size = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, chips: np.ndarray) -> np.ndarray:
        batch = np.stack([normalise(resize(chip, self.input_size, "bicubic"), self.norm) for chip in chips])
        (out,) = self._session.run(None, {self._input: batch})
        return l2_normalise(np.asarray(out, dtype=np.float32))
