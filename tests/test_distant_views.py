"""Distant views of enrolled faces (the card's ``gallery_from_teacher.distant_views``): each enrolled HR
chip shrunk and JPEG-compressed as a far camera sends it (:func:`lrface.degradation.distant_view`),
found again by the service's detector, embedded by the student; their mean joins the face's
student-index vector by one rule (:func:`lrface.model_card.with_distant_views`) in enrolment,
re-embedding (``tests/test_gallery_from_teacher.py``) and the calibration that chooses its weight."""

from __future__ import annotations

import numpy as np
import pytest

from lrface.degradation import DISTANT_VIEW_PAD, distant_view
from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import (
    DISTANT_VIEW_QUALITY,
    DISTANT_VIEW_SIDES,
    DistantViews,
    GalleryFromTeacher,
    with_distant_views,
)
from lrface.preprocessing import hr_chip, load_image
from lrface.settings import BUNDLED_MODEL_DIR
from service.embedders import Embedders
from service.faces import FaceDecoder, ImageItem
from tests.faces import lfw_faces


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _chip(decoder: FaceDecoder, name: str, index: int = 0) -> np.ndarray:
    photo = lfw_faces(name, index + 1)[index]
    face = decoder.decode(ImageItem(photo.read_bytes(), photo.name), "auto")[0]
    return hr_chip(face.face.image, face.face.box)


def test_a_distant_view_is_the_chip_small_padded_and_compressed_and_the_detector_finds_the_face() -> None:
    decoder = FaceDecoder(40_000_000)
    chip = _chip(decoder, "Colin_Powell")
    for side in (16.0, 20.0, 24.0):
        data = distant_view(chip, side)
        pixels = load_image(data)
        assert data[:2] == b"\xff\xd8" and pixels.shape == (round(side * (1 + 2 * DISTANT_VIEW_PAD)),) * 2 + (3,)
        found = decoder.decode(ImageItem(data, "view"), "true")
        assert len(found) == 1 and 0.75 * side <= found[0].face_px <= 1.1 * side, [f.face_px for f in found]
    assert distant_view(chip, 20.0, quality=50) != distant_view(chip, 20.0)  # the quality is the codec's
    assert len(distant_view(chip, 20.0, quality=50)) < len(distant_view(chip, 20.0))


def test_the_views_join_the_vector_by_their_weight_and_a_face_without_views_keeps_its_own() -> None:
    rng = np.random.default_rng(0)
    vectors, views = _unit(rng.normal(size=(3, 8))), _unit(rng.normal(size=(3, 8)))
    views[2] = 0.0  # none found
    joined = with_distant_views(vectors, views, 0.5)
    assert np.allclose(joined[:2], _unit(vectors[:2] + 0.5 * views[:2]), atol=1e-6)
    assert np.allclose(joined[2], vectors[2], atol=1e-6) and np.allclose(np.linalg.norm(joined, axis=1), 1.0)
    nearer = (with_distant_views(vectors, views, 1.0)[:2] * views[:2]).sum(axis=1)
    assert np.all(nearer > (joined[:2] * views[:2]).sum(axis=1))  # a larger weight: nearer the views


def test_the_student_sees_a_persons_distant_views_nearer_another_small_photo_of_them_and_none_in_a_blank() -> None:
    embedders = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1), use_teacher=False)
    decoder = FaceDecoder(40_000_000)
    views = embedders.distant_views(
        [FaceInput(_chip(decoder, "Colin_Powell")), FaceInput(np.full((150, 150, 3), 128, np.uint8))],
        DISTANT_VIEW_SIDES,
        DISTANT_VIEW_QUALITY,
    )
    assert np.isclose(np.linalg.norm(views[0]), 1.0, atol=1e-5) and not views[1].any()  # a blank: no face, a zero row
    small = [  # another photo of Powell and one of Blair, as 17-px chips
        embedders.student.embed([FaceInput(_chip(decoder, name, 1)[::9, ::9].copy())])[0]
        for name in ("Colin_Powell", "Tony_Blair")
    ]
    assert views[0] @ small[0] > views[0] @ small[1]


