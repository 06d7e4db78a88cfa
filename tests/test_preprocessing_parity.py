"""Training, export and serving bring the same image to the very same tensor."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.preprocessing import face_to_input, load_image
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

    embedder = OnnxEmbedder(write_tiny_model(tmp_path, input_size=size), "cpu")
    serving_view = embedder.preprocess(FaceInput(load_image(data)))
    assert training_view.dtype == serving_view.dtype == np.float32
    assert np.array_equal(training_view, serving_view)
    assert np.array_equal(serving_view, face_to_input(image, size))  # the export parity check's path


@pytest.mark.parametrize("size", [12, 16, 24])
def test_training_evaluation_and_reembedding_bring_a_chip_to_the_same_lr_input(tmp_path: Path, size: int) -> None:
    """The one HR-to-LR rule: a 150-px aligned chip gives the same model input whether it is a training
    view (chips shrunk once to the canonical side), an evaluation probe (degraded from the HR chip) or
    a face re-embedded from the chip the gallery stored when it was enrolled."""
    from service.enrollment import chip_face, face_chip_png
    from training.dataset import canonical_chips
    from training.evaluate import probe_faces

    chip = load_image(_jpeg_bytes())[50:200, 50:200]  # a 150-px chip, as the aligner makes
    assert chip.shape[:2] == (150, 150)
    arrays = FaceArrays(chip[None], np.zeros(1, np.int64), np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))
    training = DistillDataset(canonical_chips(arrays), size, augment=None)[0]["lr"].numpy()

    embedder = OnnxEmbedder(write_tiny_model(tmp_path, input_size=size), "cpu")
    (probe,) = probe_faces(chip[None], f"lr{size}")
    evaluation = embedder.preprocess(FaceInput(probe))
    reembedded = embedder.preprocess(chip_face(face_chip_png(FaceInput(chip))))
    served = embedder.preprocess(FaceInput(chip))

    assert np.array_equal(training, evaluation)
    assert np.array_equal(training, reembedded)
    assert np.array_equal(training, served)


def test_png_and_bmp_of_same_pixels_embed_identically(tmp_path: Path) -> None:
    pixels = load_image(_jpeg_bytes())
    embedder = OnnxEmbedder(write_tiny_model(tmp_path), "cpu")
    vectors = []
    for fmt in ("PNG", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        vectors.append(embedder.embed([FaceInput(load_image(buffer.getvalue()))])[0])
    assert np.array_equal(vectors[0], vectors[1])
