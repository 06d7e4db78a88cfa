"""LR training views of cached HR chips: framing jitter, flip (with the teacher's flipped target),
the degradation model, then the canonical preprocessing. Without augmentation a view is exactly
what the service computes for the same chip (``face_to_input``); every view reaches the model's
side through :func:`lrface.preprocessing.hr_to_lr`, the one HR-to-LR rule."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from lrface.degradation import DegradationConfig, degrade
from lrface.preprocessing import CHIP_SIDE, box_to_chip, face_to_input, hr_to_lr, normalise
from training.config import AugmentConfig


@dataclass
class FaceArrays:
    chips: np.ndarray  # (N, S, S, 3) uint8 aligned HR chips
    labels: np.ndarray  # (N,) int64 identity index
    emb: np.ndarray  # (N, D) teacher embeddings
    emb_flip: np.ndarray  # (N, D) teacher embeddings of the mirrored chips
    detector_chips: np.ndarray | None = None  # (N, S, S, 3) the same faces framed around the detector's box
    # Each face's detected view and whether it was found, made before training (a pack's), and what made
    # them (training.detected_views.recipe): the loop makes them itself where they are absent.
    detected: tuple[np.ndarray, np.ndarray] | None = None
    detected_recipe: str = ""


def center_targets(data: FaceArrays) -> FaceArrays:
    """Teacher targets minus their mean over these faces, re-normalised to unit length."""
    mean = data.emb.mean(axis=0, keepdims=True)

    def centred(x: np.ndarray) -> np.ndarray:
        out = x - mean
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    return replace(data, emb=centred(data.emb), emb_flip=centred(data.emb_flip))


def canonical_chips(data: FaceArrays, side: int = CHIP_SIDE) -> FaceArrays:
    """The same faces as canonical chips (:func:`lrface.preprocessing.box_to_chip`, at most ``side``
    px): done once before training, so a view costs little; every LR view still goes through
    :func:`lrface.preprocessing.hr_to_lr`, so the result equals the service's for the same face."""

    def canonical(chips: np.ndarray) -> np.ndarray:
        return chips if chips.shape[1] <= side else np.stack([box_to_chip(np.asarray(c), side=side) for c in chips])

    detector = None if data.detector_chips is None else canonical(data.detector_chips)
    return replace(data, chips=canonical(data.chips), detector_chips=detector)


def jitter_box(size: int, aug: AugmentConfig, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A random, possibly non-square face box around the chip centre, as an upstream detector gives."""
    scale = rng.uniform(*aug.scale) * size
    aspect = rng.uniform(*aug.aspect)
    w, h = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    cx = size / 2 + rng.uniform(-aug.shift, aug.shift) * size
    cy = size / 2 + rng.uniform(-aug.shift, aug.shift) * size
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def augmented_lr(chip: np.ndarray, input_size: int, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One degraded uint8 LR view of ``input_size`` (framing jitter, blur/noise/JPEG, smaller sources)."""
    face = box_to_chip(chip, jitter_box(chip.shape[0], aug, rng))
    # Drawn only when asked for, so configs without it keep their random streams (and their runs).
    in_frame = aug.frame_jpeg_probability > 0 and rng.random() < aug.frame_jpeg_probability
    quality: tuple[int, int] | None
    if in_frame:  # a face of frame size, compressed inside a camera's JPEG frame
        source, quality = int(rng.integers(aug.frame_face_px[0], aug.frame_face_px[1] + 1)), aug.frame_jpeg_quality
    else:
        source = input_size
        if rng.random() < aug.smaller_source_probability and aug.smaller_source_min < input_size:
            source = int(rng.integers(aug.smaller_source_min, input_size))
        quality = aug.jpeg_quality if rng.random() < aug.jpeg_probability else None
    config = DegradationConfig(
        size=source, blur_sigma=aug.blur_sigma, noise_std=aug.noise_std, jpeg_quality=quality, jpeg_in_frame=in_frame
    )
    return hr_to_lr(degrade(face, config, rng), input_size)


class DistillDataset(Dataset[dict[str, torch.Tensor]]):
    """Item: ``lr`` (3, S, S) student input, ``hr`` view for an HR assistant, ``label``, ``target``."""

    def __init__(
        self,
        data: FaceArrays,
        input_size: int,
        augment: AugmentConfig | None,
        seed: int = 0,
        hr_size: int | None = None,
        detector_crops: float = 0.0,
    ) -> None:
        self.data, self.input_size, self.augment, self.seed, self.hr_size = data, input_size, augment, seed, hr_size
        if detector_crops > 0 and data.detector_chips is None:
            raise ValueError("detector_crops > 0 needs the faces' detector-box chips")
        self.detector_crops = detector_crops
        # each face's detected view and whether it was found (training.detected_views), where the config uses them
        uses = augment is not None and augment.detected_view_probability > 0
        self.detected = data.detected if uses else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        chip = self.data.chips[index]
        target = self.data.emb[index]
        if self.augment is None:
            lr = face_to_input(chip, self.input_size)
            hr_chip = chip
        else:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            if self.detector_crops > 0 and self.data.detector_chips is not None and rng.random() < self.detector_crops:
                chip = self.data.detector_chips[index]  # same person, same teacher target, the detector's framing
            # Drawn only where there are detected views, so configs without them keep their random streams.
            view = None
            if self.detected is not None and rng.random() < self.augment.detected_view_probability:
                view = self.detected[0][index] if self.detected[1][index] else None
            flipped = self.augment.flip and rng.random() < 0.5
            if flipped:
                chip, target = chip[:, ::-1], self.data.emb_flip[index]
            if view is not None:
                lr = normalise(np.ascontiguousarray(view[:, ::-1] if flipped else view))
            else:
                lr = normalise(augmented_lr(chip, self.input_size, self.augment, rng))
            hr_chip = chip
        item = {
            "lr": torch.from_numpy(lr),
            "label": torch.tensor(int(self.data.labels[index])),
            "target": torch.from_numpy(np.asarray(target, dtype=np.float32)),
        }
        if self.hr_size is not None:
            item["hr"] = torch.from_numpy(face_to_input(np.ascontiguousarray(hr_chip), self.hr_size))
        return item
