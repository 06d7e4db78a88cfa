"""Identification metrics against hand-made galleries."""

from __future__ import annotations

import numpy as np
import pytest

from training.identification import bootstrap_rank1, first_of_each, identification


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_first_image_of_everyone_is_enrolled_singletons_included() -> None:
    enrolled, probes = first_of_each(np.array([0, 0, 1, 2, 2, 2]))
    assert enrolled.tolist() == [0, 2, 3] and probes.tolist() == [1, 4, 5]


def test_rank_and_open_set_by_hand() -> None:
    # People 0, 1, 2 enrolled (rows 0, 2, 3); probes: row 1 (person 0, found), rows 4, 5 (person 2:
    # row 4 found, row 5 closer to person 1).
    hr = _unit([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])
    probe = _unit([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 0, 1], [0.1, 0, 1], [0, 1, 0.5]])
    result = identification(hr, probe, np.array([0, 0, 1, 2, 2, 2]))
    assert result["rank1"] == pytest.approx(2 / 3) and result["rank5"] == 1.0
    assert result["rank1_per_person"] == pytest.approx((1.0 + 0.5) / 2)
    assert result["enrolled"] == 3 and result["probes"] == 3 and result["probe_people"] == 2
    # Non-mated best scores: row 1 vs {1, 2} -> 0.0995, row 4 vs {0, 1} -> 0.0995, row 5 vs {0, 1} -> 0.894.
    # At FPIR 10% (threshold just above 0.894) only scores above it count: rows 1 and 4 (0.995) are hits.
    assert result["fnir_at_fpir_0.1"] == pytest.approx(1 / 3)


def test_bootstrap_interval_holds_the_rate() -> None:
    hits = np.array([1] * 80 + [0] * 20)
    owners = np.repeat(np.arange(20), 5)
    low, high = bootstrap_rank1(hits, owners)
    assert low <= 0.8 <= high and high - low < 0.4
    low, high = bootstrap_rank1(np.ones(10), np.arange(10))
    assert low == high == 1.0


def test_the_size_threshold_is_where_the_teacher_wins_from_there_up() -> None:
    from training.routing import choose_size_threshold, routed_results

    student = {"lr8": 0.3, "lr12": 0.4, "lr16": 0.45, "lr24": 0.44, "lr32": 0.45, "hr": 0.5, "surveillance16": 0.2}
    teacher = {"lr8": 0.1, "lr12": 0.42, "lr16": 0.40, "lr24": 0.6, "lr32": 0.7, "hr": 0.9, "surveillance16": 0.1}
    assert choose_size_threshold(student, teacher) == 24  # 12 px alone does not count: 16 px loses
    assert choose_size_threshold(student, {**teacher, "hr": 0.4}) is None
    routed = routed_results(
        {"ident@lr16": "s16", "ident@lr24": "s24", "ident@hr": "shr", "config": {}},
        {"ident@lr16": "t16", "ident@lr24": "t24", "ident@hr": "thr"},
        24,
    )
    assert routed == {"ident@lr16": "s16", "ident@lr24": "t24", "ident@hr": "thr"}
    # Rows the teacher was not evaluated on (detector crops, fused tracks) stay out of the routed row.
    extra = {"ident@det24": "sd24", "ident@dethr": "sdhr", "fusion@lr16": {}}
    assert routed_results({"ident@lr24": "s24", **extra}, {"ident@lr24": "t24"}, 24) == {"ident@lr24": "t24"}
