"""Training views of a face as the service sees it in a camera's frame: the face small in a JPEG
frame (:func:`lrface.degradation.distant_view`), found there by the bundled detector
(:class:`lrface.detection.MtcnnDetector` with the service's settings, :func:`service_detector`), cut by its
landmarks (:func:`lrface.landmarks.landmark_chip`) and brought to the model's input
(:func:`lrface.preprocessing.hr_to_lr`): the detector's landmark error, the resampling of the frame's
pixels and JPEG's colour all in one view, as no degradation of the aligned chip has them.

Validation people's faces pasted at 16 px, the v5 student alone (one-off script, 963-person
gallery): rank-1 62.4% on their aligned chips, 46% detected in lossless frames, 32-34% detected in
JPEG-92 frames; the detector's landmarks cost about 7 of those points (the same faces cut by the true
landmarks, carried from the HR photo: 31.6 -> 38.7% on JPEG frames). Detecting is too slow to do per
step on a CPU (about 11 ms a face), so each face gets one view, drawn once (seeded) and cached under
``LRFACE_CACHE/detected-views``."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from tqdm import tqdm

from lrface.degradation import distant_view
from lrface.detection import MtcnnDetector
from lrface.landmarks import LandmarkError, landmark_chip
from lrface.preprocessing import hr_to_lr, load_image
from lrface.settings import get_settings

if TYPE_CHECKING:  # not at run time: training.dataset imports torch, which this module must not
    from training.config import TrainConfig
    from training.dataset import FaceArrays
    from training.validation import ValData

Faces = TypeVar("Faces", "FaceArrays", "ValData")

# The validation probes' sides and quality (``val_rank1_detected``): as the frame benchmark sends frames.
VAL_SIDES = (14, 16, 18, 20)
VAL_QUALITY = 92
# Part of every cache key: raise it when what makes a view changes (the views cached before are then unused).
VERSION = 2


def service_detector() -> MtcnnDetector:
    """The detector as the service searches uploads (``LRFACE_DETECT_MIN_FACE_PX``, ``LRFACE_DETECT_THRESHOLDS``):
    a face it would miss is missed here too."""
    min_face_px, thresholds = _detector_settings()
    return MtcnnDetector(min_face_px=min_face_px, thresholds=thresholds)


def _detector_settings() -> tuple[float, tuple[float, float, float]]:
    settings = get_settings()
    return settings.detect_min_face_px, settings.detect_thresholds


def recipe(size: int, sides: tuple[int, ...], qualities: tuple[int, int] | int, seed: int) -> str:
    """What makes a set of views, as a pack records it: views made otherwise are refused in its place."""
    return repr((VERSION, size, tuple(sides), qualities, seed, *_detector_settings()))


def with_detected_views(
    config: TrainConfig, train_data: FaceArrays, val: ValData | None, progress: bool = True
) -> tuple[FaceArrays, ValData | None]:
    """``train_data`` with each face's detected view (drawn from the config's ``augment.detected_view_*``)
    and ``val`` with its faces' (at :data:`VAL_SIDES`, which ``val_rank1_detected`` scores). Views
    already there (a pack's, made where the data and the detector are) are kept if they were made
    the way the config asks, and refused otherwise; missing ones are made (cached)."""
    augment = config.augment
    cache = get_settings().cache / "detected-views"
    train_args = (config.input_size, augment.detected_view_px, augment.detected_view_quality, config.seed)
    train_data = _attached(train_data, train_args, cache, progress)
    if val is not None and val.labels is not None:
        val = _attached(val, (config.input_size, VAL_SIDES, VAL_QUALITY, 0), cache, progress)
    return train_data, val


def _attached(
    faces: Faces, args: tuple[int, tuple[int, ...], tuple[int, int] | int, int], cache: Path, progress: bool
) -> Faces:
    # The chips' side is not part of it: a pack's chips are canonical (64 px), as the loop's are but for
    # a run with an HR assistant (larger chips), whose views a pack would not reproduce.
    wanted = recipe(*args)
    if faces.detected is not None:
        if len(faces.detected[1]) != len(faces.chips):
            count = len(faces.detected[1])
            raise ValueError(f"{count} detected views for {len(faces.chips)} faces: write the pack again")
        if faces.detected_recipe != wanted:
            raise ValueError(
                f"the detected views given were made as {faces.detected_recipe or 'unknown'}, "
                f"the config asks for {wanted}: write the pack again"
            )
        return faces
    return replace(faces, detected=detected_views(faces.chips, *args, cache=cache, progress=progress),
                   detected_recipe=wanted)  # fmt: skip


def detected_view(chip: np.ndarray, side: float, quality: int, size: int, detector: MtcnnDetector) -> np.ndarray | None:
    """``chip``'s face as the service takes it from a distant camera's JPEG frame at ``side`` px and
    ``quality``: the largest face the detector finds, its landmark chip at ``size`` px (uint8); None
    where it finds none (or its landmarks place no chip)."""
    frame = load_image(distant_view(chip, side, quality))
    found = detector.detect(frame)
    if not found:
        return None
    try:  # the largest face (the detector lists them largest first), as the service's distant views take it
        return hr_to_lr(landmark_chip(frame, found[0].landmarks), size)
    except LandmarkError:
        return None


def detected_views(
    chips: np.ndarray,
    size: int,
    sides: tuple[int, int] | tuple[int, ...],
    qualities: tuple[int, int] | int,
    seed: int,
    cache: Path | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One detected view of each chip: ``(views (N, size, size, 3) uint8, found (N,) bool)``. ``sides``:
    a ``(low, high)`` range drawn from per face, or, with more than two, the sides taken in turn;
    ``qualities``: a range drawn from, or one quality. Seeded by ``seed`` and the row; kept in ``cache``
    (a folder) under a key of the chips and the settings."""
    key = hashlib.sha256(np.ascontiguousarray(chips).tobytes())
    key.update(f"{chips.shape}{recipe(size, tuple(sides), qualities, seed)}".encode())
    path = None if cache is None else cache / f"{key.hexdigest()[:24]}.npz"
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return stored["views"], stored["found"]
    detector = service_detector()  # loaded only when the views are made
    views = np.zeros((len(chips), size, size, 3), np.uint8)
    found = np.zeros(len(chips), bool)
    for i, chip in enumerate(tqdm(chips, desc="detected views", disable=not progress)):
        rng = np.random.default_rng((seed, i))
        side = sides[i % len(sides)] if len(sides) > 2 else int(rng.integers(sides[0], sides[1] + 1))
        quality = qualities if isinstance(qualities, int) else int(rng.integers(qualities[0], qualities[1] + 1))
        view = detected_view(chip, float(side), quality, size, detector)
        if view is not None:
            views[i], found[i] = view, True
    if path is not None:  # written whole under a name of its own, then renamed: processes side by side never mix
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(suffix=".npz", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            np.savez(out, views=views, found=found)
        os.replace(partial, path)
    return views, found
