"""The released model under models/: loads, matches its card, and ONNX Runtime agrees with torch."""

from __future__ import annotations

import numpy as np
import pytest

from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import load_card
from lrface.preprocessing import face_to_input, load_image
from lrface.settings import BUNDLED_MODEL_DIR
from tests.faces import lfw_faces

pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "card.json").exists(), reason="no released model yet")


def test_card_matches_graph_and_serves() -> None:
    card = load_card(BUNDLED_MODEL_DIR)
    embedder = OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu")
    assert embedder.card == card
    assert 8 <= card.input_size <= 32 and card.embedding_size in (128, 512)
    # teacher-lr (v5) is dlib's 5.6 M-parameter network fine-tuned for LR faces: 22.6 MB in float32
    assert (BUNDLED_MODEL_DIR / card.onnx_file).stat().st_size < 32 * 2**20
    assert -1 < card.threshold < 1 and {"far_1e-2", "far_1e-3"} <= set(card.thresholds)
    assert card.training.teacher == "dlib" and "pairsDevTest.txt excluded" in card.training.data


def test_onnx_matches_torch_on_a_real_face() -> None:
    torch = pytest.importorskip("torch")
    from training.config import TrainConfig
    from training.models import get_model

    weights = BUNDLED_MODEL_DIR / "student.pt"
    if not weights.exists():  # released with --no-torch-weights: the release's own check, on validation faces
        assert load_card(BUNDLED_MODEL_DIR).accuracy["onnx_torch_max_abs_diff"] < 1e-4
        pytest.skip("released without torch weights (lrface release --no-torch-weights)")
    state = torch.load(weights, map_location="cpu", weights_only=False)
    config = TrainConfig.model_validate(state["config"])
    model = get_model(config.model, config.input_size, config.embedding_size).eval()
    model.load_state_dict(state["model"])
    image = load_image(lfw_faces("Colin_Powell", 1)[0].read_bytes())
    with torch.inference_mode():
        expected = model(torch.from_numpy(face_to_input(image, config.input_size)[None])).numpy()[0]
    got = OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu").embed([FaceInput(image)])[0]
    assert np.abs(got - expected / np.linalg.norm(expected)).max() < 1e-4


def test_int8_variant_tracks_the_fp32_model_on_real_faces() -> None:
    int8_dir = BUNDLED_MODEL_DIR.parent / "lrface-student-int8"
    if not (int8_dir / "card.json").exists():
        pytest.skip("no INT8 variant released")
    fp32, int8 = OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu"), OnnxEmbedder(int8_dir, "cpu")
    assert int8.card.name == f"{fp32.card.name}-int8" and int8.card.version == fp32.card.version
    assert int8.card.input_size == fp32.card.input_size and int8.card.embedding_size == fp32.card.embedding_size
    faces = [FaceInput(load_image(p.read_bytes())) for p in lfw_faces("Colin_Powell", 4)]
    cosine = (fp32.embed(faces) * int8.embed(faces)).sum(1)
    assert cosine.min() > 0.98, cosine
