"""Face boxes the detector finds on the HR training and evaluation images, computed once per image and
cached under ``LRFACE_CACHE/detections/<detector>``, keyed (like the teacher cache) by the SHA-1 of
each file's bytes.

The student learns from crops cut by the one framing rule (:func:`lrface.preprocessing.frame_face`)
around these boxes, so a detector's box works without landmarks; evaluation cuts its detector-box
probes the same way. The boxes come from the service's own detector (:mod:`lrface.detection`, MTCNN in
ONNX; ``tests/test_detector.py`` holds it to facenet-pytorch's MTCNN) and its subject rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lrface.detection import MtcnnDetector, subject_box
from lrface.preprocessing import CHIP_SIDE, box_to_chip, frame_face, load_image_file, resize
from training.teacher_cache import file_hash

MIN_FACE_PX = 40.0  # HR photos of at most 250 px: their subjects are larger; smaller finds background faces


@dataclass
class FoundBoxes:
    """Rows aligned with the requested files; ``found`` False where the detector saw no face."""

    boxes: np.ndarray  # (N, 4) float32 left, top, right, bottom in the image's pixels
    found: np.ndarray  # (N,) bool


class DetectionCache:
    """``hashes.npy``, ``boxes.npy``, ``found.npy`` in one folder per detector."""

    def __init__(self, cache_root: Path, detector: str = "mtcnn") -> None:
        self.folder = cache_root / "detections" / detector
        self._index: dict[str, int] = {}
        self._boxes = np.zeros((0, 4), np.float32)
        self._found = np.zeros(0, bool)
        if (self.folder / "hashes.npy").exists():
            self._index = {str(h): i for i, h in enumerate(np.load(self.folder / "hashes.npy"))}
            self._boxes = np.load(self.folder / "boxes.npy")
            self._found = np.load(self.folder / "found.npy")

    def boxes(self, files: Sequence[Path], chunk: int = 1000) -> FoundBoxes:
        """Boxes for ``files``, detecting (and saving every ``chunk`` images) whatever is missing."""
        hashes = [file_hash(f) for f in tqdm(files, desc="hashing", unit="img", leave=False)]
        missing = sorted({h: f for h, f in zip(hashes, files, strict=True) if h not in self._index}.items())
        if missing:
            detector = MtcnnDetector(min_face_px=MIN_FACE_PX)
            for start in range(0, len(missing), chunk):
                part = missing[start : start + chunk]
                found = []
                for _, path in tqdm(part, desc="detecting", unit="img"):
                    image = load_image_file(path)
                    found.append(subject_box(detector.detect(image), image.shape[1], image.shape[0]))
                self._save([h for h, _ in part], found)
        rows = np.asarray([self._index[h] for h in hashes], dtype=np.int64)
        return FoundBoxes(self._boxes[rows], self._found[rows])

    def _save(self, hashes: list[str], found: list[tuple[float, float, float, float] | None]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        boxes = np.asarray([b if b is not None else (0.0, 0.0, 0.0, 0.0) for b in found], np.float32)
        self._boxes = np.concatenate([self._boxes, boxes])
        self._found = np.concatenate([self._found, np.asarray([b is not None for b in found])])
        all_hashes = np.asarray([*self._index, *hashes])
        for key, value in (("boxes", self._boxes), ("found", self._found), ("hashes", all_hashes)):
            tmp = self.folder / f"{key}.tmp.npy"
            np.save(tmp, value)
            tmp.replace(self.folder / f"{key}.npy")  # hashes last: a crash never indexes missing rows
        self._index = {str(h): i for i, h in enumerate(all_hashes)}


def detector_chips(files: Sequence[Path], found: FoundBoxes, aligned: np.ndarray) -> np.ndarray:
    """The canonical chip (:data:`CHIP_SIDE` px) of each file's detected face, framed by
    :func:`frame_face`; where the detector found none, the canonical chip of the ``aligned`` one."""
    chips = np.empty((len(files), CHIP_SIDE, CHIP_SIDE, 3), np.uint8)
    for i, path in enumerate(tqdm(files, desc="detector crops", unit="img", leave=False)):
        if found.found[i]:
            # A face smaller than the chip is enlarged to it (its LR views come out the same).
            chips[i] = resize(box_to_chip(load_image_file(path), frame_face(found.boxes[i])), CHIP_SIDE)
        else:
            chips[i] = resize(box_to_chip(np.asarray(aligned[i])), CHIP_SIDE)
    return chips
