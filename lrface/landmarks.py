"""Landmarks to chip: the canonical step from a detected face's 5 landmarks (MTCNN's: eye centres, nose
tip, mouth corners) to the aligned chip the models were trained on, in numpy + Pillow (no dlib).

The teacher and the student were trained on dlib's 5-point chips (150 px, padding 0.25). dlib's own
landmarks are other points (eye corners, the nose's base), so the chip is reproduced through where
MTCNN's landmarks fall in dlib's chips: :data:`TEMPLATE`, the median position of each landmark over
400 LFW training photos (``python -m training.landmark_template`` measures it again). A face's chip
is then the similarity transform (rotation, scale, shift: least squares, Umeyama) taking its
landmarks onto the template, sampled bicubic. The service gives it to the student for a detected
face, instead of the framed box: on JPEG frames of validation people (``lrface bench frames
--calibrate-routing``, ``reports/bench/detected-routing.json``) the student's rank-1 on it beat the
framed box at every size (16 px 26.8 against 23.5%, 20 px 38.6 against 22.3%, among 963 people).
The teacher keeps dlib's own alignment, which stayed 3-6 points ahead of the landmark chip for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

CHIP_SIDE = 150  # dlib's aligned chip (lrface.preprocessing.HR_CHIP_SIDE)
# Where MTCNN's landmarks lie in dlib's 150-px chip (x, y in pixel-index coordinates): left eye,
# right eye, nose, left and right mouth corners ("left": the image's left). Medians over 400 LFW
# training photos (`python -m training.landmark_template`); spread (IQR) 2.2-2.3 px at the eyes, 5-8 px at
# the nose and mouth (where dlib's and MTCNN's points are other features).
TEMPLATE = np.array(
    [[47.55, 46.06], [102.56, 46.14], [74.71, 78.77], [50.54, 106.76], [98.95, 107.30]], dtype=np.float64
)
# A landmark set giving a scale outside this range (chip px per image px) is not a face's: a chip of
# a 2-px "face" or of one larger than any image would be noise, so the caller frames the box instead.
MIN_SCALE, MAX_SCALE = 150 / 8000, 150 / 2
MAX_COORDINATE = 1e6  # a landmark this far out is no image's (and would overflow the least squares)


class LandmarkError(ValueError):
    """The landmarks cannot place a chip (not finite, collapsed to a point, absurd scale)."""


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(scale, rotation 2x2, shift)`` minimising ``|scale * R @ s + t - d|`` over the point pairs
    (Umeyama's least squares, reflections excluded)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, d = source - mu_s, target - mu_t
    variance = float((s**2).sum() / len(source))
    if not variance > 1e-9:
        raise LandmarkError("the landmarks coincide")
    u, sigma, vt = np.linalg.svd(d.T @ s / len(source))
    flip = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(sigma) @ flip) / variance)
    return scale, rotation, mu_t - scale * rotation @ mu_s


def landmark_chip(image: np.ndarray, landmarks: Sequence[Sequence[float]], side: int = CHIP_SIDE) -> np.ndarray:
    """The ``side x side`` uint8 chip of the face whose 5 landmarks (image pixels: pixel ``i`` spans
    ``[i - 0.5, i + 0.5]``) are given, framed as dlib's aligned chips are. Parts outside the image are
    black (as in dlib's chips). Cost and memory are bounded by the face, never by the image: only the
    face's region is read, and a face larger than the chip is first reduced there (box filter) to
    within 2/3-4/3 of the chip's scale, so the bicubic sampling never shrinks it by more than 1.5x."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all() or np.abs(points).max() > MAX_COORDINATE:
        raise LandmarkError(f"expected 5 finite (x, y) landmarks within the image's reach, got {points.tolist()}")
    target = TEMPLATE * (side / CHIP_SIDE)
    scale, _, _ = similarity_transform(points, target)
    if not MIN_SCALE * side / CHIP_SIDE <= scale <= MAX_SCALE * side / CHIP_SIDE:
        raise LandmarkError(f"landmarks {points.round(1).tolist()} give no face-sized chip")
    factor = max(1, int(round(1 / scale)))
    region, points = _face_region(image, points, side / scale, factor)
    scale, rotation, shift = similarity_transform(points, target)
    # Pillow's affine maps each output position to an input one in continuous coordinates (pixel
    # centres at +0.5), from the inverse of image -> chip.
    inverse = rotation.T / scale
    offset = -inverse @ shift + 0.5 - inverse @ np.array([0.5, 0.5])
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    chip = region.transform((side, side), Image.Transform.AFFINE, data, resample=Image.Resampling.BICUBIC)
    return np.asarray(chip, dtype=np.uint8)


def _face_region(image: np.ndarray, points: np.ndarray, reach: float, factor: int) -> tuple[Image.Image, np.ndarray]:
    """The part of the image the chip can sample (its square around the landmarks at any rotation,
    plus the bicubic kernel's margin), reduced ``factor`` times by block averaging, and the landmarks
    in it. A region wholly outside the image is one black pixel: the chip is then black."""
    height, width = image.shape[:2]
    cx, cy = points.mean(axis=0)
    half = reach * 0.75 + 2 * factor  # the chip's half-diagonal is 0.71 of its side
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x1, y1 = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
    if x1 <= x0 or y1 <= y0:
        return Image.new("RGB", (1, 1)), points - np.array([cx, cy]) + reach  # nothing of the image is reached
    region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    if factor > 1:
        region = region.reduce(factor)
    # A block of ``factor`` pixels starting at k * factor has its centre at k * factor + (factor - 1) / 2.
    return region, (points - np.array([x0, y0]) - (factor - 1) / 2) / factor
