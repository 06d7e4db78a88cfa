"""Face detection and 5-point alignment with dlib (no torch), shared by training and serving.

dlib ships as the optional ``align`` extra; :func:`aligner_available` tells whether it is installed.
The aligned chip is exactly the one dlib's 128-d ResNet teacher was trained on.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25


class AlignerUnavailable(RuntimeError):
    """dlib or its models are not installed."""


def aligner_available() -> bool:
    try:
        _load_dlib()
    except AlignerUnavailable:
        return False
    return True


@lru_cache(maxsize=1)
def _load_dlib() -> tuple[Any, Any]:
    try:
        import dlib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models still imports pkg_resources
            import face_recognition_models
    except ImportError as exc:
        raise AlignerUnavailable(
            "face detection needs the optional aligner: pip install 'lrface[align]' (dlib-bin, face-recognition-models)"
        ) from exc
    return dlib, face_recognition_models


class DlibAligner:
    """dlib's HOG face detector + 5-point shape predictor -> aligned square chips."""

    def __init__(self) -> None:
        dlib, models = _load_dlib()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
        """Face boxes ``(left, top, right, bottom)``, largest first."""
        rects = self._detector(np.ascontiguousarray(image), upsample)
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def align(
        self, image: np.ndarray, box: Sequence[float], size: int = CHIP_SIZE, padding: float = CHIP_PADDING
    ) -> np.ndarray:
        """The aligned ``size x size`` chip of the face in ``box`` (landmarks found inside the box)."""
        left, top, right, bottom = (int(round(v)) for v in box)
        rect = self._dlib.rectangle(left, top, right, bottom)
        pixels = np.ascontiguousarray(image)
        shape = self._predictor(pixels, rect)
        return np.asarray(self._dlib.get_face_chip(pixels, shape, size=size, padding=padding), dtype=np.uint8)

    def align_largest(self, image: np.ndarray, fallback_centre: bool = False) -> np.ndarray | None:
        """Align the largest detected face; with ``fallback_centre`` an undetected face is assumed
        to fill the centre of the image (true of LFW's funneled images), else None."""
        boxes = self.detect(image)
        if boxes:
            return self.align(image, boxes[0])
        if not fallback_centre:
            return None
        h, w = image.shape[:2]
        return self.align(image, (0.27 * w, 0.30 * h, 0.71 * w, 0.74 * h))
