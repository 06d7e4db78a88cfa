"""Small synthetic 'faces' for training tests: each identity is a smooth colour pattern, each image
a noisy, shifted copy; the 'teacher' is a fixed random projection of the image."""

from __future__ import annotations

import numpy as np

from training.dataset import FaceArrays


def synthetic_arrays(
    identities: int = 8, per_identity: int = 6, size: int = 48, dim: int = 16, seed: int = 0
) -> FaceArrays:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    chips, labels = [], []
    for person in range(identities):
        freq = rng.uniform(1, 4, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        base = np.stack([np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + p) for f, p in zip(freq, phase, strict=True)], -1)
        for _ in range(per_identity):
            img = base + rng.normal(0, 0.15, base.shape)
            img = np.roll(img, rng.integers(-2, 3, size=2), axis=(0, 1))
            chips.append(np.clip((img + 1) * 127.5, 0, 255).astype(np.uint8))
            labels.append(person)
    chips_arr = np.stack(chips)
    projection = np.random.default_rng(seed + 1).normal(size=(12 * 12 * 3, dim))

    def teacher(x: np.ndarray) -> np.ndarray:
        small = x[:, ::4, ::4].reshape(len(x), -1).astype(np.float64) / 255.0 - 0.5
        out = small @ projection
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    return FaceArrays(chips_arr, np.asarray(labels, dtype=np.int64), teacher(chips_arr), teacher(chips_arr[:, :, ::-1]))
