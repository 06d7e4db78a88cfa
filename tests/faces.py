"""Real face images for service tests: LFW files when the data is there, else skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrface.preprocessing import encode_image, resize
from lrface.settings import get_settings


def lfw_faces(name: str, count: int) -> list[Path]:
    folder = get_settings().lfw_root() / "images" / name
    files = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if len(files) < count:
        pytest.skip(f"LFW images of {name} not found (set LRFACE_DATA)")
    return files


def aligned_chip(photo: Path, side: int = 16) -> np.ndarray:
    """The photo's face framed as the models' aligned chips are (the service's landmark chip of it, the
    framing of dlib's alignment), shrunk to ``side`` px: a face chip as a camera far away gives one. (A
    square cut around the face, e.g. a photo's centre, frames it tighter: the service takes that as a
    tight crop, ``input: crop``.)"""
    from service.faces import FaceDecoder, ImageItem

    face = FaceDecoder(40_000_000).decode(ImageItem(photo.read_bytes(), photo.name), "true")[0]
    return resize(face.face.image, side)


def aligned_chip_png(photo: Path, side: int = 16) -> bytes:
    return encode_image(aligned_chip(photo, side), "PNG")
