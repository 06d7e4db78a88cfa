"""Export of a (tiny, really trained) run: ONNX with a dynamic batch axis that agrees with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrface.embedder import FaceInput, OnnxEmbedder  # noqa: E402
from lrface.model_card import ModelCard, load_card  # noqa: E402
from tests.synthetic_faces import synthetic_arrays  # noqa: E402
from tests.test_training_loop import _config  # noqa: E402
from training.export import load_run_model, release  # noqa: E402
from training.loop import train  # noqa: E402


def test_release_writes_onnx_and_card_that_the_service_accepts(tmp_path: Path) -> None:
    data = synthetic_arrays(identities=4, per_identity=4)
    run = tmp_path / "run"
    train(_config(epochs=1), run, data, progress=False)
    out = tmp_path / "model"
    seen: list[Path] = []

    def finish(card: ModelCard, stage: Path) -> None:
        assert not (out / "card.json").exists()  # nothing is published before the card is complete
        card.threshold, card.thresholds = 0.4, {"far_1e-3": 0.6}
        seen.append(stage)

    card = release(run, out, data.chips[:8], "tiny", "0", "synthetic", finish=finish)
    assert load_card(out).model_dump(mode="json") == card.model_dump(mode="json")
    assert load_card(out).threshold == 0.4 and not seen[0].exists()  # the staging folder is gone
    assert card.accuracy["onnx_torch_max_abs_diff"] < 1e-4
    embedder = OnnxEmbedder(out, "cpu")
    faces = [FaceInput(chip) for chip in data.chips[:5]]
    batch = embedder.embed(faces)
    single = np.stack([embedder.embed([f])[0] for f in faces])
    assert batch.shape == (5, 16) and np.allclose(batch, single, atol=1e-5)  # dynamic batch axis
    model, config = load_run_model(run)
    assert config.input_size == card.input_size


def test_release_refuses_when_parity_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = synthetic_arrays(identities=4, per_identity=4)
    run = tmp_path / "run"
    train(_config(epochs=1), run, data, progress=False)
    monkeypatch.setattr("training.export.parity", lambda *a, **k: 1.0)
    with pytest.raises(RuntimeError, match="not released"):
        release(run, tmp_path / "m", data.chips[:4], "tiny", "0", "synthetic")
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == [run]
