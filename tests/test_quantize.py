"""The INT8 path: a quantized copy of an ONNX model loads, keeps its card's contract and embeds
close to the FP32 model (the real student's accuracy is compared by `lrface evaluate`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import load_card
from tests.model_fixtures import write_tiny_model
from training.quantize import calibration_inputs, quantize_model


def test_int8_copy_embeds_like_fp32(tmp_path: Path) -> None:
    fp32_dir = write_tiny_model(tmp_path / "fp32")
    card = load_card(fp32_dir)
    chips = np.random.default_rng(0).integers(0, 256, (200, 48, 48, 3), dtype=np.uint8)
    inputs = calibration_inputs(chips, fp32_dir, 128)
    assert inputs.shape == (128, 3, card.input_size, card.input_size)
    int8_card = quantize_model(fp32_dir, tmp_path / "int8", inputs)
    assert int8_card.name == f"{card.name}-int8" and int8_card.embedding_size == card.embedding_size
    assert (tmp_path / "int8" / "model.onnx").read_bytes() != (fp32_dir / "model.onnx").read_bytes()
    fp32, int8 = OnnxEmbedder(fp32_dir, "cpu"), OnnxEmbedder(tmp_path / "int8", "cpu")
    faces = [FaceInput(chip) for chip in np.random.default_rng(1).integers(0, 256, (20, 40, 40, 3), dtype=np.uint8)]
    cosine = (fp32.embed(faces) * int8.embed(faces)).sum(1)
    assert cosine.min() > 0.95 and np.median(cosine) > 0.995, cosine
