"""Landmarks to chip (lrface.landmarks): the chip a detected face gets from its 5 landmarks is dlib's
chip of the same face (the teacher's training chips), follows the face when the image moves, turns
or grows, stays bounded, and refuses landmarks that place no face; the service gives it to the
student for a detected face and falls back to the framed box when it cannot be made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrface.detection import Detection, MtcnnDetector, subject_box
from lrface.landmarks import TEMPLATE, LandmarkError, landmark_chip, similarity_transform
from lrface.preprocessing import frame_face, load_image_file


@pytest.fixture(scope="module")
def photos(lfw_root: Path) -> list[tuple[np.ndarray, Detection]]:
    detector = MtcnnDetector(min_face_px=20)
    out = []
    for path in sorted((lfw_root / "images").glob("*/*_0001.jpg"))[::197][:12]:
        image = load_image_file(path)
        found = detector.detect(image)
        box = subject_box(found, image.shape[1], image.shape[0])
        if box is not None:
            out.append((image, next(d for d in found if d.box == box)))
    if len(out) < 8:
        pytest.skip("LFW photos not found")
    return out


def test_landmarks_at_the_template_give_the_image_back() -> None:
    image = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    chip = landmark_chip(image, TEMPLATE.tolist()).astype(np.int16)
    assert np.abs(chip - image).max() <= 1  # Pillow's fixed-point bicubic rounds by one level at most
    half = landmark_chip(image, TEMPLATE.tolist(), side=75)  # a chip of another side: the template scaled
    assert half.shape == (75, 75, 3)


def test_the_similarity_transform_recovers_a_known_one() -> None:
    angle, scale, shift = 0.3, 2.5, np.array([4.0, -7.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    found_scale, found_rotation, found_shift = similarity_transform(TEMPLATE, scale * TEMPLATE @ rotation.T + shift)
    assert found_scale == pytest.approx(scale)
    assert np.allclose(found_rotation, rotation) and np.allclose(found_shift, shift)


def test_the_chip_follows_the_face_when_the_photo_is_turned_and_enlarged(
    photos: list[tuple[np.ndarray, Detection]],
) -> None:
    image, face = photos[0]
    chip = landmark_chip(image, face.landmarks)
    height, width = image.shape[:2]
    angle, scale = np.deg2rad(12.0), 1.6  # turned about the image centre and enlarged
    centre = np.array([width / 2, height / 2])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out_side = int(max(width, height) * scale * 1.3)
    out_centre = np.array([out_side / 2, out_side / 2])
    inverse = rotation.T / scale  # output -> input, continuous coordinates
    offset = centre - inverse @ out_centre
    moved = Image.fromarray(image).transform(
        (out_side, out_side), Image.Transform.AFFINE,
        (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1]), Image.Resampling.BICUBIC,
    )  # fmt: skip
    points = (np.asarray(face.landmarks) + 0.5 - centre) @ (scale * rotation).T + out_centre - 0.5
    again = landmark_chip(np.asarray(moved), points.tolist())
    inner = (slice(20, 130), slice(20, 130))  # the face, away from the chip's borders
    difference = np.abs(chip[inner].astype(np.int16) - again[inner].astype(np.int16))
    assert difference.mean() < 6.0, difference.mean()
    unrelated = np.abs(chip[inner].astype(np.int16) - landmark_chip(*_other(photos))[inner].astype(np.int16))
    assert unrelated.mean() > 3 * difference.mean()


def _other(photos: list[tuple[np.ndarray, Detection]]) -> tuple[np.ndarray, tuple[tuple[float, float], ...]]:
    image, face = photos[1]
    return image, face.landmarks


def test_the_chip_is_the_teachers_own_chip_of_the_face(photos: list[tuple[np.ndarray, Detection]]) -> None:
    pytest.importorskip("dlib")
    from lrface.alignment import DlibAligner
    from lrface.teacher import DlibEmbedder

    aligner, teacher = DlibAligner(), DlibEmbedder()
    same, other = [], []
    embedded = [teacher.embed_chips([aligner.align(i, f.box), landmark_chip(i, f.landmarks)]) for i, f in photos]
    for k, (dlib_chip, ours) in enumerate(embedded):
        same.append(float(dlib_chip @ ours))
        other.append(float(dlib_chip @ embedded[(k + 1) % len(embedded)][1]))
    # dlib's raw embeddings sit in a narrow cone (different people ~0.84-0.9): the same face is far nearer.
    assert min(same) > 0.96 and min(same) > max(other), (same, other)


def test_a_face_far_larger_than_the_chip_is_reduced_first_and_comes_out_the_same(
    photos: list[tuple[np.ndarray, Detection]],
) -> None:
    image, face = photos[0]
    chip = landmark_chip(image, face.landmarks)
    big = np.asarray(Image.fromarray(image).resize((image.shape[1] * 5, image.shape[0] * 5), Image.Resampling.BICUBIC))
    points = (np.asarray(face.landmarks) + 0.5) * 5 - 0.5
    large = landmark_chip(big, points.tolist())
    assert large.shape == (150, 150, 3)
    assert np.abs(chip.astype(np.int16) - large.astype(np.int16))[20:130, 20:130].mean() < 4.0


@pytest.mark.parametrize(
    "landmarks",
    [
        [(10.0, 10.0)] * 5,  # collapsed to a point
        [(float("nan"), 1.0)] * 5,
        [(0.0, 0.0), (1.0, 0.0)],  # not five
        (TEMPLATE * 100).tolist(),  # a "face" of 5,000 px
        (TEMPLATE / 150).tolist(),  # a "face" of one pixel
    ],
)
def test_landmarks_that_place_no_face_are_refused(landmarks: list[tuple[float, float]]) -> None:
    with pytest.raises(LandmarkError):
        landmark_chip(np.zeros((64, 64, 3), np.uint8), landmarks)


@pytest.mark.parametrize(("scale", "width"), [(2.0, 100), (0.5, 340), (0.25, 660)])
def test_the_chip_shows_a_point_where_the_transform_puts_it(scale: float, width: int) -> None:
    """A small bright spot at a known image position lands in the chip where ``scale * x + shift``
    says, to a tenth of a chip pixel (its centroid): a half-pixel slip in the sampling's convention,
    or in the reduction's (at 0.5 and 0.25), would move it by a quarter to a whole chip pixel."""
    shift = np.array([-8.0, -6.0])
    landmarks = (TEMPLATE - shift) / scale  # image pixels: the chip is scale * image + shift
    spot = (TEMPLATE.mean(axis=0) + np.array([13.3, -9.6]) - shift) / scale  # in the face, off the grid
    sigma = 1.5 / scale  # image pixels: 1.5 chip pixels
    ys, xs = np.mgrid[0:width, 0:width].astype(np.float64)
    blob = 250 * np.exp(-((xs - spot[0]) ** 2 + (ys - spot[1]) ** 2) / (2 * sigma**2))
    chip = landmark_chip(np.repeat(blob.round().astype(np.uint8)[:, :, None], 3, axis=2), landmarks.tolist())
    expected = scale * spot + shift
    v, u = np.mgrid[0:150, 0:150].astype(np.float64)
    near = (np.abs(u - expected[0]) <= 6) & (np.abs(v - expected[1]) <= 6)
    weight = np.where(near, chip[..., 0].astype(np.float64), 0.0)
    centroid = np.array([(weight * u).sum(), (weight * v).sum()]) / weight.sum()
    assert np.abs(centroid - expected).max() < 0.1, (scale, centroid, expected)


