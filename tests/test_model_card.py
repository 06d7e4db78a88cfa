from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrface.embedder import OnnxEmbedder, choose_providers
from lrface.model_card import ModelCardError, load_card
from tests.model_fixtures import write_tiny_model


def test_card_round_trip_and_embedder_loads(tmp_path: Path) -> None:
    write_tiny_model(tmp_path)
    card = load_card(tmp_path)
    assert card.input_size == 16 and card.embedding_size == 32 and card.similarity == "cosine"
    embedder = OnnxEmbedder(tmp_path, "cpu")
    assert embedder.model_version == "tiny-test:1"


def test_missing_card_is_refused(tmp_path: Path) -> None:
    write_tiny_model(tmp_path)
    (tmp_path / "card.json").unlink()
    with pytest.raises(ModelCardError, match="no card.json"):
        OnnxEmbedder(tmp_path, "cpu")


def test_card_that_disagrees_with_graph_is_refused(tmp_path: Path) -> None:
    write_tiny_model(tmp_path)
    card = json.loads((tmp_path / "card.json").read_text())
    card["input_size"] = 24
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=r"card says input \(3, 24, 24\) but the ONNX graph takes \(3, 16, 16\)"):
        OnnxEmbedder(tmp_path, "cpu")


def test_malformed_card_is_refused(tmp_path: Path) -> None:
    write_tiny_model(tmp_path)
    (tmp_path / "card.json").write_text('{"name": "x"}')
    with pytest.raises(ModelCardError, match="not a valid model card"):
        load_card(tmp_path)


def test_provider_selection() -> None:
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", cuda) == cuda
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cpu", cuda) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_the_card_records_the_weights_and_refuses_others(tmp_path: Path) -> None:
    """Re-released weights under an old version string are another model: refused, never mixed."""
    write_tiny_model(tmp_path / "a", seed=1)
    write_tiny_model(tmp_path / "b", seed=2)  # same name and version, other weights
    a, b = load_card(tmp_path / "a"), load_card(tmp_path / "b")
    assert a.model_version == b.model_version == "tiny-test:1"
    assert len(a.onnx_sha256) == 64 and a.model_id != b.model_id
    (tmp_path / "a" / "model.onnx").write_bytes((tmp_path / "b" / "model.onnx").read_bytes())
    with pytest.raises(ModelCardError, match="is not the model"):
        OnnxEmbedder(tmp_path / "a", "cpu")


def test_a_gallery_refuses_other_weights_under_the_same_version(tmp_path: Path) -> None:
    import numpy as np

    from service.gallery.gallery import Gallery, GalleryVersionMismatch
    from service.gallery.store import GalleryStore, NewFace

    write_tiny_model(tmp_path / "a", seed=1)
    write_tiny_model(tmp_path / "b", seed=2)
    a, b = OnnxEmbedder(tmp_path / "a", "cpu"), OnnxEmbedder(tmp_path / "b", "cpu")
    url = f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    Gallery(GalleryStore(url), 32, a.model_id).enroll("x", [NewFace("h", np.ones(32, np.float32) / 32**0.5)])
    with pytest.raises(GalleryVersionMismatch, match="reembed"):
        Gallery(GalleryStore(url), 32, b.model_id).check_versions()
    Gallery(GalleryStore(url), 32, a.model_id).check_versions()


def test_released_cards_match_their_weights() -> None:
    from lrface.settings import PROJECT_ROOT

    students = [d for d in sorted((PROJECT_ROOT / "models").iterdir()) if (d / "model.onnx").exists()]
    assert len(students) >= 2  # the student and its INT8 variant (models/mtcnn holds the detector: its own card)
    for directory in students:
        if (directory / "card.json").exists():
            card = load_card(directory)  # raises when the bytes differ
            assert card.onnx_sha256, f"{directory.name}: card has no onnx_sha256"
