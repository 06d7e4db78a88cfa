"""Training views of faces as the service takes them from JPEG frames (``training.detected_views``):
found by the detector, cut by its landmarks, one a face, seeded and cached; the dataset uses them in the
share the config asks for, and validation scores rank-1 of the faces found (a missed face: a miss)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lrface.preprocessing import load_image_file, normalise
from tests.faces import lfw_faces

torch = pytest.importorskip("torch")

from tests.synthetic_faces import synthetic_arrays  # noqa: E402
from training.dataset import DistillDataset  # noqa: E402
from training.detected_views import detected_view, detected_views, service_detector  # noqa: E402
from training.validation import rank1_of_found  # noqa: E402


def _chips(count: int) -> np.ndarray:
    """Face chips of LFW photos (their centre: deep-funneled photos hold the face there)."""
    return np.stack([load_image_file(p)[50:200, 50:200] for p in lfw_faces("Colin_Powell", count)])


def test_a_face_is_found_small_in_a_jpeg_frame_and_a_blank_chip_gives_none() -> None:
    detector = service_detector()
    view = detected_view(_chips(1)[0], 24.0, 90, 16, detector)
    assert view is not None and view.shape == (16, 16, 3) and view.dtype == np.uint8
    assert view.std() > 10  # a face, not a flat patch
    assert detected_view(np.full((150, 150, 3), 128, np.uint8), 24.0, 90, 16, detector) is None


def test_views_are_seeded_cached_and_take_listed_sides_in_turn(tmp_path: Path) -> None:
    chips = np.concatenate([_chips(3), np.full((1, 150, 150, 3), 90, np.uint8)])
    views, found = detected_views(chips, 16, (22, 28), (80, 90), seed=1, cache=tmp_path, progress=False)
    assert found.tolist() == [True, True, True, False]
    assert not views[3].any()  # nothing found: left empty (the dataset falls back to the usual view)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again, _ = detected_views(chips, 16, (22, 28), (80, 90), seed=1, cache=tmp_path, progress=False)
    assert np.array_equal(views, again)
    other, _ = detected_views(chips, 16, (22, 28), (80, 90), seed=2, cache=None, progress=False)
    assert not np.array_equal(views[:3], other[:3])  # another seed: other sides and qualities
    listed, _ = detected_views(chips[:2], 16, (22, 26, 30), 92, seed=1, cache=None, progress=False)
    for row, side in ((0, 22.0), (1, 26.0)):  # the service's detector, the listed sides in turn
        view = detected_view(chips[row], side, 92, 16, service_detector())
        assert view is not None and np.array_equal(listed[row], view)


def test_the_dataset_uses_a_found_view_in_the_share_asked_for_mirrored_with_its_target() -> None:
    from training.config import AugmentConfig

    data = synthetic_arrays(identities=4, per_identity=4)
    rng = np.random.default_rng(0)
    views = rng.integers(0, 255, (len(data.labels), 16, 16, 3), dtype=np.uint8)
    found = np.arange(len(data.labels)) % 2 == 0  # odd rows: not found
    with_views = replace(data, detected=(views, found))
    dataset = DistillDataset(with_views, 16, AugmentConfig(detected_view_probability=1.0))
    for index in range(len(data.labels)):
        item = dataset[index]
        lr = item["lr"].numpy()
        plain, mirrored = normalise(views[index]), normalise(np.ascontiguousarray(views[index][:, ::-1]))
        if not found[index]:
            assert not np.array_equal(lr, plain) and not np.array_equal(lr, mirrored)
        elif np.array_equal(lr, mirrored) and not np.array_equal(lr, plain):
            assert np.array_equal(item["target"].numpy(), data.emb_flip[index])
        else:
            assert np.array_equal(lr, plain)
            assert np.array_equal(item["target"].numpy(), data.emb[index])
    none = DistillDataset(with_views, 16, AugmentConfig(detected_view_probability=0.0))
    assert not any(np.array_equal(none[i]["lr"].numpy(), normalise(views[i])) for i in range(len(data.labels)))


def test_rank1_of_found_counts_a_missed_face_as_a_miss() -> None:
    labels = np.array([0, 0, 1, 1])
    gallery = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]]
    probes = gallery.copy()  # every probe nearest its own person
    assert rank1_of_found(gallery, probes, np.ones(4, bool), labels) == 1.0
    assert rank1_of_found(gallery, probes, np.array([True, False, True, True]), labels) == 0.5


def test_a_run_with_detected_views_scores_them_on_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.config import AugmentConfig, LossWeights, TrainConfig
    from training.loop import train
    from training.validation import ValData

    monkeypatch.setenv("LRFACE_CACHE", str(tmp_path / "cache"))
    from lrface.settings import get_settings

    get_settings.cache_clear()
    data = synthetic_arrays(identities=4, per_identity=3)
    n = len(data.labels)
    pairs = np.array([[i, j] for i in range(0, n, 3) for j in range(i + 1, n, 5)])
    val = ValData(data.chips, pairs, data.labels[pairs[:, 0]] == data.labels[pairs[:, 1]], data.labels)
    config = TrainConfig(name="d", model="resface-s", input_size=16, embedding_size=16, epochs=1, batch_size=8,
                         lr=0.01, warmup_epochs=0, workers=0, losses=LossWeights(instance=1.0),
                         augment=AugmentConfig(detected_view_probability=0.5),
                         select_by="val_rank1_detected_mean")  # fmt: skip
    train(config, tmp_path / "run", data, val, progress=False)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_rank1_detected"] == 0.0  # no synthetic pattern is a face the detector finds: all misses
    assert row["val_rank1_detected_mean"] == pytest.approx(row["val_rank1"] / 2)
    assert len(list((tmp_path / "cache" / "detected-views").glob("*.npz"))) == 2  # training and validation faces
    get_settings.cache_clear()


def test_validation_scores_the_detected_probes_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Views that are the clean validation inputs themselves, all found: their rank-1 is the clean one."""
    import training.detected_views as views_module
    from lrface.preprocessing import hr_to_lr
    from training.config import AugmentConfig, LossWeights, TrainConfig
    from training.loop import train
    from training.validation import ValData

    def clean(chips: np.ndarray, size: int, *_: object, **__: object) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([hr_to_lr(c, size) for c in chips]), np.ones(len(chips), bool)

    monkeypatch.setattr(views_module, "detected_views", clean)
    data = synthetic_arrays(identities=4, per_identity=3)
    n = len(data.labels)
    pairs = np.array([[i, j] for i in range(0, n, 3) for j in range(i + 1, n, 5)])
    val = ValData(data.chips, pairs, data.labels[pairs[:, 0]] == data.labels[pairs[:, 1]], data.labels)
    config = TrainConfig(name="d", model="resface-s", input_size=16, embedding_size=16, epochs=2, batch_size=8,
                         lr=0.05, warmup_epochs=0, workers=0, losses=LossWeights(identity=1.0, instance=1.0),
                         augment=AugmentConfig(detected_view_probability=0.5))  # fmt: skip
    train(config, tmp_path / "run", data, val, progress=False)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_rank1"] > 0
    assert row["val_rank1_detected"] == pytest.approx(row["val_rank1"])


def test_a_config_asking_for_what_detected_views_give_without_them_is_refused() -> None:
    from training.config import AugmentConfig, TrainConfig

    with pytest.raises(ValueError, match="needs augment.detected_view_probability"):
        TrainConfig(select_by="val_rank1_detected_mean")
    with pytest.raises(ValueError, match="augment_enabled false"):
        TrainConfig(augment=AugmentConfig(detected_view_probability=0.5), augment_enabled=False)
    with pytest.raises(ValueError, match="detected_view_px"):
        AugmentConfig(detected_view_px=(1, 3))
