"""The one canonical face preprocessing path (numpy + Pillow, no torch).

Training, ONNX export and the service all call :func:`face_to_input`, so an image gives the very same
tensor wherever it enters the system: decode -> square crop around the face -> area down-sampling to
the model's low resolution -> normalisation to float32 CHW.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "PPM", "TIFF"})
DEFAULT_MAX_PIXELS = 40_000_000


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


def crop_square(image: np.ndarray, box: Sequence[float] | None = None, scale: float = 1.0) -> np.ndarray:
    """Crop the square around ``box``; parts outside the image repeat its edge pixels."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = square_box(box, width, height, scale)
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return image[y0:y1, x0:x1]
    ys = np.clip(np.arange(y0, y1), 0, height - 1)
    xs = np.clip(np.arange(x0, x1), 0, width - 1)
    return image[ys[:, None], xs[None, :]]


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


def face_to_input(
    image: np.ndarray,
    size: int,
    box: Sequence[float] | None = None,
    norm: Normalisation = Normalisation(),
) -> np.ndarray:
    """The canonical path from a decoded image (and optional face box) to one model input."""
    return normalise(resize(crop_square(image, box), size), norm)
