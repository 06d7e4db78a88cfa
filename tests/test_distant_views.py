"""Distant views of enrolled faces (the card's ``gallery_from_teacher.distant_views``): each enrolled HR
chip shrunk and JPEG-compressed as a far camera sends it (:func:`lrface.degradation.distant_view`),
found again by the service's detector, embedded by the student or, fused views, as a detected probe of
its size is (both models); their mean joins the face's student-index vector by one rule
(:func:`lrface.model_card.with_distant_views`) in enrolment, re-embedding
(``tests/test_gallery_from_teacher.py``) and the calibration that chooses their kind and weight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lrface.degradation import DISTANT_VIEW_PAD, distant_view
from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import (
    DISTANT_VIEW_QUALITY,
    DISTANT_VIEW_SIDES,
    FUSED_VIEW_SIDES,
    VIEW_SIDES,
    DistantViews,
    GalleryFromTeacher,
    fused_view_key,
    load_card,
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
        fused=False,
    )
    assert np.isclose(np.linalg.norm(views[0]), 1.0, atol=1e-5) and not views[1].any()  # a blank: no face, a zero row
    small = [  # another photo of Powell and one of Blair, as 17-px chips
        embedders.student.embed([FaceInput(_chip(decoder, name, 1)[::9, ::9].copy())])[0]
        for name in ("Colin_Powell", "Tony_Blair")
    ]
    assert views[0] @ small[0] > views[0] @ small[1]


def _small_looks(
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, GalleryFromTeacher, np.ndarray, np.ndarray, np.ndarray]:
    """60 enrolled people and 40 others, each person's *small* look a shift from their HR gallery vector,
    600 small probes (student and teacher views) near their person's small look."""
    people = np.r_[np.arange(60), -np.ones(40, int)]
    gallery = _unit(rng.normal(size=(100, 32)))
    small_look = _unit(gallery + rng.normal(scale=0.8, size=(100, 32)))
    truths = rng.integers(0, 60, size=600)
    space = GalleryFromTeacher(centre=[0.0] * 32, threshold=0.3)
    student = _unit(small_look[truths] + rng.normal(scale=0.4, size=(600, 32)))
    teacher = _unit(small_look[truths] + rng.normal(scale=0.4, size=(600, 32)))
    face_px = np.full(600, 10.0)
    return people, gallery, small_look, truths, space, student, teacher, face_px


def test_the_calibration_joins_views_where_they_help_and_leaves_them_out_where_they_are_noise() -> None:
    """Small probes that sit near each person's *small* look (a shift from the HR gallery vector): views
    near that look bring the gallery to them, so a weight above 0 wins; views of noise do not."""
    from service.detected_routing import VIEW_WEIGHTS, _choose_views

    rng = np.random.default_rng(2)
    people, gallery, small_look, truths, space, student, teacher, face_px = _small_looks(rng)
    helpful = _unit(small_look + rng.normal(scale=0.2, size=(100, 32)))
    hits = np.zeros(600)
    chosen = _choose_views(student, teacher, face_px, truths, hits, gallery, {False: helpful}, people, space, 0)
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
    plain = _choose_views(student, teacher, face_px, truths, hits, gallery, {False: noise}, people, space, 0)
    assert plain["distant_views"] is None and np.array_equal(plain["gallery"], gallery), plain["rank1_by_view_weight"]
    none = _choose_views(student, teacher, face_px, truths, np.zeros(600), gallery, None, people, None, 0)
    assert none["distant_views"] is None and none["rank1_by_view_weight"] is None


