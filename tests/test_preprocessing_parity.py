"""Training, export and serving bring the same image to the very same tensor."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrface.preprocessing import face_to_input, load_image
from service.embedder import Embedder, FaceInput
from tests.faces import lfw_faces
from tests.model_fixtures import write_tiny_model

torch = pytest.importorskip("torch")

from training.dataset import DistillDataset, FaceArrays  # noqa: E402


def _jpeg_bytes() -> bytes:
    path = lfw_faces("Colin_Powell", 1)[0]
    return path.read_bytes()


@pytest.mark.parametrize("size", [12, 16])
def test_training_and_serving_give_identical_tensors(tmp_path: Path, size: int) -> None:
    data = _jpeg_bytes()
    image = load_image(data)
    arrays = FaceArrays(
        image[None], np.zeros(1, dtype=np.int64), np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)
    )
    training_view = DistillDataset(arrays, size, augment=None)[0]["lr"].numpy()

    embedder = Embedder(write_tiny_model(tmp_path, input_size=size), "cpu")
    serving_view = embedder.preprocess(FaceInput(load_image(data)))
    assert training_view.dtype == serving_view.dtype == np.float32
    assert np.array_equal(training_view, serving_view)
    assert np.array_equal(serving_view, face_to_input(image, size))  # the export parity check's path


def test_png_and_bmp_of_same_pixels_embed_identically(tmp_path: Path) -> None:
    pixels = load_image(_jpeg_bytes())
    embedder = Embedder(write_tiny_model(tmp_path), "cpu")
    vectors = []
    for fmt in ("PNG", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        vectors.append(embedder.embed([FaceInput(load_image(buffer.getvalue()))])[0])
    assert np.array_equal(vectors[0], vectors[1])
