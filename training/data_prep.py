"""From an identity-disjoint split and the teacher cache to training arrays and validation pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.data.lfw import Split, identity_split, list_identities
from training.dataset import FaceArrays
from training.detections import DetectionCache, detector_chips
from training.teacher_cache import TeacherCache
from training.validation import ValData, val_data


def arrays_for(
    identities: dict[str, list[Path]], cache: TeacherCache, workers: int = 2, detections: DetectionCache | None = None
) -> FaceArrays:
    """Training arrays of ``identities``: aligned chips, labels, teacher targets and, with
    ``detections``, each face's canonical chip framed around the detector's box."""
    names = sorted(identities)
    files = [f for name in names for f in identities[name]]
    labels = np.asarray([i for i, name in enumerate(names) for _ in identities[name]], dtype=np.int64)
    targets = cache.targets(files, workers=workers)
    found = detections.boxes(files) if detections is not None else None
    detector = detector_chips(files, found, targets.chips) if found is not None else None
    return FaceArrays(targets.chips, labels, targets.emb, targets.emb_flip, detector)


def training_identities(split: Split, extra_roots: list[Path]) -> dict[str, list[Path]]:
    """LFW's training people plus every person of the extra data folders (``<root>/images/<id>/*``),
    named ``<folder>/<id>``; extra people never enter validation or test."""
    people = dict(split.train)
    for root in extra_roots:
        people.update({f"{root.name}/{name}": files for name, files in list_identities(root).items()})
    return people


def prepare(
    lfw_root: Path,
    cache_root: Path,
    teacher: str,
    val_fraction: float,
    seed: int,
    extra_roots: list[Path] | None = None,
    detector_crops: bool = False,
) -> tuple[Split, FaceArrays, ValData]:
    split = identity_split(lfw_root, val_fraction, seed)
    cache = TeacherCache(cache_root, teacher)
    train = training_identities(split, extra_roots or [])
    detections = DetectionCache(cache_root) if detector_crops else None
    return split, arrays_for(train, cache, detections=detections), val_data(split.val, cache, seed)
