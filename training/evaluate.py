"""LFW evaluation of students and the teacher: verification (View 1 test, 10-fold thresholds) in the
HR-HR, LR-LR and HR-LR protocols at several probe resolutions, the extended pair set of the test
people, and 1:N identification with one HR image of every test person enrolled
(:mod:`training.identification`)."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lrface.data.lfw import identity_split, image_path, make_pairs, read_pairs
from lrface.degradation import DegradationConfig, degrade
from lrface.embedder import OnnxEmbedder
from lrface.preprocessing import box_to_chip, hr_chip
from training.detections import DetectionCache, detector_chips
from training.identification import identification
from training.metrics import verification_report
from training.teacher_cache import TeacherCache

RESOLUTIONS = (8, 12, 16, 20, 24, 32)  # 20: where the routing between student and teacher falls
# Matched pairs per person in the extended set: uncapped, 56% of them belonged to two people.
EXTENDED_PAIRS_PER_PERSON = 20
Embed = Callable[[list[np.ndarray]], np.ndarray]  # uint8 faces of any size -> (N, D) unit vectors


@dataclass
class TestSet:
    files: list[Path]
    chips: np.ndarray  # aligned HR chips
    hr_teacher: np.ndarray  # teacher embeddings of the HR chips (from the cache)
    labels: np.ndarray
    official: np.ndarray  # (1000, 2) row indices of pairsDevTest.txt
    official_same: np.ndarray
    extended: np.ndarray
    extended_same: np.ndarray
    detector_chips: np.ndarray | None = None  # the same faces framed around the detector's box


DETECTOR_PREFIX = "det"  # 'det16': the face cut around the detector's box (frame_face), at 16 px


def is_detector_protocol(protocol: str) -> bool:
    return protocol.startswith(DETECTOR_PREFIX)


def load_test_set(
    lfw_root: Path, cache_root: Path, teacher: str = "dlib", seed: int = 0, detector: bool = False
) -> TestSet:
    split = identity_split(lfw_root)
    names = sorted(split.test)
    files = [f for n in names for f in split.test[n]]
    row = {f: i for i, f in enumerate(files)}
    labels = np.asarray([i for i, n in enumerate(names) for _ in split.test[n]])
    pairs = read_pairs(lfw_root / "pairsDevTest.txt")
    official = np.asarray(
        [
            [row[image_path(lfw_root, p.name_a, p.index_a)], row[image_path(lfw_root, p.name_b, p.index_b)]]
            for p in pairs
        ]
    )
    extended_pairs = make_pairs(split.test, seed=seed, max_per_person=EXTENDED_PAIRS_PER_PERSON)
    extended = np.asarray([[row[a], row[b]] for a, b, _ in extended_pairs])
    targets = TeacherCache(cache_root, teacher).targets(files)
    found = DetectionCache(cache_root).boxes(files) if detector else None
    return TestSet(
        files,
        targets.chips,
        targets.emb,
        labels,
        official,
        np.asarray([p.same for p in pairs]),
        extended,
        np.asarray([s for _, _, s in extended_pairs]),
        detector_chips(files, found, targets.chips) if found is not None else None,
    )


def probe_faces(chips: np.ndarray, protocol: str, seed: int = 0) -> list[np.ndarray]:
    """Degrade every chip for a probe protocol: 'hr' (as they are), 'lr<size>' or 'surveillance<size>'
    (the degradation model, which starts from the canonical chip as every HR-to-LR path does)."""
    if protocol == "hr":
        return list(chips)
    if protocol.startswith("surveillance"):
        config = DegradationConfig.surveillance(int(protocol.removeprefix("surveillance")))
    else:
        config = DegradationConfig(size=int(protocol.removeprefix("lr")))
    return [degrade(chip, config, np.random.default_rng((seed, i))) for i, chip in enumerate(chips)]


def protocol_faces(test: TestSet, protocol: str, seed: int = 0) -> list[np.ndarray]:
    """The test faces under ``protocol``: :func:`probe_faces` of the aligned chips, or for 'det<size>'
    (and 'dethr', their gallery) of the detector-box chips."""
    if not is_detector_protocol(protocol):
        return probe_faces(test.chips, protocol, seed)
    if test.detector_chips is None:
        raise ValueError(f"protocol {protocol} needs the test set's detector chips (load_test_set(detector=True))")
    return probe_faces(test.detector_chips, protocol.removeprefix(DETECTOR_PREFIX), seed)


TRACK_SIZES = (1, 3, 5)  # probes fused per track


def track_views(chip: np.ndarray, count: int, size: int, seed: int) -> list[np.ndarray]:
    """``count`` views of one face as consecutive frames of a camera give them: the face box moved by up
    to 4% of its side, and each frame's own blur, sensor noise and JPEG, at ``size`` px."""
    rng = np.random.default_rng(seed)
    side = chip.shape[0]
    config = DegradationConfig(size=size, blur_sigma=(0.0, 1.0), noise_std=(0.0, 4.0), jpeg_quality=(40, 90))
    views = []
    for _ in range(count):
        dx, dy = rng.uniform(-0.04, 0.04, 2) * side
        face = box_to_chip(chip, (dx, dy, side + dx, side + dy))
        views.append(degrade(face, config, rng))
    return views


