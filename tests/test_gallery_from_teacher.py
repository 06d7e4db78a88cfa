"""A student in the teacher's centred space (v5, ``gallery_from_teacher`` in its card): its gallery
index holds the teacher's embedding of each enrolled HR chip, centred, so a small probe is matched
against the HR photo itself. Enrolment, re-embedding and the offline evaluation fill it by one rule
(:meth:`lrface.model_card.GalleryFromTeacher.vectors`); a gallery filled the other way is refused
until re-embedded. The released model, real photos."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from lrface.alignment import aligner_available
from lrface.embedder import OnnxEmbedder
from lrface.model_card import DistantViews, GalleryFromTeacher, ModelCardError, load_card, with_distant_views
from lrface.settings import BUNDLED_MODEL_DIR, Settings
from service.embedders import Embedders
from service.faces import FaceDecoder, ImageItem
from tests.faces import aligned_chip, lfw_faces
from tests.server import running_server

pytestmark = pytest.mark.skipif(
    not aligner_available() or load_card(BUNDLED_MODEL_DIR).gallery_from_teacher is None,
    reason="needs dlib and a released student in the teacher's space",
)


def _faces(decoder: FaceDecoder, name: str, count: int) -> list:  # type: ignore[type-arg]
    return [decoder.decode(ImageItem(p.read_bytes(), p.name), "auto")[0] for p in lfw_faces(name, count)]


def test_the_gallery_side_is_the_centred_teacher_and_the_thresholds_follow() -> None:
    student = OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1)
    card_rule = student.card.gallery_from_teacher
    assert card_rule is not None and len(card_rule.centre) == student.card.embedding_size
    rule = student.card.gallery_from_teacher = card_rule.model_copy(update={"distant_views": None})
    embedders = Embedders.for_model(student)
    assert embedders.from_teacher == rule and embedders.teacher is not None
    assert embedders.gallery_model_id == f"{student.model_id}+{embedders.teacher.model_id}"
    faces = _faces(FaceDecoder(40_000_000), "Colin_Powell", 2)
    vectors = embedders.gallery_vectors(faces)
    teacher = embedders.embed(faces, "teacher")
    assert np.allclose(vectors, rule.vectors(teacher), atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors, embedders.embed(faces, "student"), atol=0.05)  # not the student's own
    # probe against the gallery: the rule's threshold; probe against probe (/verify of two faces): the card's
    assert embedders.threshold("student") == rule.threshold
    assert embedders.threshold("student", against_gallery=False) == student.card.threshold
    # with distant views: the student's views of each HR chip join its vector, the gallery says so, the
    # views' own threshold applies to a student probe against it
    views = DistantViews(weight=0.5, threshold=0.25)
    student.card.gallery_from_teacher = rule.model_copy(update={"distant_views": views})
    assert embedders.gallery_model_id == f"{student.model_id}+{embedders.teacher.model_id}+views:16/20/24:q92:w0.5"
    joined = embedders.gallery_vectors(faces)
    seen = embedders.distant_views([f.teacher_face() for f in faces], views.sides, views.quality, fused=False)
    assert np.allclose(np.linalg.norm(seen, axis=1), 1.0, atol=1e-5)  # the face was found in some view
    assert np.allclose(joined, with_distant_views(vectors, seen, 0.5), atol=1e-6)
    assert not np.allclose(joined, vectors, atol=0.02)
    assert np.allclose(embedders.gallery_vectors(faces, views=False), vectors, atol=1e-6)
    assert embedders.threshold("student") == 0.25 and embedders.threshold("teacher") != 0.25
    alone = Embedders.for_model(student, use_teacher=False)  # no teacher: the student fills its own index
    assert alone.from_teacher is None and alone.gallery_model_id == student.model_id
    assert alone.threshold("student") == student.card.threshold


def test_a_gallery_filled_by_the_student_alone_is_refused_until_reembedded(tmp_path: Path) -> None:
    from service.enrollment import enroll_images, reembed_store
    from service.gallery.gallery import GalleryVersionMismatch, open_gallery

    settings = Settings(gallery_dir=tmp_path / "g")
    student = OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1)
    rule = student.card.gallery_from_teacher
    assert rule is not None  # with distant views, whatever the card holds: re-embedding makes them as enrolment
    student.card.gallery_from_teacher = rule.model_copy(
        update={"distant_views": DistantViews(weight=0.5, threshold=0.3)}
    )
    alone, shared = Embedders.for_model(student, use_teacher=False), Embedders.for_model(student)
    decoder = FaceDecoder(40_000_000)
    photo = lfw_faces("Tony_Blair", 1)[0]
    gallery = open_gallery(settings, 128, alone.gallery_model_id)
    enroll_images(gallery, alone, decoder, "blair", [ImageItem(photo.read_bytes(), photo.name)])
    gallery.store.close()
    with pytest.raises(GalleryVersionMismatch, match="reembed.*the same student"):
        open_gallery(settings, 128, shared.gallery_model_id, teacher=shared.teacher_space)
    store = open_gallery(settings, 128, alone.gallery_model_id, load=False).store
    assert reembed_store(store, shared) == (1, 0, 0)
    store.close()
    gallery = open_gallery(settings, 128, shared.gallery_model_id, teacher=shared.teacher_space)
    stored = gallery.store.chips()
    face = decoder.decode(ImageItem(photo.read_bytes(), photo.name), "auto")[0]
    want = shared.gallery_vectors([face])[0]  # re-embedded from the stored HR chip as enrolled
    top = gallery.search(want, 1)
    assert top[0].subject_id == "blair" and top[0].score > 0.999 and len(stored) == 1
    gallery.store.close()
    # the same card at another views' weight (or none) fills the index otherwise: refused until re-embedded
    student.card.gallery_from_teacher = rule.model_copy(update={"distant_views": None})
    with pytest.raises(GalleryVersionMismatch, match="reembed.*the card's distant views"):
        open_gallery(settings, 128, shared.gallery_model_id, teacher=shared.teacher_space)


def test_a_16px_probe_is_identified_against_the_enrolled_hr_photos(tmp_path: Path) -> None:
    from PIL import Image

    rule = load_card(BUNDLED_MODEL_DIR).gallery_from_teacher
    assert rule is not None  # a chip against the gallery: the views' threshold where the card has them
    chip_threshold = rule.threshold if rule.distant_views is None else rule.distant_views.threshold
    people = ("Colin_Powell", "George_W_Bush", "Tony_Blair", "Donald_Rumsfeld")
    # decided at the rule's own threshold (the default, fpir_10, scales it to the gallery: test_operating_point.py)
    env = {"LRFACE_GALLERY_DIR": str(tmp_path / "g"), "LRFACE_OPERATING_POINT": "best_accuracy"}
    with running_server(env) as url, httpx.Client(base_url=url, timeout=60) as client:
        ready = client.get("/readyz").json()
        assert ready["student_gallery"] == "teacher" and "centred HR embeddings" in ready["embedders"]
        for name in people:
            first = lfw_faces(name, 1)[0]
            files = {"images": (first.name, first.read_bytes())}
            response = client.post(f"/gallery/subjects/{name}/faces", files=files)
            assert response.status_code == 201, response.text
        hits = 0
        for name in people:
            photo = lfw_faces(name, 3)[2]
            chip = Image.fromarray(aligned_chip(photo, 16))
            found = client.post("/identify", json={"image": {"data": _png_b64(chip)}}).json()
            assert found["embedder"] == "student" and found["input"] == "chip"
            assert found["threshold"] == chip_threshold
            hits += found["matches"][0]["subject_id"] == name
        assert hits >= 3, hits


def _png_b64(image: object) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_centre_of_another_size_is_refused(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, copy, ignore=shutil.ignore_patterns("student.pt"))
    card = load_card(copy)
    card.gallery_from_teacher = GalleryFromTeacher(centre=[0.0] * 64, threshold=0.5)
    card.save(copy)
    with pytest.raises(ModelCardError, match="centre"):
        load_card(copy)
