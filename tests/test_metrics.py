from __future__ import annotations

import numpy as np
import pytest

from training.metrics import confidence_interval, kfold_accuracy, roc_auc, tar_at_far, threshold_at_far


def test_roc_auc_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    same = np.array([True, False, True, False])
    assert roc_auc(scores, same) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)


def test_kfold_accuracy_separable_and_random() -> None:
    rng = np.random.default_rng(0)
    same = np.arange(400) < 200
    separable = np.where(same, rng.uniform(0.6, 1.0, 400), rng.uniform(0.0, 0.4, 400))
    acc, _, threshold = kfold_accuracy(separable, same)
    assert acc == 1.0 and 0.4 <= threshold <= 0.6
    acc_random, _, _ = kfold_accuracy(rng.uniform(size=400), same)
    assert 0.35 < acc_random < 0.65


def test_tar_at_far() -> None:
    neg = np.linspace(0, 1, 1000)
    pos = np.full(10, 0.995)
    scores = np.concatenate([pos, neg])
    same = np.concatenate([np.ones(10, bool), np.zeros(1000, bool)])
    t = threshold_at_far(scores, same, 1e-2)
    assert (neg >= t).mean() <= 1e-2
    assert tar_at_far(scores, same, 1e-2) == 1.0
    assert tar_at_far(scores, same, 1e-3) == 0.0  # the top 0.1% of negatives outscore 0.995


def test_confidence_interval_width_of_1000_pairs() -> None:
    low, high = confidence_interval(0.9, 1000)
    assert low < 0.9 < high and 0.03 < high - low < 0.045


def test_roc_points_are_monotone_and_end_at_one() -> None:
    from training.metrics import roc_points

    rng = np.random.default_rng(0)
    same = np.arange(2000) < 1000
    scores = np.where(same, rng.normal(1, 1, 2000), rng.normal(0, 1, 2000))
    roc = roc_points(scores, same, points=10)
    assert len(roc["far"]) == len(roc["tar"]) == 10
    assert all(a <= b for a, b in zip(roc["tar"], roc["tar"][1:], strict=False)) and roc["tar"][-1] > 0.99
