"""The canonical preprocessing path: decoding of every accepted format, clear errors, squaring."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lrface.preprocessing import (
    ImageDecodeError,
    crop_square,
    face_to_input,
    frame_face,
    load_image,
    normalise,
    resize,
    square_box,
)


def _face(w: int = 40, h: int = 30) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP", "TIFF"])
def test_lossless_formats_decode_exactly(fmt: str) -> None:
    pixels = _face()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    decoded = load_image(_encode(Image.fromarray(pixels), fmt, **kw))
    assert decoded.dtype == np.uint8 and decoded.shape == (30, 40, 3)
    assert np.array_equal(decoded, pixels)


def test_jpeg_decodes_close() -> None:
    pixels = np.full((32, 32, 3), (200, 100, 50), dtype=np.uint8)
    decoded = load_image(_encode(Image.fromarray(pixels), "JPEG", quality=95))
    assert decoded.shape == (32, 32, 3) and np.abs(decoded.astype(int) - pixels).max() <= 3


def test_pgm_grayscale_becomes_three_equal_channels() -> None:
    gray = _face()[:, :, 0]
    decoded = load_image(_encode(Image.fromarray(gray, "L"), "PPM"))
    assert decoded.shape == (30, 40, 3)
    assert np.array_equal(decoded[:, :, 0], gray) and np.array_equal(decoded[:, :, 2], gray)


def test_sixteen_bit_png_keeps_the_high_byte() -> None:
    wide = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    decoded = load_image(_encode(Image.fromarray(wide), "PNG"))
    assert np.array_equal(decoded[:, :, 1], (wide >> 8).astype(np.uint8))


def test_rgba_composites_on_white() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # opaque red top, transparent bottom
    decoded = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(decoded[0, 0]) == (255, 0, 0) and tuple(decoded[7, 7]) == (255, 255, 255)


def test_exif_rotation_is_applied() -> None:
    pixels = _face(40, 20)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    decoded = load_image(_encode(image, "JPEG", exif=exif.tobytes(), quality=100))
    assert decoded.shape == (40, 20, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a recognised image"),
        (_encode(Image.new("RGB", (4, 4)), "GIF"), "unsupported image format GIF"),
    ],
)
def test_bad_bytes_get_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        load_image(data)


def test_truncated_image_is_an_error() -> None:
    data = _encode(Image.fromarray(_face(64, 64)), "PNG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = _encode(Image.new("L", (3000, 3000)), "PNG")  # tiny file, 9 Mpx
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        load_image(data, max_pixels=1_000_000)


def test_square_box_centres_and_uses_longer_side() -> None:
    assert square_box((10, 20, 30, 60), 100, 100) == (0, 20, 40, 60)
    assert square_box(None, 40, 30) == (0, -5, 40, 35)
    with pytest.raises(ValueError, match="empty"):
        square_box((5, 5, 5, 10), 10, 10)


def test_frame_face_squares_a_detector_box_onto_the_aligned_chips_framing() -> None:
    # An MTCNN-like box, 75 wide and 100 tall: the square is 0.94 x 100 on a side, centred 7 px lower.
    left, top, right, bottom = frame_face((100, 50, 175, 150))
    assert right - left == pytest.approx(94.0) and bottom - top == pytest.approx(94.0)
    assert (left + right) / 2 == pytest.approx(137.5) and (top + bottom) / 2 == pytest.approx(107.0)
    with pytest.raises(ValueError, match="empty"):
        frame_face((5, 5, 5, 10))


def test_crop_square_pads_with_edge_pixels() -> None:
    image = _face(40, 30)
    square = crop_square(image)
    assert square.shape == (40, 40, 3)
    assert np.array_equal(square[0], image[0]) and np.array_equal(square[5:35], image)


def test_resize_area_averages_blocks() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:2, :2] = 200
    assert resize(image, 2)[0, 0, 0] == 200 and resize(image, 2)[1, 1, 0] == 0
    assert resize(image, 8).shape == (8, 8, 3)  # enlarging works too (bicubic)


def test_normalise_layout_and_range() -> None:
    x = normalise(np.array([[[0, 255, 127]]], dtype=np.uint8))
    assert x.shape == (3, 1, 1) and x.dtype == np.float32
    assert x[0, 0, 0] == -1.0 and x[1, 0, 0] == 1.0


def test_face_to_input_shape() -> None:
    x = face_to_input(_face(50, 70), 16, box=(5, 5, 45, 65))
    assert x.shape == (3, 16, 16) and np.isfinite(x).all()