def fusion_identification(embed: Embed, test: TestSet, gallery: np.ndarray, size: int = 16) -> dict[str, Any]:
    """Rank-1 of tracks of 1, 3 and 5 frames of each probe face (:func:`track_views`), fused as the
    service fuses them (``/identify`` with ``fuse=true``: unit embeddings averaged, re-normalised)."""
    most = max(TRACK_SIZES)
    views = [v for row, chip in enumerate(test.chips) for v in track_views(chip, most, size, row)]
    emb = embed(views).reshape(len(test.chips), most, -1)
    out = {}
    for count in TRACK_SIZES:
        fused = emb[:, :count].mean(1)
        fused /= np.maximum(np.linalg.norm(fused, axis=1, keepdims=True), 1e-12)
        out[str(count)] = identification(gallery, fused, test.labels)
    return out


def student_embedder(model_dir: Path) -> Embed:
    """A released model's embeddings of uint8 faces: the one ONNX embedder, as the service runs it."""
    return OnnxEmbedder(model_dir, "cpu").embed_images


_teacher: dict[str, Any] = {}


def _teacher_init(name: str) -> None:
    from training.teachers import get_teacher

    _teacher["t"] = get_teacher(name)


def _teacher_embed(faces: list[np.ndarray]) -> np.ndarray:
    return _teacher["t"].embed(np.stack([hr_chip(f) for f in faces]))


def teacher_embedder(name: str, workers: int = 1) -> Embed:
    """The teacher on faces up-sampled (bicubic) to its input: what a user gets without lrface."""

    def embed(faces: list[np.ndarray]) -> np.ndarray:
        chunks = [faces[i : i + 32] for i in range(0, len(faces), 32)]
        with mp.get_context("spawn").Pool(workers, _teacher_init, (name,)) as pool:
            parts = list(
                tqdm(pool.imap(_teacher_embed, chunks), total=len(chunks), desc=f"teacher {name}", leave=False)
            )
        return np.concatenate(parts)

    return embed


def evaluate_model(
    embed_protocol: Callable[[str], np.ndarray], test: TestSet, protocols: list[str], gallery: np.ndarray | None = None
) -> dict[str, Any]:
    """Metrics for every probe protocol; ``embed_protocol(p)`` gives the model's embeddings of all test
    faces under protocol ``p`` ('hr' for the clean HR faces). The enrolled side of identification and of
    HR-LR pairs is the model's own HR embedding, or ``gallery`` where given (a student whose gallery holds
    centred teacher embeddings: :meth:`lrface.model_card.GalleryFromTeacher.vectors`)."""
    hr_emb = embed_protocol("hr")
    enrolled = hr_emb if gallery is None else gallery
    results: dict[str, Any] = {
        "hr-hr": _pairs_report(hr_emb, hr_emb, test),
        "ident@hr": identification(enrolled, hr_emb, test.labels),
    }
    if any(is_detector_protocol(p) for p in protocols):
        det_hr = embed_protocol(f"{DETECTOR_PREFIX}hr")  # detector protocols enrol detector crops too
        results[f"ident@{DETECTOR_PREFIX}hr"] = identification(det_hr, det_hr, test.labels)
    for protocol in protocols:
        lr_emb = embed_protocol(protocol)
        # A gallery given is the teacher's view of the enrolled photos, which the service also takes for a
        # photo it searched (dlib aligns the face it found): detector protocols enrol it too.
        side = det_hr if is_detector_protocol(protocol) and gallery is None else enrolled
        results[f"lr-lr@{protocol}"] = _pairs_report(lr_emb, lr_emb, test)
        results[f"hr-lr@{protocol}"] = _pairs_report(side, lr_emb, test)
        results[f"ident@{protocol}"] = identification(side, lr_emb, test.labels)
    return results


def _pairs_report(a: np.ndarray, b: np.ndarray, test: TestSet) -> dict[str, Any]:
    """The official pairs (Wilson intervals, as LFW reports them) and the extended set (intervals from a
    bootstrap over the people who own the pairs)."""
    official = (a[test.official[:, 0]] * b[test.official[:, 1]]).sum(1)
    extended = (a[test.extended[:, 0]] * b[test.extended[:, 1]]).sum(1)
    return {
        "official": verification_report(official, test.official_same),
        "extended": verification_report(extended, test.extended_same, owners=test.labels[test.extended[:, 0]]),
    }


def save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
