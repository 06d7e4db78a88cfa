"""Face detection and 5-point alignment with dlib (no torch), shared by training and serving.

dlib ships as the optional ``align`` extra; :func:`aligner_available` tells whether it is installed.
The aligned chip is exactly the one dlib's 128-d ResNet teacher was trained on (a face under
:data:`ENLARGE_BELOW_PX` is first enlarged in its region, :func:`enlarged_region`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# A face whose box side is under this many pixels is first brought to the chip's size (its region,
# bicubic) before dlib finds its landmarks and cuts the chip: on a 16-24-px face dlib's shape
# predictor and its bilinear chip lose the face. Frames of validation people (125 enrolled, 466
# detected probes a size; teacher rank-1, plain dlib -> enlarged): 16 px 37.8 -> 47.3, 20 px
# 67.2 -> 76.0, 24 px 86.9 -> 88.4 (2x and 4x enlargements), 32 px 95.3 -> 95.7, 48 px 98.5 -> 98.1
# (left as it was from here up: HR photos align exactly as the teacher's training chips did).
ENLARGE_BELOW_PX = 40.0
# The enlarged region's longest side: a 1-px box's region (4-5 px at reach 2) brought to the chip's
# scale is at most 750 px; only sub-pixel boxes reach the cap.
ENLARGED_MAX_SIDE = 1024


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


def enlarged_region(
    image: np.ndarray, box: Sequence[float], factor: float, reach: float = 2.0, max_side: int = ENLARGED_MAX_SIDE
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The part of ``image`` within ``reach`` box sides of the box's centre (clipped to the image;
    more than any chip of it covers), enlarged ``factor`` times (bicubic) but to at most ``max_side``
    px a side (memory stays bounded whatever the box), and the box in it."""
    from PIL import Image

    left, top, right, bottom = (float(v) for v in box[:4])
    if not (np.isfinite([left, top, right, bottom]).all() and np.isfinite(factor) and factor > 0):
        raise ValueError(f"enlarged_region: box {tuple(box[:4])} and factor {factor} must be finite, factor > 0")
    half = reach * max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    height, width = image.shape[:2]
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x1, y1 = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
    if x1 <= x0 or y1 <= y0:
        return image, (left, top, right, bottom)
    # A sub-pixel box asks for a huge factor, and its region is still a whole pixel or two.
    factor = min(factor, max_side / max(x1 - x0, y1 - y0))
    size = (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor)))
    region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).resize(size, Image.Resampling.BICUBIC)
    sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    return np.asarray(region), ((left - x0) * sx, (top - y0) * sy, (right - x0) * sx, (bottom - y0) * sy)


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
        """The aligned ``size x size`` chip of the face in ``box`` (landmarks found inside the box); a
        face smaller than :data:`ENLARGE_BELOW_PX` is aligned in its region enlarged to ``size``."""
        side = max(box[2] - box[0], box[3] - box[1])
        if 0 < side < ENLARGE_BELOW_PX:
            image, box = enlarged_region(image, box, size / side)
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
