"""The small face chip stored with every enrolled face, so a new model can re-embed the gallery."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lrface.preprocessing import crop_square, load_image, resize
from service.embedder import FaceInput

CHIP_SIDE = 64


def face_chip_png(face: FaceInput) -> bytes:
    chip = resize(crop_square(face.image, face.box), CHIP_SIDE)
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="PNG")
    return buffer.getvalue()


def chip_face(png: bytes) -> FaceInput:
    return FaceInput(np.asarray(load_image(png)), None)
