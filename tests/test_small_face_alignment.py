"""dlib's alignment of small faces (lrface.alignment.ENLARGE_BELOW_PX): a face under 40 px is aligned
in its enlarged region, which keeps its teacher embedding nearer the HR photo's than dlib's plain
alignment does; larger faces align exactly as before (the teacher's training chips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrface.alignment import ENLARGE_BELOW_PX, ENLARGED_MAX_SIDE, DlibAligner, enlarged_region
from lrface.detection import MtcnnDetector, subject_box
from lrface.preprocessing import load_image_file
from lrface.teacher import DlibEmbedder

pytest.importorskip("dlib")


def _plain_dlib(aligner: DlibAligner, image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    """dlib's chip without the enlargement (what ``align`` did before)."""
    dlib = aligner._dlib
    rect = dlib.rectangle(*(int(round(v)) for v in box))
    pixels = np.ascontiguousarray(image)
    return np.asarray(dlib.get_face_chip(pixels, aligner._predictor(pixels, rect), size=150, padding=0.25))


@pytest.fixture(scope="module")
def photos(lfw_root: Path) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    detector = MtcnnDetector(min_face_px=20)
    out = []
    for path in sorted((lfw_root / "images").glob("*/*_0001.jpg"))[::211][:16]:
        image = load_image_file(path)
        box = subject_box(detector.detect(image), image.shape[1], image.shape[0])
        if box is not None:
            out.append((image, box))
    if len(out) < 10:
        pytest.skip("LFW photos not found")
    return out


def test_large_faces_align_exactly_as_before(photos: list[tuple[np.ndarray, tuple[float, ...]]]) -> None:
    aligner = DlibAligner()
    for image, box in photos[:4]:
        assert max(box[2] - box[0], box[3] - box[1]) >= ENLARGE_BELOW_PX
        assert np.array_equal(aligner.align(image, box), _plain_dlib(aligner, image, box))


def test_small_faces_keep_nearer_their_hr_embedding(photos: list[tuple[np.ndarray, tuple[float, ...]]]) -> None:
    aligner, teacher = DlibAligner(), DlibEmbedder()
    gains = []
    for image, box in photos:
        hr = teacher.embed_chips([aligner.align(image, box)])[0]
        scale = 20.0 / max(box[2] - box[0], box[3] - box[1])  # the face at 20 px, as a camera would see it
        small = np.asarray(
            Image.fromarray(image).resize(
                (round(image.shape[1] * scale), round(image.shape[0] * scale)), Image.Resampling.BOX
            )
        )
        small_box = tuple(v * scale for v in box)
        enlarged, plain = teacher.embed_chips([aligner.align(small, small_box), _plain_dlib(aligner, small, small_box)])
        gains.append(float(hr @ enlarged - hr @ plain))
    assert np.mean(gains) > 0.003 and np.mean(np.asarray(gains) > 0) >= 0.75


def test_enlarged_region_maps_the_box_and_stays_bounded() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 90:110] = 255  # a 20-px square "face"
    region, box = enlarged_region(image, (90, 40, 110, 60), 7.5)
    assert region.shape[0] <= 4 * 20 * 7.5 + 8 and region.shape[1] <= 4 * 20 * 7.5 + 8
    left, top, right, bottom = (int(round(v)) for v in box)
    assert right - left == 150 and bottom - top == 150
    inside = region[top + 10 : bottom - 10, left + 10 : right - 10]
    assert inside.min() > 200  # the square is where the mapped box says
    # a box at the image's edge: the region is clipped to the image, the box still maps into it
    region, box = enlarged_region(image, (0, 0, 20, 20), 7.5)
    assert box[0] == 0 and box[1] == 0 and region.shape[0] == round(50 * 7.5)  # centre 10, reach 40: rows 0-50


def _huge_image(side: int = 20_000) -> np.ndarray:
    """A ``side x side`` RGB image that costs no memory (read-only, every pixel the same array)."""
    return np.broadcast_to(np.full((1, 1, 3), 128, np.uint8), (side, side, 3))


@pytest.mark.parametrize(
    ("box", "factor"),
    [
        ((10_000.0, 10_000.0, 10_000.05, 10_000.05), 150 / 0.05),  # a sub-pixel box: a 1-2 px region, x3000
        ((5_000.0, 5_000.0, 5_001.0, 5_001.0), 150.0),  # a 1-px box in a 20,000-px image
        ((100.0, 100.0, 130.0, 130.0), 1e6),  # a hostile factor
        ((0.0, 0.0, 1e-9, 1e-9), 150 / 1e-9),  # at the corner, vanishing
    ],
)
def test_enlarged_region_is_bounded_whatever_the_box(box: tuple[float, ...], factor: float) -> None:
    region, mapped = enlarged_region(_huge_image(), box, factor)
    assert max(region.shape[:2]) <= ENLARGED_MAX_SIDE and region.flags.c_contiguous
    assert all(np.isfinite(mapped)) and mapped[0] <= mapped[2] and mapped[1] <= mapped[3]


def test_enlarged_region_refuses_nonsense_and_passes_a_box_outside_the_image() -> None:
    image = np.zeros((50, 50, 3), np.uint8)
    for box, factor in (((0, 0, 10, 10), 0.0), ((0, 0, 10, 10), float("inf")), ((0, 0, float("nan"), 10), 2.0)):
        with pytest.raises(ValueError, match="finite"):
            enlarged_region(image, box, factor)
    outside = (500.0, 500.0, 510.0, 510.0)
    region, mapped = enlarged_region(image, outside, 15.0)
    assert region is image and mapped == outside


def test_a_one_pixel_face_in_a_huge_frame_aligns_to_a_chip() -> None:
    chip = DlibAligner().align(_huge_image(), (10_000.0, 10_000.0, 10_000.4, 10_000.4))
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
