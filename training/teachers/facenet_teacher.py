"""facenet-pytorch's InceptionResnetV1 (VGGFace2 / CASIA-WebFace weights, or a local state dict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.preprocessing import Normalisation, normalise, resize
from training.teachers import register
from training.teachers.base import Teacher, l2_normalise

FACENET_NORM = Normalisation(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # fixed_image_standardization-ish


@register("facenet")
class FacenetTeacher(Teacher):
    name = "facenet"
    licence = "facenet-pytorch: MIT; VGGFace2 weights: research use"
    embedding_size = 512
    input_size = 160

    def __init__(self, weights: str = "vggface2", path: str | Path | None = None) -> None:
        import torch
        from facenet_pytorch import InceptionResnetV1

        if path is not None:
            state_path = Path(path)
            if not state_path.is_file():
                raise FileNotFoundError(f"facenet weights {state_path} do not exist")
            self.model = InceptionResnetV1(pretrained=None).eval()
            self.model.load_state_dict(torch.load(state_path, map_location="cpu"), strict=False)
            self.version = state_path.name
        else:
            try:
                self.model = InceptionResnetV1(pretrained=weights).eval()
            except Exception as exc:  # noqa: BLE001 - network failures come in many types
                raise RuntimeError(
                    f"could not download facenet '{weights}' weights ({exc}); pass a local state dict "
                    "with path=... or pick teacher 'dlib'"
                ) from exc
            self.version = weights

    def embed(self, chips: np.ndarray) -> np.ndarray:
        import torch

        batch = np.stack([normalise(resize(chip, self.input_size, "bicubic"), FACENET_NORM) for chip in chips])
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch)).numpy()
        return l2_normalise(out)