def test_the_calibration_takes_fused_views_only_where_they_beat_the_students() -> None:
    """Fused views (each as a probe of its size is embedded: the teacher's passes too) are chosen over the
    student's where they bring the gallery nearer the probes, and not where they add nothing."""
    from service.detected_routing import _choose_views

    rng = np.random.default_rng(3)
    people, gallery, small_look, truths, space, student, teacher, face_px = _small_looks(rng)
    rough = _unit(small_look + rng.normal(scale=0.9, size=(100, 32)))  # the student's few views: noisy
    close = _unit(small_look + rng.normal(scale=0.1, size=(100, 32)))  # fused views at more sides: near the look

    def choose(student_views: np.ndarray, fused_views: np.ndarray) -> dict:
        views = {False: student_views, True: fused_views}
        return _choose_views(student, teacher, face_px, truths, np.zeros(600), gallery, views, people, space, 0)

    better = choose(rough, close)
    views = better["distant_views"]
    assert views is not None and views["fused"] and views["sides"] == list(FUSED_VIEW_SIDES), better
    fused_best = max(better["rank1_by_fused_view_weight"].values())
    assert fused_best > max(better["rank1_by_view_weight"].values()) + 2
    assert np.allclose(better["gallery"], with_distant_views(gallery, close, views["weight"]))
    same = choose(close, close)  # fused views no better than the student's: the cheaper, the student's
    views = same["distant_views"]
    assert views is not None and not views["fused"] and views["sides"] == list(DISTANT_VIEW_SIDES), same
    assert DistantViews(**views).fused is False and DistantViews(**better["distant_views"]).fused is True
    noise = _unit(rng.normal(size=(100, 32)))
    assert choose(noise, noise)["distant_views"] is None  # neither kind helps: no views


