"""Verification metrics on scored pairs: LFW 10-fold accuracy, ROC AUC (scikit-learn), TAR at fixed FAR."""

from __future__ import annotations

from typing import Any

import numpy as np


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (midway between two adjacent scores) that classifies most pairs right."""
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], same[order].astype(bool)
    # Cut before item i: items < i are called different, items >= i the same person.
    neg_before = np.concatenate([[0], np.cumsum(~y)])
    pos_from = y.sum() - np.concatenate([[0], np.cumsum(y)])
    correct = neg_before + pos_from
    valid = np.ones(len(s) + 1, dtype=bool)
    valid[1:-1] = s[1:] > s[:-1]  # never cut between tied scores
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        return float(s[0] - 1e-6)
    if i == len(s):
        return float(s[-1] + 1e-6)
    return float((s[i - 1] + s[i]) / 2)


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float, float]:
    """LFW protocol: threshold chosen on 9 folds, accuracy measured on the 10th.

    Returns (mean accuracy, std over folds, mean threshold). Folds are contiguous blocks of an
    interleaving of the pairs, so each fold keeps the matched/mismatched balance.
    """
    same = same.astype(bool)
    fold_of = np.empty(len(scores), dtype=np.int64)
    for label_idx in (np.flatnonzero(same), np.flatnonzero(~same)):
        fold_of[label_idx] = np.arange(len(label_idx)) * folds // max(len(label_idx), 1)
    accs, thresholds = [], []
    for k in range(folds):
        test = fold_of == k
        if not test.any():
            continue
        t = _best_threshold(scores[~test], same[~test])
        thresholds.append(t)
        accs.append(float(((scores[test] >= t) == same[test]).mean()))
    return float(np.mean(accs)), float(np.std(accs)), float(np.mean(thresholds))


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn): the chance a matched pair outscores a mismatched one."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(same.astype(bool), scores))


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """Lowest threshold whose false accept rate on mismatched pairs is at most ``far``."""
    negatives = np.sort(scores[~same.astype(bool)])[::-1]
    allowed = int(np.floor(far * len(negatives)))
    return float(np.nextafter(negatives[allowed], np.inf)) if allowed < len(negatives) else float(negatives[-1])


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    t = threshold_at_far(scores, same, far)
    return float((scores[same.astype(bool)] >= t).mean())


def supported_far(negatives: int, far: float) -> bool:
    """A TAR at ``far`` means something only with at least 10 / far impostor pairs (10 false accepts)."""
    return negatives >= 10 / far


def roc_points(scores: np.ndarray, same: np.ndarray, points: int = 40) -> dict[str, list[float]]:
    """TAR at log-spaced FARs from the lowest the impostor count supports up to 1 (compact ROC)."""
    lowest = max(1e-3, 10 / max(int((~same.astype(bool)).sum()), 1))
    fars = np.logspace(np.log10(lowest), 0, points)
    return {"far": [float(f) for f in fars], "tar": [tar_at_far(scores, same, float(f)) for f in fars]}


def confidence_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of an accuracy measured on ``n`` pairs."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def people_bootstrap(correct: np.ndarray, owners: np.ndarray, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of a rate over pairs with the people who own them resampled (pairs of one person
    are not independent)."""
    people, inverse = np.unique(owners, return_inverse=True)
    sums = np.bincount(inverse, weights=correct.astype(np.float64), minlength=len(people))
    counts = np.bincount(inverse, minlength=len(people)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(people), size=(rounds, len(people)))
    rates = sums[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def verification_report(scores: np.ndarray, same: np.ndarray, owners: np.ndarray | None = None) -> dict[str, Any]:
    """10-fold accuracy with its 95% interval (Wilson; or a bootstrap over the pairs' ``owners``,
    people, when given), AUC, and TAR at the FARs that the impostor count supports (else None)."""
    acc, std, threshold = kfold_accuracy(scores, same)
    if owners is not None:
        low, high = people_bootstrap((scores >= threshold) == same.astype(bool), owners)
    else:
        low, high = confidence_interval(acc, len(scores))
    negatives = int((~same.astype(bool)).sum())
    return {
        "accuracy": acc,
        "accuracy_std": std,
        "ci95_low": low,
        "ci95_high": high,
        "ci95_method": "bootstrap over people" if owners is not None else "Wilson over pairs",
        "threshold": threshold,
        "auc": roc_auc(scores, same),
        "tar_far_1e-2": tar_at_far(scores, same, 1e-2) if supported_far(negatives, 1e-2) else None,
        "tar_far_1e-3": tar_at_far(scores, same, 1e-3) if supported_far(negatives, 1e-3) else None,
        "impostor_pairs": negatives,
        "pairs": float(len(scores)),
        "roc": roc_points(scores, same),
    }
