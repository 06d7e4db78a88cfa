"""Chips (and client boxes) of 17-63 px: the one HR-to-LR rule brings them to the student's input through
the canonical 64-px chip (:func:`lrface.preprocessing.hr_to_lr`), and the card's ``routing.chip_*``
serves them by their side: the student alone, both models fused (``routing.chip_fusion``), the
teacher (``routing.chip_min_face_px``), as chosen on validation people's chips by
``service.detected_routing._choose_chip_routing``; ``lrface evaluate --update-card`` keeps that choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lrface.alignment import aligner_available
from lrface.degradation import DegradationConfig, degrade
from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import ChipFusion, GalleryFromTeacher, Routing, load_card
from lrface.preprocessing import CHIP_SIDE, hr_chip, hr_to_lr
from lrface.settings import BUNDLED_MODEL_DIR
from service.embedders import Embedders
from service.faces import DecodedFace, FaceDecoder, ImageItem
from tests.faces import lfw_faces

CHIPS = ChipFusion(from_face_px=18.0, student_weight=0.5, threshold=0.234)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _hr_chip(name: str, index: int = 0) -> np.ndarray:
    photo = lfw_faces(name, index + 1)[index]
    face = FaceDecoder(40_000_000).decode(ImageItem(photo.read_bytes(), photo.name), "auto")[0]
    return hr_chip(face.face.image, face.face.box)


@pytest.mark.parametrize("side", [20, 24, 28, 40])
def test_a_chip_between_the_input_and_the_canonical_chip_comes_out_as_the_face_made_small_from_hr(side: int) -> None:
    """A 20-40 px chip made from an HR face, brought to 16 px, is near the 16-px face made from HR:
    nearer than the straight box filter (which averages one or two source pixels by turns) leaves it."""
    hr = _hr_chip("Colin_Powell")
    want = hr_to_lr(hr, 16).astype(np.float64)
    chip = degrade(hr, DegradationConfig(size=side))
    assert chip.shape[0] == side and CHIP_SIDE > side > 16
    got = hr_to_lr(chip, 16).astype(np.float64)
    box = np.asarray(Image.fromarray(chip).resize((16, 16), Image.Resampling.BOX), np.float64)
    error, box_error = np.abs(got - want).mean(), np.abs(box - want).mean()
    assert error < 6.0 and error < box_error, (error, box_error)
    assert np.array_equal(hr_to_lr(hr_to_lr(hr, 64), 16), hr_to_lr(hr, 16))  # the canonical chip itself: as before
    small = degrade(hr, DegradationConfig(size=12))  # no larger than the input: enlarged straight to it
    assert np.array_equal(
        hr_to_lr(small, 16), np.asarray(Image.fromarray(small).resize((16, 16), Image.Resampling.BICUBIC))
    )


def test_the_chip_routing_fuses_where_both_models_beat_either_and_serves_the_rest_by_the_better_one() -> None:
    """Synthetic chips of 12-32 px: the student right below 18 px, the teacher from 26, in between each
    model alone is noisy and their fusion is right: the band chosen is 18-26 px, its threshold between
    genuine and impostor scores."""
    from service.detected_routing import _choose_chip_routing

    rng = np.random.default_rng(5)
    people = np.r_[np.arange(60), -np.ones(40, int)]
    gallery = _unit(rng.normal(size=(100, 32))).astype(np.float32)
    teacher_gallery = _unit(rng.normal(size=(100, 32))).astype(np.float32)
    sizes = np.asarray([12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 32.0])
    truths = np.tile(rng.integers(0, 60, size=100), len(sizes))
    face_px = np.repeat(sizes, 100)
    centre = np.zeros(32)
    space = GalleryFromTeacher(centre=list(centre), threshold=0.3)

    def noisy(base: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return _unit(base + rng.normal(size=base.shape) * scale[:, None])

    student_noise = np.where(face_px < 18, 0.02, 0.3)  # good small, poor from 18
    teacher_noise = np.where(face_px >= 26, 0.05, np.where(face_px >= 18, 0.3, 3.0))
    student = noisy(gallery[truths], student_noise)
    # the teacher's own gallery, and its view in the student's space the same noisy face
    teacher_own = noisy(teacher_gallery[truths], teacher_noise)
    teacher = np.where((face_px >= 26)[:, None], teacher_own, noisy(gallery[truths], teacher_noise))
    chosen = _choose_chip_routing(face_px, truths, student, teacher, gallery, teacher_gallery, people, space, seed=0)
    fusion = chosen["fusion"]
    assert chosen["teacher_from_face_px"] == 26.0 and fusion is not None and fusion["from_face_px"] == 18.0, chosen
    assert 0.0 < fusion["student_weight"] < 1.0 and fusion["validation"]["faces"] == 400
    band = chosen["by_size"]["20"]
    assert band["rank1_fused"] > max(band["rank1_student"], band["rank1_teacher"]) + 10, band
    assert chosen["rank1_by_weight"][f"{fusion['student_weight']:g}"] > chosen["rank1_by_weight"]["1"]
    genuine = _unit(fusion["student_weight"] * student + (1 - fusion["student_weight"]) * teacher) * gallery[truths]
    in_band = (face_px >= 18) & (face_px < 26)
    assert np.median(genuine.sum(axis=1)[in_band]) > fusion["threshold"] > 0.0
    plain = _choose_chip_routing(face_px, truths, student, teacher, gallery, teacher_gallery, people, None, seed=0)
    assert plain["fusion"] is None and "rank1_fused" not in plain["by_size"]["20"]  # no centred space: no fusion


def test_chips_are_served_by_their_side_student_fused_teacher_and_boxes_and_crops_likewise() -> None:
    face = FaceInput(np.zeros((8, 8, 3), np.uint8), None)
    routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9, detected_min_face_px=28.0,
                      chip_min_face_px=26.0, chip_fusion=CHIPS)  # fmt: skip
    student = SimpleNamespace(model_version="s:1", card=SimpleNamespace(
        gallery_from_teacher=GalleryFromTeacher(centre=[0.0] * 4, threshold=0.3), threshold=0.4))  # fmt: skip
    teacher = SimpleNamespace(model_id="teacher-dlib:v")
    embedders = Embedders(student=student, teacher=teacher, routing=routing)  # type: ignore[arg-type]
    chips = [DecodedFace(face, "", None, face_px=px, input="chip") for px in (17.9, 18.0, 25.9, 26.0)]
    boxes = [DecodedFace(face, "", (0, 0, 1, 1), face_px=px, input="box") for px in (17.9, 18.0, 25.9, 26.0)]
    crops = [DecodedFace(face, "", (0, 0, 1, 1), face_px=px, input="crop") for px in (17.9, 18.0, 25.9, 26.0)]
    for faces in (chips, boxes, crops):  # a tight crop is served as the client's box covering it would be
        assert [embedders.space_for(f) for f in faces] == ["student", "student", "student", "teacher"]
        assert [embedders.fuses(f) for f in faces] == [False, True, True, False]
        assert embedders.threshold("student", faces=faces[1:3]) == CHIPS.threshold
        assert embedders.label("student", faces[1:2]) == "student+teacher"
        assert embedders.label("student", faces[:2]) == "student"  # not all fused
    detected = DecodedFace(face, "", (0, 0, 1, 1), face_px=26.0, input="detected")
    assert embedders.space_for(detected) == "student" and not embedders.fuses(detected)  # its own switch and fusion
    assert "both fused from 18 px" in embedders.describe()
    embedders.routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9)  # a card without them
    assert [embedders.space_for(f) for f in chips] == ["student", "student", "teacher", "teacher"]
    assert not any(embedders.fuses(f) for f in chips)


needs_teacher = pytest.mark.skipif(
    not aligner_available() or load_card(BUNDLED_MODEL_DIR).gallery_from_teacher is None,
    reason="needs dlib and a released student in the teacher's space",
)


@needs_teacher
def test_a_chip_in_the_band_is_embedded_by_the_fusion_rule_and_enrolled_as_it_is_probed() -> None:
    embedders = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1))
    assert embedders.routing is not None and embedders.from_teacher is not None
    embedders.routing = embedders.routing.model_copy(update={"chip_min_face_px": 26.0, "chip_fusion": CHIPS})
    hr = _hr_chip("Colin_Powell")
    decoder = FaceDecoder(40_000_000)

    def chip(side: int) -> DecodedFace:
        data = Image.fromarray(degrade(hr, DegradationConfig(size=side)))
        path = ImageItem(_png(data), f"{side}.png")
        return decoder.decode(path, "false")[0]

    small, middle = chip(16), chip(20)
    alone = embedders.student.embed([small.face, middle.face])
    teacher = embedders.embed([middle], "teacher")
    got = embedders.embed([small, middle], "student")
    assert np.allclose(got[0], alone[0], atol=1e-6)
    assert np.allclose(got[1], CHIPS.vectors(alone[1:2], teacher, embedders.from_teacher)[0], atol=1e-5)
    assert np.allclose(embedders.gallery_vectors([middle])[0], got[1], atol=1e-5)  # enrolled as probed


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_offline_evaluation_keeps_the_services_own_switches_and_fusions(tmp_path: Path) -> None:
    from training.report import record_in_cards

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, model, ignore=shutil.ignore_patterns("student.pt"))
    card = load_card(model)
    assert card.routing is not None
    card.routing = card.routing.model_copy(update={"chip_min_face_px": 26.0, "chip_fusion": CHIPS})
    card.save(model)
    results = {
        "command": "lrface evaluate …",
        "models": {"5": {"model_dir": str(model), "hr-hr": {"official": {"accuracy": 0.9}}}},
        "routing": {"min_face_px_for_teacher": 24, "teacher_threshold": 0.88, "validation_people": 125},
    }
    record_in_cards(json.loads(json.dumps(results)), tmp_path / "out")
    after = load_card(model).routing
    assert after is not None and after.min_face_px == 24 and after.threshold == 0.88
    assert after.chip_fusion == CHIPS and after.chip_min_face_px == 26.0
    assert after.detected_fusion == card.routing.detected_fusion
    assert after.detected_min_face_px == card.routing.detected_min_face_px


@pytest.mark.parametrize("side", [20, 40, 60, 150])
def test_the_degradation_without_blur_noise_or_jpeg_is_the_one_hr_to_lr_rule(side: int) -> None:
    """Training views (jittered crops of 58-67 px of the 64-px chip) and LR probes start where the service
    does: a 20-60 px face is enlarged to the canonical chip before it is shrunk, not box-filtered."""
    face = np.asarray(Image.fromarray(_hr_chip("Tony_Blair")).resize((side, side), Image.Resampling.BICUBIC))
    for size in (12, 16):
        assert np.array_equal(degrade(face, DegradationConfig(size=size)), hr_to_lr(face, size)), (side, size)


def test_one_embedding_call_fuses_chips_and_detected_faces_each_by_its_own_fusion() -> None:
    from lrface.model_card import DetectedFusion

    rng = np.random.default_rng(2)
    rows = _unit(rng.normal(size=(4, 8))).astype(np.float32)
    teacher_rows = _unit(rng.normal(size=(4, 8))).astype(np.float32)
    space = GalleryFromTeacher(centre=[0.01] * 8, threshold=0.3)
    student = SimpleNamespace(card=SimpleNamespace(gallery_from_teacher=space, threshold=0.4), model_version="s:1",
                              embed=lambda inputs: rows[: len(inputs)].copy())  # fmt: skip
    teacher = SimpleNamespace(model_id="t", embed=lambda inputs: teacher_rows[: len(inputs)].copy())
    detected_fusion = DetectedFusion(student_weight=0.8, threshold=0.111)
    routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9, detected_min_face_px=28.0,
                      detected_fusion=detected_fusion, chip_min_face_px=26.0, chip_fusion=CHIPS)  # fmt: skip
    embedders = Embedders(student=student, teacher=teacher, routing=routing)  # type: ignore[arg-type]
    face = FaceInput(np.zeros((8, 8, 3), np.uint8), None)
    faces = [
        DecodedFace(face, "", None, face_px=20.0, input="chip"),  # chip fusion
        DecodedFace(face, "", None, face_px=12.0, input="chip"),  # the student alone
        DecodedFace(face, "", (0, 0, 1, 1), face_px=20.0, input="detected"),  # detected fusion
        DecodedFace(face, "", None, face_px=40.0, input="chip"),  # the teacher's: the student's own here
    ]
    given = _unit(rng.normal(size=(4, 8))).astype(np.float32)  # the teacher's embeddings, already made
    got = embedders.embed(faces, "student", teacher=given)
    assert np.allclose(got[0], CHIPS.vectors(rows[:1], given[:1], space)[0], atol=1e-6)
    assert np.allclose(got[1], rows[1], atol=1e-6) and np.allclose(got[3], rows[3], atol=1e-6)
    assert np.allclose(got[2], detected_fusion.vectors(rows[2:3], given[2:3], space)[0], atol=1e-6)
    assert not np.allclose(got[0], CHIPS.vectors(rows[:1], given[2:3], space)[0], atol=1e-3)  # its own row
    assert embedders.threshold("student", faces=[faces[0], faces[2]]) == CHIPS.threshold  # mixed: the stricter
    # two faces compared with each other are not fused: the teacher from the card's min_face_px
    assert [embedders.space_for(f, fuse=False) for f in faces] == ["teacher", "student", "teacher", "teacher"]
    assert [embedders.space_for(f) for f in faces] == ["student", "student", "student", "teacher"]


@needs_teacher
def test_a_chip_enrolled_in_the_fused_band_is_re_embedded_as_it_was_enrolled(tmp_path: Path) -> None:
    from lrface.settings import Settings
    from service.enrollment import enroll_images, reembed_store
    from service.gallery.gallery import open_gallery

    embedders = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1))
    assert embedders.routing is not None and embedders.from_teacher is not None
    embedders.routing = embedders.routing.model_copy(update={"chip_min_face_px": 26.0, "chip_fusion": CHIPS})
    settings = Settings(gallery_dir=tmp_path / "g")
    hr = _hr_chip("Colin_Powell")
    items = [ImageItem(_png(Image.fromarray(degrade(hr, DegradationConfig(size=s)))), f"{s}.png") for s in (12, 20)]
    items.append(ImageItem(_png(Image.fromarray(hr)), "hr.png"))
    gallery = open_gallery(settings, 128, embedders.gallery_model_id, teacher=embedders.teacher_space)
    enrolled = enroll_images(gallery, embedders, FaceDecoder(40_000_000), "powell", items, detect="false")
    assert [embedders.fuses(face) for _, face in enrolled] == [False, True, False]
    before = {r.face_id: r for r, _ in enrolled}
    vectors = dict(zip(before, embedders.gallery_vectors([face for _, face in enrolled]), strict=True))
    store = gallery.store
    store.replace_embeddings([(i, -v) for i, v in vectors.items()], embedders.gallery_model_id)  # spoil them
    assert reembed_store(store, embedders) == (3, 0, 0)
    store.close()
    gallery = open_gallery(settings, 128, embedders.gallery_model_id, teacher=embedders.teacher_space)
    for face_id, vector in vectors.items():
        top = gallery.search(vector, 3)
        assert top[0].score > 0.999 and top[0].face_id == face_id, (face_id, top)
    gallery.store.close()