def test_every_way_of_the_students_views_is_cheaper_than_any_fused_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the plateau the order is no views, the student's by weight, then fused by weight: a student's
    view at the largest weight is taken over a fused one at the smallest that ties with it."""
    import service.detected_routing as routing
    from service.detected_routing import VIEW_WEIGHTS

    gallery = np.zeros((3, 4), np.float32)
    gallery[:, 3] = 1.0
    views = {False: np.zeros((3, 4), np.float32), True: np.zeros((3, 4), np.float32)}
    views[False][:, 1] = 1.0
    views[True][:, 0] = 1.0
    galleries = {(False, 0.0): gallery} | {
        (fused, w): with_distant_views(gallery, seen, w) for fused, seen in views.items() for w in VIEW_WEIGHTS[1:]
    }
    best = {(False, 1.0)} | {(True, w) for w in VIEW_WEIGHTS[1:]}  # tied best; the rest 10 points lower

    def rank1(*args: object) -> dict:
        joined = args[5]
        way = next(way for way, g in galleries.items() if np.allclose(g, np.asarray(joined)))
        return {"rank1_by_threshold": {"12": 60.0 if way in best else 50.0}, "fusion": None, "hits": None}

    monkeypatch.setattr(routing, "_choose_fusion", rank1)
    space = GalleryFromTeacher(centre=[0.0] * 4, threshold=0.3)
    one = np.asarray([0])
    chosen = routing._choose_views(gallery[:1], gallery[:1], np.full(1, 10.0), one, np.zeros(1), gallery, views,
                                   np.asarray([0, 1, 2]), space, 0, (gallery[:1], one))  # fmt: skip
    views_chosen = chosen["distant_views"]
    assert views_chosen is not None and not views_chosen["fused"] and views_chosen["weight"] == 1.0, chosen
    assert chosen["rank1_by_fused_view_weight"]["0.25"] == 60.0 and chosen["rank1_by_view_weight"]["0.75"] == 50.0


def test_fused_views_are_embedded_as_a_detected_probe_of_their_size_is() -> None:
    """A fused view is the card's detected fusion of the face found in it (each model's half seen as the
    card says); the card's views say which are made, and the gallery's model id records the fusion
    that made them (a gallery filled under another is refused until re-embedded)."""
    embedders = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1))
    rule, routing = embedders.from_teacher, embedders.routing
    fusion = routing.detected_fusion if routing is not None else None
    if rule is None or routing is None or embedders.teacher is None or fusion is None:
        pytest.skip("needs dlib, the teacher and a card that fuses detected faces")
    chip = _chip(FaceDecoder(40_000_000), "Colin_Powell")
    side = 16.0
    found = embedders.views_decoder.decode(ImageItem(distant_view(chip, side), "view"), "true")[0]
    assert found.input == "detected" and found.face_px < routing.detected_switch  # fused as a probe
    landmark, dlib_chip = found.face, found.teacher_face()
    student = embedders.student.embed([landmark, dlib_chip])
    teacher = embedders.teacher.embed([dlib_chip, dlib_chip.mirrored()])
    expected = fusion.vectors(
        fusion.student_view(student[:1], student[1:]), fusion.teacher_view(teacher[:1], teacher[1:]), rule
    )
    fused = embedders.distant_views([FaceInput(chip)], [side], DISTANT_VIEW_QUALITY, fused=True)
    alone = embedders.distant_views([FaceInput(chip)], [side], DISTANT_VIEW_QUALITY, fused=False)
    assert np.allclose(fused, expected, atol=1e-5) and np.allclose(alone, student[:1], atol=1e-5)
    assert float(fused[0] @ alone[0]) < 0.999  # the teacher's half changes it
    plain = np.asarray([[1.0] + [0.0] * (embedders.student.card.embedding_size - 1)], np.float32)
    ids = []
    for made_fused in (False, True):
        views = DistantViews(sides=[side], fused=made_fused, weight=1.0, threshold=0.3)
        embedders.student.card.gallery_from_teacher = rule.model_copy(update={"distant_views": views})
        joined = embedders.with_distant_views(plain, [FaceInput(chip)])
        assert np.allclose(joined, with_distant_views(plain, fused if made_fused else alone, 1.0), atol=1e-5)
        ids.append(embedders.gallery_model_id)
    other = fusion.model_copy(update={"student_weight": 0.3})
    embedders.routing = routing.model_copy(update={"detected_fusion": other})
    ids.append(embedders.gallery_model_id)
    assert ":fused" not in ids[0] and ":fused" in ids[1] and len(set(ids)) == 3, ids  # another fusion: another id


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
    assert "the student's distant views of them at 16/20/24 px (0.5)" in embedders.describe()
    fused = DistantViews(sides=[12.0, 16.0], fused=True, weight=1.0, threshold=0.3)
    embedders.student.card.gallery_from_teacher = with_views.model_copy(update={"distant_views": fused})
    assert "fused distant views (as detected probes) of them at 12/16 px (1)" in embedders.describe()
    embedders.student.card.gallery_from_teacher = with_views.model_copy(update={"distant_views": None})
    assert "distant views" not in embedders.describe()
    hr = [FaceInput(_chip(FaceDecoder(40_000_000), "Colin_Powell"))]
    plain = np.asarray([[1.0] + [0.0] * (embedders.student.card.embedding_size - 1)], np.float32)
    assert np.array_equal(embedders.with_distant_views(plain, hr), plain)  # no views in the card: as it is


def test_the_calibrations_views_are_written_into_the_card_with_what_made_them(tmp_path: Path) -> None:
    """`--update-card` writes the chosen views (fused, at their kind's sides) into the card, and the run
    that chose the card's fused views made them with the detected fusion the card now has."""
    from service.detected_routing import write_routing

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, model, ignore=shutil.ignore_patterns("student.pt"))
    result = json.loads((Path(__file__).parents[1] / "reports/bench/detected-routing.json").read_text())
    for fused in (True, False):
        chosen = {k: v for k, v in result["distant_views"].items() if k != "sides"} | {"fused": fused}
        card = load_card(model)
        write_routing(card, result | {"distant_views": chosen})
        card.save(model)
        saved = load_card(model)
        assert saved.gallery_from_teacher is not None and saved.routing is not None
        views = saved.gallery_from_teacher.distant_views
        assert views is not None and views.fused is fused and views.sides == list(VIEW_SIDES[fused])
    card = load_card(BUNDLED_MODEL_DIR)
    assert card.gallery_from_teacher is not None and card.gallery_from_teacher.distant_views is not None
    if card.gallery_from_teacher.distant_views.fused:  # the released card: its views were made as it serves
        assert card.routing is not None
        assert card.routing.detected_validation["fused_views_made_with"] == fused_view_key(card.routing)
        assert result["fused_views_made_with"] == fused_view_key(card.routing)
