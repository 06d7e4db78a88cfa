"""The one canonical face preprocessing path (numpy + Pillow, no torch).

Every step a face goes through has one function here, shared by training, evaluation, export and the
service, so an image gives the very same tensor wherever it enters the system:

- decode: :func:`load_image` (bytes -> uint8 RGB, EXIF orientation applied, pixel limit), and its
  inverse for what is sent as an upload: :func:`encode_image`;
- box to chip: :func:`box_to_chip` (square around the face box, area-shrunk to at most
  :data:`CHIP_SIDE` pixels, memory bounded by the chip, never by the box);
- HR to LR: :func:`hr_to_lr` (any chip -> the model's input side, always through the canonical chip);
- normalise: :func:`normalise` (uint8 HWC -> float32 CHW);
- the teacher's view: :func:`hr_chip` (the face at 150 px, as dlib's embedder takes it);
- all of them: :func:`face_to_input`. The embedding step is :class:`lrface.embedder.OnnxEmbedder`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "PPM", "TIFF"})
DEFAULT_MAX_PIXELS = 40_000_000
# The canonical HR chip: every face is brought to at most this side before it goes to a model's LR
# input, and the gallery stores it, so re-embedding a stored chip gives the input the face gave.
CHIP_SIDE = 64


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why (shown to API clients)."""


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``(x / 255 - mean) / std`` on RGB input."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: keep the top 8 of 16 bits.
        wide = np.asarray(image).astype(np.int64)
        gray = np.clip(wide >> 8, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into an ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    Raises :class:`ImageDecodeError` for empty, corrupt, unsupported or oversized images; the pixel
    count is checked before any pixel is decoded, so decompression bombs cost nothing.
    """
    if not data:
        raise ImageDecodeError("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the client's bad input
        raise ImageDecodeError(f"cannot read image: {exc}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            f"unsupported image format {image.format}; use one of {', '.join(sorted(SUPPORTED_FORMATS))}"
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError("image has no pixels")
    if width * height > max_pixels:
        raise ImageDecodeError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    try:
        image.load()
        oriented: Image.Image = ImageOps.exif_transpose(image) or image
        return _to_uint8_rgb(oriented)
    except Exception as exc:  # noqa: BLE001
        raise ImageDecodeError(f"corrupt or truncated {image.format} image: {exc}") from None


def encode_image(pixels: np.ndarray, fmt: str = "PNG", quality: int = 92) -> bytes:
    """``pixels`` as the bytes of an upload (PNG, or JPEG at ``quality`` with Pillow's 4:2:0 colour:
    colour at half resolution, as cameras send)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def load_image_file(path: str | bytes | object, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`load_image` on a file; errors name the file."""
    from pathlib import Path

    file_path = Path(str(path))
    try:
        return load_image(file_path.read_bytes(), max_pixels)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{file_path}: {exc}") from None


def square_box(box: Sequence[float] | None, width: int, height: int, scale: float = 1.0) -> tuple[int, int, int, int]:
    """The square ``(left, top, right, bottom)`` centred on ``box`` (whole image when None).

    Its side is ``scale`` times the longer side of the box, so non-square detector boxes and whole
    non-square chips are squared the same way in training and serving.
    """
    if box is None:
        left, top, right, bottom = 0.0, 0.0, float(width), float(height)
    else:
        left, top, right, bottom = (float(v) for v in box)
        if not (right > left and bottom > top):
            raise ValueError(f"face box {tuple(box)} is empty; expected [left, top, right, bottom]")
    side = max(right - left, bottom - top) * scale
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    side_px = max(1, int(round(side)))
    return x0, y0, x0 + side_px, y0 + side_px


# The framing rule, measured: on 486 LFW and CelebA photos the square of dlib's aligned chip (what the
# teacher and the student were trained on) was 0.94x the MTCNN box's longer side (IQR 0.90-0.98), its
# centre 0.07x lower than the box's (IQR 0.05-0.08) and level with it across (median 0.00).
FRAME_SCALE = 0.94
FRAME_DROP = 0.07


def frame_face(box: Sequence[float]) -> tuple[float, float, float, float]:
    """The one framing rule from a face box (the detector's, or a client's own) to the square the
    models see: :data:`FRAME_SCALE` times the box's longer side, centred :data:`FRAME_DROP` of it
    below the box's centre, so a detector's loose box frames the face as the aligned training chips
    do. Feed the result to :func:`box_to_chip` / :func:`hr_chip`."""
    left, top, right, bottom = (float(v) for v in box)
    if not (right > left and bottom > top):
        raise ValueError(f"face box {tuple(box)} is empty; expected [left, top, right, bottom]")
    side = max(right - left, bottom - top)
    half = FRAME_SCALE * side / 2.0
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0 + FRAME_DROP * side
    return cx - half, cy - half, cx + half, cy + half


def crop_square(image: np.ndarray, box: Sequence[float] | None = None, scale: float = 1.0) -> np.ndarray:
    """Crop the square around ``box`` at full resolution; parts outside the image repeat its edge
    pixels. Allocates the whole square: callers with untrusted boxes use :func:`box_to_chip`."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = square_box(box, width, height, scale)
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return image[y0:y1, x0:x1]
    ys = np.clip(np.arange(y0, y1), 0, height - 1)
    xs = np.clip(np.arange(x0, x1), 0, width - 1)
    return image[ys[:, None], xs[None, :]]


def box_to_chip(
    image: np.ndarray, box: Sequence[float] | None = None, scale: float = 1.0, side: int = CHIP_SIDE
) -> np.ndarray:
    """The canonical chip of the face in ``box``: the square around it (see :func:`square_box`),
    area-shrunk to ``side`` when larger (smaller faces keep their pixels).

    Parts of the square outside the image repeat its edge pixels. Memory is bounded by the image and
    the chip, never by the box: the part inside the image is shrunk first and the edges are repeated
    at chip resolution, so a box of 30,000 px on a 24-px image costs a 64-px chip.
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = square_box(box, width, height, scale)
    full = x1 - x0
    if full <= side:
        return np.ascontiguousarray(crop_square(image, box, scale))
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if ix1 <= ix0 or iy1 <= iy0:
        raise ValueError(f"face box {tuple(box or ())} lies outside the {width}x{height} image")
    inside = image[iy0:iy1, ix0:ix1]
    if (ix0, iy0, ix1, iy1) == (x0, y0, x1, y1):
        return resize(inside, side)
    f = side / full
    # Chip-pixel edges of the inside part (rounded, at least one pixel), then the edges repeated.
    cx0, cy0 = min(int(round((ix0 - x0) * f)), side - 1), min(int(round((iy0 - y0) * f)), side - 1)
    cx1, cy1 = max(int(round((ix1 - x0) * f)), cx0 + 1), max(int(round((iy1 - y0) * f)), cy0 + 1)
    shrunk = np.asarray(
        Image.fromarray(np.ascontiguousarray(inside)).resize((cx1 - cx0, cy1 - cy0), Image.Resampling.BOX),
        dtype=np.uint8,
    )
    ys = np.clip(np.arange(side) - cy0, 0, cy1 - cy0 - 1)
    xs = np.clip(np.arange(side) - cx0, 0, cx1 - cx0 - 1)
    return shrunk[ys[:, None], xs[None, :]]


def resize(image: np.ndarray, size: int, method: str = "area") -> np.ndarray:
    """Resize a uint8 ``(H, W, 3)`` array to ``size x size``.

    'area' averages source pixels (box filter) when shrinking and falls back to bicubic when
    enlarging a face smaller than the model input, where a box filter would only repeat pixels.
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    if method == "area" and max(image.shape[:2]) < size:
        method = "bicubic"
    resample = {"area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC}[method]
    return np.asarray(Image.fromarray(image).resize((size, size), resample), dtype=np.uint8)


def normalise(image: np.ndarray, norm: Normalisation = Normalisation()) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)``."""
    scaled = image.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(norm.mean, dtype=np.float32)
    std = np.asarray(norm.std, dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))


def canonical_chip(chip: np.ndarray, size: int) -> np.ndarray:
    """The canonical chip a face is brought down to ``size`` px from: :func:`box_to_chip` (area-shrunk
    to :data:`CHIP_SIDE` when larger), enlarged to :data:`CHIP_SIDE` (bicubic) when its side lies between
    ``size`` and it. Such a chip is never area-shrunk straight to ``size``: Pillow's box filter at a
    ratio that is not a whole number averages one or two source pixels by turns (20 to 16 px: the
    student's rank-1 on 20-px chips of validation people, among 963 people, fell to 41.6% against 62.0%
    at 16 px; through the 64-px chip 58.6%)."""
    canonical = box_to_chip(chip)
    if size < canonical.shape[0] < CHIP_SIDE:
        return resize(canonical, CHIP_SIDE, "bicubic")
    return canonical


def hr_to_lr(chip: np.ndarray, size: int) -> np.ndarray:
    """The one rule from a face chip of any side to the ``size``-px face a model sees: its
    :func:`canonical_chip`, then area down-sampling (bicubic when enlarging a face no larger than
    ``size``).

    Callers: :func:`face_to_input` (service, evaluation, validation, release, quantisation), the
    training views (``training.dataset``) and :func:`lrface.degradation.degrade` (LR probes and
    augmentation). A 150-px aligned chip, the 64-px chip stored in the gallery and the 64-px training
    chip of the same face therefore give identical LR faces (``tests/test_preprocessing_parity.py``).
    """
    return resize(canonical_chip(chip, size), size)


HR_CHIP_SIDE = 150  # dlib's aligned chip: what the teacher sees, and what the gallery keeps per face


def hr_chip(image: np.ndarray, box: Sequence[float] | None = None) -> np.ndarray:
    """The face's HR chip for the teacher (and the gallery's copy of each enrolled face): its square
    at most :data:`HR_CHIP_SIDE` px (:func:`box_to_chip`, memory-bounded), brought to exactly that
    side (bicubic when enlarging, as the teacher is evaluated on up-sampled faces)."""
    return resize(box_to_chip(image, box, side=HR_CHIP_SIDE), HR_CHIP_SIDE, "bicubic")


def face_to_input(
    image: np.ndarray,
    size: int,
    box: Sequence[float] | None = None,
    norm: Normalisation = Normalisation(),
) -> np.ndarray:
    """The canonical path from a decoded image (and optional face box) to one model input."""
    return normalise(hr_to_lr(box_to_chip(image, box), size), norm)
