"""Export of a (tiny, really trained) run: ONNX with a dynamic batch axis that agrees with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrface.model_card import load_card  # noqa: E402
from service.embedder import Embedder, FaceInput  # noqa: E402
from tests.synthetic_faces import synthetic_arrays  # noqa: E402
from tests.test_training_loop import _config  # noqa: E402
from training.export import load_run_model, release  # noqa: E402
from training.loop import train  # noqa: E402


def test_release_writes_onnx_and_card_that_the_service_accepts(tmp_path: Path) -> None:
    data = synthetic_arrays(identities=4, per_identity=4)
    run = tmp_path / "run"
    train(_config(epochs=1), run, data, progress=False)
    out = tmp_path / "model"
    card = release(run, out, data.chips[:8], "tiny", "0", 0.4, {"far_1e-3": 0.6}, {"note": "test"}, "synthetic")
    assert load_card(out).model_dump(mode="json") == card.model_dump(mode="json")
    assert card.accuracy["onnx_torch_max_abs_diff"] < 1e-4
    embedder = Embedder(out, "cpu")
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
        release(run, tmp_path / "m", data.chips[:4], "tiny", "0", 0.4, {}, {}, "synthetic")
    assert not (tmp_path / "m" / "model.onnx").exists()
