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
