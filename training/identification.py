"""1:N identification on a gallery of every test person: closed-set rank-1 / rank-5 (per probe and
averaged per person, with a bootstrap interval over people) and open-set figures the way NIST FRVT
reports 1:N (FNIR at fixed FPIR).

Gallery: the first (HR) image of every person, singletons included (they are distractors). Probes:
every other image, under a probe protocol. A probe's *mated* search runs against the whole gallery;
its *non-mated* search against the gallery without its own person (leave-one-out), so every probe
gives one search of each kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FPIR_POINTS = (0.01, 0.1)


def first_of_each(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each person's first image (the enrolled one), and the rows of every other image."""
    first: dict[int, int] = {}
    for row, label in enumerate(labels.tolist()):
        first.setdefault(int(label), row)
    enrolled = np.asarray(sorted(first.values()))
    probes = np.setdiff1d(np.arange(len(labels)), enrolled)
    return enrolled, probes


def bootstrap_rank1(hits: np.ndarray, owners: np.ndarray, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of per-probe rank-1 with people resampled (a few people own most LFW probes)."""
    people, inverse = np.unique(owners, return_inverse=True)
    hits_per = np.bincount(inverse, weights=hits.astype(np.float64), minlength=len(people))
    probes_per = np.bincount(inverse, minlength=len(people)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(people), size=(rounds, len(people)))
    rates = hits_per[draws].sum(1) / probes_per[draws].sum(1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def identification(gallery_emb: np.ndarray, probe_emb: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Closed- and open-set identification; ``gallery_emb`` and ``probe_emb`` hold every test image's
    embedding (HR for the gallery, the protocol's probe for the probes), unit length."""
    enrolled, probe_rows = first_of_each(labels)
    gallery_labels = labels[enrolled]
    column = {int(label): i for i, label in enumerate(gallery_labels.tolist())}
    scores = probe_emb[probe_rows] @ gallery_emb[enrolled].T
    mate = np.asarray([column[int(label)] for label in labels[probe_rows]])
    mate_score = scores[np.arange(len(mate)), mate]
    rank = (scores > mate_score[:, None]).sum(1)
    owners = labels[probe_rows]
    people = np.unique(owners)
    per_person = np.asarray([(rank[owners == p] < 1).mean() for p in people])
    low, high = bootstrap_rank1(rank < 1, owners)
    non_mated = scores.copy()
    non_mated[np.arange(len(mate)), mate] = -np.inf
    best_non_mate = non_mated.max(1)
    open_set: dict[str, float] = {}
    for fpir in FPIR_POINTS:
        # The lowest threshold at which at most ``fpir`` of the non-mated searches return anyone.
        threshold = float(np.quantile(best_non_mate, 1 - fpir, method="higher"))
        threshold = float(np.nextafter(threshold, np.inf))
        open_set[f"fnir_at_fpir_{fpir:g}"] = float(1 - ((rank < 1) & (mate_score >= threshold)).mean())
        open_set[f"threshold_at_fpir_{fpir:g}"] = threshold
    return {
        "rank1": float((rank < 1).mean()),
        "rank5": float((rank < 5).mean()),
        "rank1_ci95": [low, high],
        "rank1_per_person": float(per_person.mean()),
        "rank5_per_person": float(np.mean([(rank[owners == p] < 5).mean() for p in people])),
        **open_set,
        "probes": int(len(probe_rows)),
        "probe_people": int(len(people)),
        "enrolled": int(len(enrolled)),
    }
