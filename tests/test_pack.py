"""The training pack (what a GPU machine trains from) and the detector-box views of training faces."""

from __future__ import annotations

import json
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


def test_frame_jpeg_views_are_the_face_at_a_frame_size_through_jpeg() -> None:
    from lrface.preprocessing import face_to_input

    data = synthetic_arrays(identities=2, per_identity=3)
    still = dict(flip=False, scale=(1.0, 1.0), shift=0.0, aspect=(1.0, 1.0))
    still.update(blur_sigma=(0.0, 0.0), noise_std=(0.0, 0.0))

    def error(quality: int, size: int = 16) -> float:
        aug = AugmentConfig(**still, frame_jpeg_probability=1.0, frame_face_px=(size, size),
                            frame_jpeg_quality=(quality, quality))  # fmt: skip
        views = DistillDataset(data, 16, aug)
        return float(np.mean([np.abs(views[i]["lr"].numpy() - face_to_input(data.chips[i], 16)).mean()
                              for i in range(len(views))]))  # fmt: skip

    assert 0 < error(95) < error(30)  # compressed, and the more the lower the quality
    assert error(95) < error(95, size=10)  # at 10 px the face loses detail the 16-px input had
    for bad in (dict(frame_face_px=(28, 12)), dict(frame_face_px=(2, 12)), dict(frame_jpeg_quality=(70, 100))):
        with pytest.raises(ValueError, match="must be"):
            AugmentConfig(**bad)  # type: ignore[arg-type]


def test_validation_reports_rank1_of_validation_people() -> None:
    from training.models import get_model

    data = synthetic_arrays(identities=4, per_identity=3)
    model = get_model("resface-s", 16, 16)
    out = validate(model, _val(data.labels, data.chips), 16, torch.device("cpu"))
    assert set(out) == {"val_accuracy", "val_rank1", "val_rank1_jpeg", "val_rank1_mean"}
    assert all(0.0 <= out[k] <= 1.0 for k in out)
    assert out["val_rank1_mean"] == pytest.approx((out["val_rank1"] + out["val_rank1_jpeg"]) / 2)


def test_frame_probes_are_jpeg_frames_of_each_face_at_the_served_sizes() -> None:
    from lrface.degradation import DegradationConfig, degrade
    from training.validation import FRAME_PROBE_PX, frame_probes

    data = synthetic_arrays(identities=4, per_identity=3)
    val = _val(data.labels, data.chips)
    probes = frame_probes(val)
    assert [p.shape[0] for p in probes] == [FRAME_PROBE_PX[i % len(FRAME_PROBE_PX)] for i in range(len(probes))]
    assert all(np.array_equal(a, b) for a, b in zip(probes, frame_probes(val), strict=True))  # same every epoch
    # Compressed, not merely shrunk: each differs from the clean face at its size.
    clean = [degrade(chip, DegradationConfig(size=p.shape[0])) for chip, p in zip(val.chips, probes, strict=True)]
    assert all(not np.array_equal(a, b) for a, b in zip(probes, clean, strict=True))


def test_a_pack_carries_detected_views_and_a_run_from_it_needs_no_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Views are made where the data and the detector are (``lrface pack``), travel in the pack as they
    are, and a run from the pack uses them; views made with other settings are refused."""
    import training.detected_views as views_module
    from training.config import LossWeights, TrainConfig
    from training.dataset import canonical_chips
    from training.detected_views import with_detected_views
    from training.loop import train

    data = synthetic_arrays(identities=4, per_identity=3)
    val = _val(data.labels, data.chips)
    rng = np.random.default_rng(0)

    def made(chips: np.ndarray, size: int, *_: object, **__: object) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (len(chips), size, size, 3), dtype=np.uint8), np.arange(len(chips)) % 3 > 0

    monkeypatch.setattr(views_module, "detected_views", made)
    augment = AugmentConfig(detected_view_probability=0.5)
    config = TrainConfig(name="p", model="resface-s", input_size=16, embedding_size=16, epochs=1, batch_size=8,
                         lr=0.01, warmup_epochs=0, workers=0, losses=LossWeights(instance=1.0), augment=augment,
                         select_by="val_rank1_detected_mean")  # fmt: skip
    with_views, val_views = with_detected_views(config, canonical_chips(data), val)
    assert with_views.detected is not None and val_views is not None and val_views.detected is not None
    write_pack(tmp_path / "pack.npz", with_views, val_views)
    train_back, val_back = read_pack(tmp_path / "pack.npz")
    for back, sent in ((train_back, with_views), (val_back, val_views)):
        assert back.detected is not None and sent.detected is not None
        assert np.array_equal(back.detected[0], sent.detected[0]) and np.array_equal(back.detected[1], sent.detected[1])
        assert back.detected_recipe == sent.detected_recipe != ""
    assert train_back.detected_recipe != val_back.detected_recipe  # validation's sides and quality are fixed

    from lrface.preprocessing import normalise

    views, found = train_back.detected  # type: ignore[misc]
    every = DistillDataset(train_back, 16, AugmentConfig(detected_view_probability=1.0, flip=False))
    assert found.any() and not found.all()
    for row in range(len(found)):  # a found face's view is its input, bit for bit; the others are not
        assert np.array_equal(every[row]["lr"].numpy(), normalise(views[row])) == bool(found[row])

    def no_detector(*_: object, **__: object) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the views were made again")

    monkeypatch.setattr(views_module, "detected_views", no_detector)
    train(config, tmp_path / "run", train_back, val_back, progress=False)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= row["val_rank1_detected"] <= 1.0

    elsewhere = AugmentConfig(detected_view_probability=0.5, detected_view_px=(14, 20))
    other = config.model_copy(update={"augment": elsewhere})
    with pytest.raises(ValueError, match="write the pack again"):
        with_detected_views(other, train_back, val_back)
    with pytest.raises(ValueError, match="write the pack again"):  # validation's views are checked too
        with_detected_views(config, train_back, replace(val_back, detected_recipe="another"))
    with pytest.raises(ValueError, match="3 detected views for 12 faces"):
        with_detected_views(config, replace(train_back, detected=(views[:3], found[:3])), val_back)
