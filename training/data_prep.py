"""From an identity-disjoint split and the teacher cache to training arrays and validation pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.data.lfw import Split, identity_split
from training.dataset import FaceArrays
from training.teacher_cache import TeacherCache
from training.validation import ValData, val_data


def arrays_for(identities: dict[str, list[Path]], cache: TeacherCache, workers: int = 2) -> FaceArrays:
    names = sorted(identities)
    files = [f for name in names for f in identities[name]]
    labels = np.asarray([i for i, name in enumerate(names) for _ in identities[name]], dtype=np.int64)
    targets = cache.targets(files, workers=workers)
    return FaceArrays(targets.chips, labels, targets.emb, targets.emb_flip)


def prepare(
    lfw_root: Path, cache_root: Path, teacher: str, val_fraction: float, seed: int
) -> tuple[Split, FaceArrays, ValData]:
    split = identity_split(lfw_root, val_fraction, seed)
    cache = TeacherCache(cache_root, teacher)
    return split, arrays_for(split.train, cache), val_data(split.val, cache, seed)
