"""From an identity-disjoint split and the teacher cache to training arrays and validation pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.data.lfw import Split, identity_split, make_pairs
from training.dataset import FaceArrays
from training.loop import ValData
from training.teacher_cache import TeacherCache


def arrays_for(identities: dict[str, list[Path]], cache: TeacherCache, workers: int = 2) -> FaceArrays:
    names = sorted(identities)
    files = [f for name in names for f in identities[name]]
    labels = np.asarray([i for i, name in enumerate(names) for _ in identities[name]], dtype=np.int64)
    targets = cache.targets(files, workers=workers)
    return FaceArrays(targets.chips, labels, targets.emb, targets.emb_flip)


def val_data(identities: dict[str, list[Path]], cache: TeacherCache, seed: int = 0) -> ValData:
    files = sorted(f for fs in identities.values() for f in fs)
    row = {f: i for i, f in enumerate(files)}
    pairs = make_pairs(identities, seed=seed)
    chips = cache.targets(files).chips
    return ValData(
        chips=chips,
        pairs=np.asarray([[row[a], row[b]] for a, b, _ in pairs], dtype=np.int64),
        same=np.asarray([same for _, _, same in pairs], dtype=bool),
    )


def prepare(
    lfw_root: Path, cache_root: Path, teacher: str, val_fraction: float, seed: int
) -> tuple[Split, FaceArrays, ValData]:
    split = identity_split(lfw_root, val_fraction, seed)
    cache = TeacherCache(cache_root, teacher)
    return split, arrays_for(split.train, cache), val_data(split.val, cache, seed)
