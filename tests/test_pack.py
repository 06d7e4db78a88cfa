"""The training pack (what a GPU machine trains from) and the detector-box views of training faces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrface.preprocessing import CHIP_SIDE, box_to_chip, resize  # noqa: E402
from tests.synthetic_faces import synthetic_arrays  # noqa: E402
from training.config import AugmentConfig  # noqa: E402
from training.dataset import DistillDataset  # noqa: E402
from training.pack import read_pack, write_pack  # noqa: E402
from training.validation import ValData, validate  # noqa: E402


def _val(labels: np.ndarray, chips: np.ndarray) -> ValData:
    pairs = np.array([[i, j] for i in range(len(labels)) for j in range(i + 1, len(labels))])
    return ValData(chips, pairs, labels[pairs[:, 0]] == labels[pairs[:, 1]], labels)


def test_pack_round_trip_keeps_faces_targets_and_validation_people(tmp_path: Path) -> None:
    data = synthetic_arrays(identities=5, per_identity=4, size=48)
    data.detector_chips = np.ascontiguousarray(data.chips[:, :, ::-1])  # another framing of the same faces
    val = _val(data.labels[:8], data.chips[:8])
    write_pack(tmp_path / "pack.npz", data, val)
    train, val_back = read_pack(tmp_path / "pack.npz")
    assert np.array_equal(train.labels, data.labels)
    np.testing.assert_allclose(train.emb, data.emb, atol=2e-3)
    np.testing.assert_allclose(train.emb_flip, data.emb_flip, atol=2e-3)
    canonical = np.stack([resize(box_to_chip(c), CHIP_SIDE) for c in data.chips]).astype(int)
    assert train.chips.shape == (len(data.labels), CHIP_SIDE, CHIP_SIDE, 3)
    # JPEG at the pack's quality (these noisy colour patterns are JPEG's worst case; faces lose about
    # 2.7 grey levels): each chip comes back as its own face, in its own place.
    error = np.abs(train.chips.astype(int) - canonical).mean()
    assert error < 15
    assert train.detector_chips is not None
    assert np.abs(train.detector_chips.astype(int) - canonical[:, :, ::-1]).mean() < 15
    assert np.abs(train.detector_chips.astype(int) - canonical).mean() > 3 * error
    assert np.abs(train.chips[1:].astype(int) - canonical[:-1]).mean() > 3 * error
    assert np.array_equal(val_back.pairs, val.pairs) and np.array_equal(val_back.same, val.same)
    assert val_back.labels is not None and np.array_equal(val_back.labels, val.labels)


def test_detector_crop_views_come_from_the_detector_chips() -> None:
    data = synthetic_arrays(identities=3, per_identity=3)
    other = np.ascontiguousarray(data.chips[::-1])
    aug = AugmentConfig()
    # Every view from the detector chip: the same views as a dataset whose chips are those chips.
    crops = DistillDataset(replace(data, detector_chips=other), 16, aug, detector_crops=1.0)
    same = DistillDataset(replace(data, chips=other, detector_chips=other), 16, aug, detector_crops=1.0)
    assert all(torch.equal(crops[i]["lr"], same[i]["lr"]) for i in range(len(crops)))
    # Never: the views of a dataset without detector chips, bit for bit.
    never = DistillDataset(replace(data, detector_chips=other), 16, aug, detector_crops=0.0)
    plain = DistillDataset(data, 16, aug)
    assert all(torch.equal(never[i]["lr"], plain[i]["lr"]) for i in range(len(never)))
    with pytest.raises(ValueError, match="detector-box chips"):
        DistillDataset(data, 16, aug, detector_crops=0.5)


def test_validation_reports_rank1_of_validation_people() -> None:
    from training.models import get_model

    data = synthetic_arrays(identities=4, per_identity=3)
    model = get_model("resface-s", 16, 16)
    out = validate(model, _val(data.labels, data.chips), 16, torch.device("cpu"))
    assert set(out) == {"val_accuracy", "val_rank1"} and 0.0 <= out["val_rank1"] <= 1.0