def test_the_service_gives_a_detected_face_its_landmark_chip_and_falls_back_to_the_box() -> None:
    from dataclasses import replace

    from lrface.embedder import FaceInput
    from service.faces import DecodedFace, FaceDecoder

    decoder = FaceDecoder(40_000_000)
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    points = TEMPLATE / 6.0 + np.array([60.0, 40.0])  # a 25-px face: its chip 150 / 6 px a side
    found = Detection(box=(62.0, 42.0, 82.0, 66.0), score=0.99, landmarks=tuple(map(tuple, points.tolist())))
    base = DecodedFace(FaceInput(image, None), "", None)
    decoded = decoder._detected(base, image, "d", found)
    assert decoded.face.box is None and np.array_equal(decoded.face.image, landmark_chip(image, found.landmarks))
    framed = frame_face(found.box)
    assert decoded.face_px == round(framed[2] - framed[0], 1)  # its size: still the framed box's side
    aligner = decoder.aligner()
    if aligner is not None:  # the teacher: dlib's own alignment of the face
        assert np.array_equal(decoded.teacher_face().image, aligner.align(image, found.box))
    else:
        assert decoded.teacher_face() is decoded.face
    broken = decoder._detected(base, image, "d", replace(found, landmarks=((1.0, 1.0),) * 5))
    assert broken.face.image is image and broken.face.box == framed and broken.face_px == decoded.face_px


def test_landmarks_found_on_a_shrunk_search_map_back_to_the_image_pixel_for_pixel() -> None:
    from service.faces import DetectionConfig, FaceDecoder

    class Shrunk:  # a detector that reports one face at fixed pixels of whatever image it is given
        def detect(self, image: np.ndarray) -> list[Detection]:
            return [
                Detection((10.0, 10.0, 30.0, 30.0), 0.99, ((0.0, 0.0), (9.0, 0.0), (5.0, 5.0), (2.0, 9.0), (8.0, 9.0)))
            ]

    decoder = FaceDecoder(40_000_000, DetectionConfig(max_pixels=10_000))
    decoder._detector = Shrunk()  # type: ignore[assignment]
    (face,) = decoder.search(np.zeros((200, 200, 3), np.uint8))  # searched at 100x100: twice the pixels
    assert face.box == (20.0, 20.0, 60.0, 60.0)  # edges scale
    assert face.landmarks[0] == (0.5, 0.5) and face.landmarks[1] == (18.5, 0.5)  # pixel i covers 2i and 2i + 1