def test_the_calibration_joins_views_where_they_help_and_leaves_them_out_where_they_are_noise() -> None:
    """Small probes that sit near each person's *small* look (a shift from the HR gallery vector): views
    near that look bring the gallery to them, so a weight above 0 wins; views of noise do not."""
    from service.detected_routing import VIEW_WEIGHTS, _choose_views

    rng = np.random.default_rng(2)
    people = np.r_[np.arange(60), -np.ones(40, int)]
    gallery = _unit(rng.normal(size=(100, 32)))
    small_look = _unit(gallery + rng.normal(scale=0.8, size=(100, 32)))
    truths = rng.integers(0, 60, size=600)
    space = GalleryFromTeacher(centre=[0.0] * 32, threshold=0.3)
    student = _unit(small_look[truths] + rng.normal(scale=0.4, size=(600, 32)))
    teacher = _unit(small_look[truths] + rng.normal(scale=0.4, size=(600, 32)))
    face_px = np.full(600, 10.0)
    helpful = _unit(small_look + rng.normal(scale=0.2, size=(100, 32)))
    chosen = _choose_views(student, teacher, face_px, truths, np.zeros(600), gallery, helpful, people, space, 0)
    views = chosen["distant_views"]
    assert views is not None and views["weight"] in VIEW_WEIGHTS[1:]
    by_weight = chosen["rank1_by_view_weight"]
    assert max(by_weight.values()) > by_weight["0"] + 5, by_weight
    assert by_weight[f"{views['weight']:g}"] >= max(by_weight.values()) - 0.25  # on the plateau of the best...
    assert all(
        by_weight[f"{w:g}"] < max(by_weight.values()) - 0.25 for w in VIEW_WEIGHTS if w < views["weight"]
    )  # ...its least
    genuine = (student * chosen["gallery"][truths]).sum(axis=1)  # the views' threshold: for these probes
    assert np.median(genuine) > views["threshold"] and views["validation"]["open_set"]["gallery"] == 100
    assert np.allclose(chosen["gallery"], with_distant_views(gallery, helpful, chosen["distant_views"]["weight"]))
    noise = _unit(rng.normal(size=(100, 32)))
    plain = _choose_views(student, teacher, face_px, truths, np.zeros(600), gallery, noise, people, space, 0)
    assert plain["distant_views"] is None and np.array_equal(plain["gallery"], gallery), plain["rank1_by_view_weight"]
    none = _choose_views(student, teacher, face_px, truths, np.zeros(600), gallery, None, people, None, 0)
    assert none["distant_views"] is None and none["rank1_by_view_weight"] is None


@pytest.mark.parametrize("weight", [0.0, 5.0])
def test_a_card_refuses_a_weight_out_of_range(weight: float) -> None:
    with pytest.raises(ValueError):
        DistantViews(weight=weight, threshold=0.3)


def test_the_service_says_its_gallery_holds_distant_views_where_the_card_has_them() -> None:
    embedders = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1))
    if embedders.from_teacher is None:
        pytest.skip("needs dlib and a released student in the teacher's space")
    with_views = embedders.from_teacher.model_copy(update={"distant_views": DistantViews(weight=0.5, threshold=0.3)})
    embedders.student.card.gallery_from_teacher = with_views
    assert "distant views of them (0.5)" in embedders.describe()
    embedders.student.card.gallery_from_teacher = with_views.model_copy(update={"distant_views": None})
    assert "distant views" not in embedders.describe()
    hr = [FaceInput(_chip(FaceDecoder(40_000_000), "Colin_Powell"))]
    plain = np.asarray([[1.0] + [0.0] * (embedders.student.card.embedding_size - 1)], np.float32)
    assert np.array_equal(embedders.with_distant_views(plain, hr), plain)  # no views in the card: as it is
