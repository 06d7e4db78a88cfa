"""Aligned HR chips and teacher embeddings, computed once per image and cached on disk.

Keyed by the SHA-1 of each image file's bytes and by teacher name, under ``LRFACE_CACHE/teachers``:
distillation runs, evaluations and later sessions never pay for the teacher twice. Both the plain
and the horizontally flipped chip are embedded (targets for the flip augmentation).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lrface.alignment import DlibAligner
from lrface.preprocessing import load_image_file
from training.teachers import get_teacher


def file_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@dataclass
class TeacherTargets:
    """Rows aligned with the requested files."""

    chips: np.ndarray  # (N, 150, 150, 3) uint8
    emb: np.ndarray  # (N, D) float32, unit norm
    emb_flip: np.ndarray  # (N, D) teacher embedding of the mirrored chip


_worker: dict[str, Any] = {}


def _init_worker(teacher: str, teacher_kwargs: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    _worker["aligner"] = DlibAligner()
    _worker["teacher"] = get_teacher(teacher, **teacher_kwargs)


def _process(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chip = _worker["aligner"].align_largest(load_image_file(path), fallback_centre=True)
    assert chip is not None
    both = np.stack([chip, chip[:, ::-1]])
    emb = _worker["teacher"].embed(both)
    return chip, emb[0], emb[1]


class TeacherCache:
    """One folder per teacher: ``hashes.npy``, ``chips.npy``, ``emb.npy``, ``emb_flip.npy``."""

    def __init__(self, cache_root: Path, teacher: str, teacher_kwargs: dict[str, Any] | None = None) -> None:
        self.teacher = teacher
        self.teacher_kwargs = teacher_kwargs or {}
        self.folder = cache_root / "teachers" / teacher
        self._index: dict[str, int] = {}
        self._arrays: dict[str, np.ndarray] = {}
        if (self.folder / "hashes.npy").exists():
            hashes = np.load(self.folder / "hashes.npy")
            self._index = {str(h): i for i, h in enumerate(hashes)}
            for key in ("chips", "emb", "emb_flip"):
                self._arrays[key] = np.load(self.folder / f"{key}.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self._index)

    def targets(self, files: Sequence[Path], workers: int = 2, chunk: int = 2000) -> TeacherTargets:
        """Targets for ``files``, computing (and saving, every ``chunk`` images) whatever is missing."""
        hashes = [file_hash(f) for f in tqdm(files, desc="hashing", unit="img", leave=False)]
        missing = sorted({h: str(f) for h, f in zip(hashes, files, strict=True) if h not in self._index}.items())
        for start in range(0, len(missing), chunk):
            self._compute(missing[start : start + chunk], workers)
        rows = np.asarray([self._index[h] for h in hashes], dtype=np.int64)
        return TeacherTargets(
            chips=np.asarray(self._arrays["chips"][rows]),
            emb=np.asarray(self._arrays["emb"][rows]),
            emb_flip=np.asarray(self._arrays["emb_flip"][rows]),
        )

    def _compute(self, items: list[tuple[str, str]], workers: int) -> None:
        paths = [p for _, p in items]
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(self.teacher, self.teacher_kwargs)) as pool:
            results = list(
                tqdm(pool.imap(_process, paths, chunksize=8), total=len(paths), desc=f"teacher {self.teacher}")
            )
        new = {
            "chips": np.stack([r[0] for r in results]),
            "emb": np.stack([r[1] for r in results]),
            "emb_flip": np.stack([r[2] for r in results]),
        }
        self._save([h for h, _ in items], new)

    def _save(self, hashes: list[str], new: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        old_hashes = list(self._index)
        merged = {
            key: np.concatenate([np.asarray(self._arrays[key]), value]) if self._arrays else value
            for key, value in new.items()
        }
        all_hashes = np.asarray(old_hashes + hashes)
        # Write beside, then rename: a crash mid-save never leaves a cache that lies.
        for key, value in [*merged.items(), ("hashes", all_hashes)]:
            tmp = self.folder / f"{key}.tmp.npy"
            np.save(tmp, value)
            tmp.replace(self.folder / f"{key}.npy")
        self._index = {str(h): i for i, h in enumerate(all_hashes)}
        self._arrays = {key: np.load(self.folder / f"{key}.npy", mmap_mode="r") for key in new}
