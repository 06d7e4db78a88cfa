"""Validation people: their faces and pairs, and the LR-16 verification accuracy that picks the best
checkpoint during training (thresholds and checkpoints come from these people, never test people)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrface.data.lfw import make_pairs
from lrface.degradation import DegradationConfig, degrade
from lrface.preprocessing import face_to_input, hr_to_lr, normalise
from training.identification import first_of_each, identification
from training.metrics import kfold_accuracy
from training.teacher_cache import TeacherCache

# Face sizes of the JPEG frame probes: those the student serves in frames (the teacher from ~20 px).
FRAME_PROBE_PX = (14, 16, 18, 20)


@dataclass
class ValData:
    """Validation faces (clean chips) and pairs of row indices with a same-person flag."""

    chips: np.ndarray
    pairs: np.ndarray  # (P, 2) int
    same: np.ndarray  # (P,) bool
    labels: np.ndarray | None = None  # (N,) person of each chip: validation rank-1 where given
    teacher: np.ndarray | None = None  # (N, D) the teacher's embeddings of the chips (from the cache)
    detected: tuple[np.ndarray, np.ndarray] | None = None  # each face detected in a JPEG frame, and found or not
    detected_recipe: str = ""  # what made them (training.detected_views.recipe)


def val_data(identities: dict[str, list[Path]], cache: TeacherCache, seed: int = 0) -> ValData:
    files = sorted(f for fs in identities.values() for f in fs)
    row = {f: i for i, f in enumerate(files)}
    person = {f: i for i, name in enumerate(sorted(identities)) for f in identities[name]}
    pairs = make_pairs(identities, seed=seed)
    targets = cache.targets(files)
    return ValData(
        chips=targets.chips,
        pairs=np.asarray([[row[a], row[b]] for a, b, _ in pairs], dtype=np.int64),
        same=np.asarray([same for _, _, same in pairs], dtype=bool),
        labels=np.asarray([person[f] for f in files], dtype=np.int64),
        teacher=targets.emb,
    )


@torch.no_grad()
def embed_batches(model: nn.Module, inputs: np.ndarray, device: torch.device, batch: int = 512) -> np.ndarray:
    model.eval()
    out = [
        model(torch.from_numpy(inputs[i : i + batch]).to(device)).float().cpu() for i in range(0, len(inputs), batch)
    ]
    return F.normalize(torch.cat(out)).numpy()


def validate(model: nn.Module, val: ValData, input_size: int, device: torch.device) -> dict[str, float]:
    """``val_accuracy``: 10-fold verification accuracy of the validation pairs; ``val_rank1`` (where
    the chips carry labels): rank-1 with every validation person's first face enrolled and the others
    as probes (:func:`training.identification.identification`), all faces through the canonical path
    at the model's input size, as the service sees an enrolled photo and a probe of that size;
    ``val_rank1_jpeg``: the same gallery, probes cut from JPEG frames (:func:`frame_probes`);
    ``val_rank1_mean``: the mean of the two; where ``val.detected`` is given (runs with detected views),
    ``val_rank1_detected``: the same gallery, each face as the service cuts it from a JPEG frame
    (:mod:`training.detected_views`; a face not found is a miss), and ``val_rank1_detected_mean``, its
    mean with ``val_rank1``."""
    inputs = np.stack([face_to_input(chip, input_size) for chip in val.chips])
    emb = embed_batches(model, inputs, device)
    scores = (emb[val.pairs[:, 0]] * emb[val.pairs[:, 1]]).sum(1)
    out = {"val_accuracy": kfold_accuracy(scores, val.same)[0]}
    if val.labels is not None:
        out["val_rank1"] = identification(emb, emb, val.labels)["rank1"]
        frames = embed_batches(model, np.stack([normalise(hr_to_lr(f, input_size)) for f in frame_probes(val)]), device)
        out["val_rank1_jpeg"] = identification(emb, frames, val.labels)["rank1"]
        out["val_rank1_mean"] = (out["val_rank1"] + out["val_rank1_jpeg"]) / 2
        if val.detected is not None:
            views, found = val.detected
            probes = embed_batches(model, np.stack([normalise(v) for v in views]), device)
            out["val_rank1_detected"] = rank1_of_found(emb, probes, found, val.labels)
            out["val_rank1_detected_mean"] = (out["val_rank1"] + out["val_rank1_detected"]) / 2
    return out


def rank1_of_found(gallery: np.ndarray, probes: np.ndarray, found: np.ndarray, labels: np.ndarray) -> float:
    """Rank-1 with each person's first face enrolled and the others probes (as
    :func:`training.identification.identification`, the nearest enrolled face by ``argmax``), a probe
    the detector did not find counted as a miss."""
    enrolled, rows = first_of_each(labels)
    scores = probes[rows] @ gallery[enrolled].T
    hits = labels[enrolled][np.argmax(scores, axis=1)] == labels[rows]
    return float((hits & found[rows]).mean())


def frame_probes(val: ValData) -> list[np.ndarray]:
    """Each validation face as a probe from a camera's JPEG frame: :data:`FRAME_PROBE_PX` in turn,
    JPEG quality 75-95, a random place on the codec's grid (:func:`lrface.degradation.jpeg_in_frame`),
    seeded by the face's row (the same probes every epoch and run)."""
    return [
        degrade(chip, DegradationConfig(size=FRAME_PROBE_PX[i % len(FRAME_PROBE_PX)], jpeg_quality=(75, 95),
                                        jpeg_in_frame=True), rng=i)
        for i, chip in enumerate(val.chips)
    ]  # fmt: skip
