"""Small faces found in frames, embedded by both models (the card's ``routing.detected_fusion``): the
student's embedding and the teacher's centred one averaged by one rule
(:meth:`lrface.model_card.Fusion.vectors`) in the service and its calibration, with the
fusion's own threshold; chips, large faces and a card without the fusion are served as before. The
released model and real LFW photos pasted small into a frame."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from lrface.alignment import aligner_available
from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import ChipFusion, DetectedFusion, Fusion, GalleryFromTeacher, load_card, mean_of_views
from lrface.preprocessing import face_to_input, hr_chip
from lrface.settings import BUNDLED_MODEL_DIR
from service.embedders import Embedders
from service.faces import DecodedFace, FaceDecoder, ImageItem
from tests.faces import lfw_faces
from tests.server import running_server

needs_teacher = pytest.mark.skipif(
    not aligner_available() or load_card(BUNDLED_MODEL_DIR).gallery_from_teacher is None,
    reason="needs dlib and a released student in the teacher's space",
)
FUSION = DetectedFusion(student_weight=0.4, threshold=0.123)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_fusion_is_the_weighted_mean_of_the_student_and_the_centred_teacher() -> None:
    rng = np.random.default_rng(0)
    student, teacher = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(5, 8)))
    space = GalleryFromTeacher(centre=list(rng.normal(size=8) * 0.1), threshold=0.3)
    fused = FUSION.vectors(student, teacher, space)
    want = _unit(0.4 * student + 0.6 * _unit(teacher - np.asarray(space.centre)))
    assert np.allclose(fused, want, atol=1e-6) and np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-6)
    alone = Fusion(student_weight=1.0, threshold=0.0).vectors(student, teacher, space)
    assert np.allclose(alone, student, atol=1e-6)  # weight 1: the student alone
    only_teacher = Fusion(student_weight=0.0, threshold=0.0).vectors(student, teacher, space)
    assert np.allclose(only_teacher, space.vectors(teacher), atol=1e-6)


def test_the_calibration_fuses_where_two_noisy_views_beat_either_and_thresholds_between_same_and_other() -> None:
    """Probes whose student and teacher embeddings each carry independent noise around the person's
    gallery vector: fusing halves the noise, so a weight below 1 wins, and the threshold falls between
    the genuine and impostor scores."""
    from service.detected_routing import FUSION_WEIGHTS, _choose_fusion

    rng = np.random.default_rng(1)
    people = np.r_[np.arange(60), -np.ones(40, int)]  # 60 people enrolled, 40 distractors
    gallery = _unit(rng.normal(size=(100, 32))).astype(np.float32)
    truths = rng.integers(0, 60, size=600)
    centre = rng.normal(size=32) * 0.05
    space = GalleryFromTeacher(centre=list(centre), threshold=0.3)
    student = _unit(gallery[truths] + rng.normal(scale=0.5, size=(600, 32)))
    teacher = _unit(_unit(gallery[truths] + rng.normal(scale=0.5, size=(600, 32))) + centre)
    face_px = np.full(600, 10.0)  # all below every candidate switch: every face is fused
    chosen = _choose_fusion(student, teacher, face_px, truths, np.zeros(600), gallery, people, space, seed=0)
    fusion = chosen["fusion"]
    assert fusion is not None and fusion["student_weight"] in (0.4, 0.5, 0.6), chosen["rank1_by_weight"]
    assert chosen["rank1_by_weight"]["0.5"] > chosen["rank1_by_weight"]["1"] + 5  # fusing is worth it here
    assert len(chosen["hits"]) == 600 and set(FUSION_WEIGHTS) >= {fusion["student_weight"]}
    probes = Fusion(**fusion).vectors(student, teacher, space)
    genuine = (probes * gallery[truths]).sum(axis=1)
    assert np.median(genuine) > fusion["threshold"] > 0.0 and fusion["validation"]["faces"] == 600
    plain = _choose_fusion(student, teacher, face_px, truths, np.zeros(600), gallery, people, None, seed=0)
    assert plain["fusion"] is None and plain["hits"] is None  # no centred space: nothing to fuse in
    large = np.full(600, 40.0)  # every face above every candidate switch: the teacher alone, nothing fused
    alone = _choose_fusion(student, teacher, large, truths, np.ones(600), gallery, people, space, seed=0)
    assert alone["fusion"] is None and alone["hits"] is None and alone["teacher_from_face_px"] == 34.0  # all tie


def _frame_with_small_faces() -> bytes:
    """Two LFW photos pasted at 40 and 110 px into a 480x270 frame: faces of about 18 and 50 px."""
    frame = Image.new("RGB", (480, 270), (118, 124, 120))
    photos = (lfw_faces("Colin_Powell", 3)[2], lfw_faces("Tony_Blair", 3)[2])
    for (x, y, side), photo in zip(((60, 100, 40), (260, 60, 110)), photos, strict=True):
        frame.paste(Image.open(photo).convert("RGB").resize((side, side), Image.Resampling.BOX), (x, y))
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    return buffer.getvalue()


@needs_teacher
def test_a_small_detected_face_is_fused_a_chip_and_a_large_face_are_not() -> None:
    embedders = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1))
    assert embedders.routing is not None and embedders.from_teacher is not None
    embedders.routing = embedders.routing.model_copy(
        update={"detected_fusion": FUSION, "detected_min_face_px": 30.0, "chip_fusion": None}
    )
    decoder = FaceDecoder(40_000_000)
    faces = decoder.decode(ImageItem(_frame_with_small_faces(), "frame.png"), "true")
    assert len(faces) == 2 and faces[1].face_px < 30.0 <= faces[0].face_px, [f.face_px for f in faces]
    large, small = faces
    chip = DecodedFace(small.face, "", None, face_px=small.face_px, input="chip")
    assert [embedders.fuses(f) for f in (large, small, chip)] == [False, True, False]
    alone = embedders.student.embed([f.face for f in (large, small, chip)])
    teacher = embedders.embed([small], "teacher")
    got = embedders.embed([large, small, chip], "student")
    assert np.allclose(got[1], FUSION.vectors(alone[1:2], teacher, embedders.from_teacher)[0], atol=1e-5)
    assert np.allclose(got[[0, 2]], alone[[0, 2]], atol=1e-6)  # the others: the student alone
    assert not np.allclose(got[1], alone[1], atol=0.05)
    assert embedders.label("student", [small]) == "student+teacher" and embedders.label("student", [chip]) == "student"
    assert embedders.label("student", [small, chip]) == "student"  # a track of both kinds: not all fused
    assert embedders.threshold("student", faces=[small]) == FUSION.threshold
    views = embedders.from_teacher.distant_views  # a chip against the gallery: the views' threshold where it has them
    want = embedders.from_teacher.threshold if views is None else views.threshold
    assert embedders.threshold("student", faces=[chip]) == want
    assert embedders.threshold("student", against_gallery=False, faces=[small]) == embedders.student.card.threshold
    assert "fused" in embedders.describe()
    # enrolled as a probe is embedded: the small detected face fused (from the teacher view given), the large one
    # the teacher's centred embedding of it
    enrolled = embedders.gallery_vectors([large, small])
    assert np.allclose(enrolled[1], got[1], atol=1e-5)
    centred = embedders.from_teacher.vectors(embedders.embed([large], "teacher"))
    assert np.allclose(enrolled[0], embedders.with_distant_views(centred, [large.teacher_face()])[0], atol=1e-5)
    assert np.allclose(embedders.embed([small], "student", fuse=False), alone[1:2], atol=1e-6)
    embedders.routing = embedders.routing.model_copy(update={"detected_fusion": None})
    assert not embedders.fuses(small) and np.allclose(embedders.embed([small], "student"), alone[1:2], atol=1e-6)
    assert embedders.label("student", [small]) == "student"


@needs_teacher
def test_the_service_says_a_small_face_in_a_frame_was_fused_and_uses_the_fusions_threshold(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, model, ignore=shutil.ignore_patterns("student.pt"))
    card = load_card(model)
    assert card.routing is not None
    card.routing.detected_fusion, card.routing.detected_min_face_px = FUSION, 30.0
    card.save(model)
    env = {"LRFACE_MODEL": str(model), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    with running_server(env) as url, httpx.Client(base_url=url, timeout=120) as client:
        assert "fused" in client.get("/readyz").json()["embedders"]
        for name in ("Colin_Powell", "Tony_Blair"):
            first = lfw_faces(name, 1)[0]
            r = client.post(f"/gallery/subjects/{name}/faces", files={"images": (first.name, first.read_bytes())})
            assert r.status_code == 201, r.text
        body = client.post("/identify", files={"image": ("frame.png", _frame_with_small_faces())}).json()
        large, small = body["faces"]
        assert large["embedder"] == "teacher" and large["threshold"] == card.routing.threshold
        assert small["embedder"] == "student+teacher" and small["threshold"] == FUSION.threshold
        assert small["matches"][0]["subject_id"] == "Colin_Powell"
        embedded = client.post("/embed", files={"images": ("frame.png", _frame_with_small_faces())}).json()
        assert [f["embedder"] for f in embedded["faces"]] == ["student", "student+teacher"]
        small_face = _small_face_crop()
        checked = client.post("/verify", files={"image_a": ("a.png", small_face)},
                              data={"subject_id": "Colin_Powell", "detect": "true"}).json()  # fmt: skip
        assert checked["embedder"] == "student+teacher" and checked["threshold"] == FUSION.threshold, checked
        pair = client.post("/verify", files={"image_a": ("a.png", small_face), "image_b": ("b.png", small_face)},
                           data={"detect": "true"}).json()  # fmt: skip
        # two faces compared with each other: the student alone, at the card's pair threshold
        assert pair["embedder"] == "student" and pair["threshold"] == card.threshold and pair["score"] > 0.999, pair


def _small_face_crop() -> bytes:
    """The frame's small face with some of the frame around it (searched: found as one small face)."""
    frame = Image.open(io.BytesIO(_frame_with_small_faces())).crop((20, 60, 140, 180))
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    return buffer.getvalue()


def test_open_set_figures_search_each_probe_as_an_unknown_and_find_the_fpir_thresholds() -> None:
    """FPIR: a probe searched without its own person's entries reaching the threshold; DIR: its own
    person first and reaching it. Probes near their person's vector, among 200 distractors."""
    from service.detected_routing import open_set

    rng = np.random.default_rng(3)
    people = np.r_[np.arange(50), -np.ones(200, int)]
    gallery = _unit(rng.normal(size=(250, 16)))
    truths = rng.integers(0, 50, size=400)
    probes = _unit(gallery[truths] + rng.normal(scale=0.1, size=(400, 16)))
    figures = open_set(probes, gallery, people, truths, threshold=-1.0)
    assert figures["gallery"] == 250 and figures["at_threshold"]["fpir"] == 100.0  # everyone reaches -1
    assert figures["at_threshold"]["dir"] > 90.0
    strict, stricter = figures["fpir_10"], figures["fpir_1"]
    assert abs(strict["fpir"] - 10.0) <= 0.5 and abs(stricter["fpir"] - 1.0) <= 0.5
    assert (
        stricter["threshold"] > strict["threshold"]
        and stricter["dir"] <= strict["dir"] <= figures["at_threshold"]["dir"]
    )
    alone = open_set(probes, gallery, people, truths, threshold=float("inf"))
    assert alone["at_threshold"]["fpir"] == 0.0 and alone["at_threshold"]["dir"] == 0.0


def test_a_mirrored_face_is_the_image_and_its_box_flipped_and_the_models_see_its_mirror() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(150, 170, 3), dtype=np.uint8)
    face = FaceInput(image, (10.5, 20.0, 90.25, 110.0))
    mirror = face.mirrored()
    assert np.array_equal(mirror.image, image[:, ::-1]) and mirror.box == (79.75, 20.0, 159.5, 110.0)
    again = mirror.mirrored()
    assert np.array_equal(again.image, image) and again.box == face.box
    assert FaceInput(image).mirrored().box is None
    # the teacher's chip of the mirror is the mirror of its chip (a box with fractional edges: to a grey level)
    chip, flipped = hr_chip(image, face.box), hr_chip(mirror.image, mirror.box)
    assert np.abs(flipped.astype(int) - chip[:, ::-1]).max() <= 1
    assert np.abs(flipped.astype(int) - chip).mean() > 20  # not the same chip unflipped
    # the student's input of a mirrored image: the mirror of its input (to within the box filter's phase)
    one, other = face_to_input(image, 16), face_to_input(np.ascontiguousarray(image[:, ::-1]), 16)
    assert np.abs(other - one[:, :, ::-1]).mean() < 0.1 * np.abs(other - one).mean()


def _twice(both: bool, mirror: bool) -> DetectedFusion:
    return FUSION.model_copy(update={"student_on_both_chips": both, "teacher_mirrored": mirror})


@needs_teacher
def test_a_detected_fusion_may_see_the_face_twice_the_student_on_both_chips_and_the_teacher_with_its_mirror() -> None:
    """The card's detected fusion says how each model's half is made; enrolment and probes agree; a
    chip's fusion in the same request is made as it always was."""
    embedders = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1))
    assert embedders.routing is not None and embedders.from_teacher is not None and embedders.teacher is not None
    faces = FaceDecoder(40_000_000).decode(ImageItem(_frame_with_small_faces(), "frame.png"), "true")
    large, small = faces
    own, dlib_chip = small.face, small.teacher_face()
    assert not np.array_equal(own.image, dlib_chip.image)  # two chips of the face: the landmarks' and dlib's
    chip = DecodedFace(FaceInput(lfw_chip()), "", None, face_px=20.0, input="chip")  # fused as a chip (18-30 px)
    student = embedders.student.embed([own, dlib_chip, chip.face])
    teacher = embedders.teacher.embed([dlib_chip, dlib_chip.mirrored(), chip.teacher_face()])
    space = embedders.from_teacher
    chips = ChipFusion(from_face_px=18.0, student_weight=0.7, threshold=0.2)
    for both, mirror in ((False, False), (True, False), (False, True), (True, True)):
        fusion = _twice(both, mirror)
        embedders.routing = embedders.routing.model_copy(
            update={
                "detected_fusion": fusion,
                "detected_min_face_px": 30.0,
                "chip_fusion": chips,
                "chip_min_face_px": 30.0,
            }  # fmt: skip
        )
        assert [embedders.fuses(f) for f in (large, small, chip)] == [False, True, True]
        seen = mean_of_views(student[:1], student[1:2]) if both else student[:1]
        taught = mean_of_views(teacher[:1], teacher[1:2]) if mirror else teacher[:1]
        got = embedders.embed([large, small, chip], "student")
        assert np.allclose(got[1], fusion.vectors(seen, taught, space)[0], atol=1e-5), (both, mirror)
        assert np.allclose(got[2], chips.vectors(student[2:], teacher[2:], space)[0], atol=1e-5)  # as it was
        assert np.allclose(got[0], embedders.student.embed([large.face])[0], atol=1e-6)  # not fused: as it was
        given = embedders.embed([large, small], "teacher")
        enrolled = embedders.gallery_vectors([large, small], given)  # the teacher's plain embeddings given
        assert np.allclose(enrolled[1], got[1], atol=1e-5)
    plain = FUSION.vectors(student[:1], teacher[:1], space)[0]
    assert not np.allclose(got[1], plain, atol=1e-3)  # both ways change the probe
    assert "student on both chips" in embedders.describe() and "mirror image" in embedders.describe()


def lfw_chip() -> np.ndarray:
    """A 20-px chip of an LFW photo's centre (a chip the card fuses: 18-30 px)."""
    photo = Image.open(lfw_faces("George_W_Bush", 1)[0]).convert("RGB").crop((70, 70, 180, 180))
    return np.asarray(photo.resize((20, 20), Image.Resampling.BOX))


def _noisy_people(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    people = np.r_[np.arange(60), -np.ones(40, int)]
    gallery = _unit(rng.normal(size=(100, 32))).astype(np.float32)
    return people, gallery, rng.integers(0, 60, size=600), rng


def test_the_calibration_sees_a_fused_face_twice_only_where_the_second_view_adds_to_the_first() -> None:
    """Second views with their own noise around the person's vector halve it (chosen); second views that
    add nothing (the first again, or pure noise) leave the cheaper way."""
    from service.detected_routing import _choose_probe_views

    people, gallery, truths, rng = _noisy_people(5)
    space = GalleryFromTeacher(centre=[0.0] * 32, threshold=0.3)

    def noisy(scale: float) -> np.ndarray:
        return _unit(gallery[truths] + rng.normal(scale=scale, size=(600, 32)))

    face_px, teacher_hits = np.full(600, 10.0), np.zeros(600)
    student, teacher = noisy(0.6), noisy(0.6)

    def choose(second: np.ndarray, mirror: np.ndarray, where: GalleryFromTeacher | None = space) -> dict:
        return _choose_probe_views((student, second), (teacher, mirror), face_px, truths, teacher_hits,
                                   gallery, None, people, where, seed=0)  # fmt: skip

    useful = choose(noisy(0.6), noisy(0.6))
    ranks = useful["rank1_as_served_by_probe_views"]
    assert useful["fusion"]["student_on_both_chips"] and useful["fusion"]["teacher_mirrored"], ranks
    assert ranks["student on both chips, teacher and mirror"] > ranks["student on its chip, teacher alone"] + 3
    # the student alone is recorded as served (on its own input), whatever the fusion sees
    plain = choose(student, teacher)
    assert not plain["fusion"]["student_on_both_chips"] and not plain["fusion"]["teacher_mirrored"]
    assert useful["rank1_by_threshold_student_alone"] == plain["rank1_by_threshold_student_alone"]
    assert useful["rank1_by_weight"]["1"] == plain["rank1_by_weight"]["1"]
    # a mirror that adds nothing (the same view again) ties with no mirror: the cheaper way, without it
    student_only = choose(noisy(0.6), teacher)
    assert student_only["fusion"]["student_on_both_chips"] and not student_only["fusion"]["teacher_mirrored"]
    noise = _unit(rng.normal(size=(600, 32)))
    useless = choose(noise, noise)
    assert not useless["fusion"]["student_on_both_chips"] and not useless["fusion"]["teacher_mirrored"]
    alone = choose(noise, noise, None)
    assert alone["fusion"] is None and list(alone["rank1_as_served_by_probe_views"]) == [
        "student on its chip, teacher alone"
    ]


def test_the_student_on_both_chips_is_chosen_fused_even_where_both_chips_alone_would_beat_it() -> None:
    """The student alone is served on its own chip: a way whose two chips alone would be best (which the
    service cannot serve) is judged by its fusion, and chosen where that beats the plain way."""
    from service.detected_routing import _choose_probe_views

    people, gallery, truths, rng = _noisy_people(6)
    space = GalleryFromTeacher(centre=[0.0] * 32, threshold=0.3)
    own = _unit(gallery[truths] + rng.normal(scale=1.2, size=(600, 32)))  # a poor landmark chip
    better = _unit(gallery[truths] + rng.normal(scale=0.35, size=(600, 32)))  # a good second chip
    teacher = _unit(gallery[truths] + rng.normal(scale=2.5, size=(600, 32)))  # a weak teacher
    chosen = _choose_probe_views((own, better), (teacher, teacher), np.full(600, 10.0), truths, np.zeros(600),
                                 gallery, None, people, space, seed=0)  # fmt: skip
    fusion = chosen["fusion"]
    assert fusion is not None and fusion["student_on_both_chips"] and fusion["student_weight"] < 1.0, chosen
    ranks = chosen["rank1_as_served_by_probe_views"]
    assert ranks["student on both chips, teacher alone"] > ranks["student on its chip, teacher alone"] + 10


@needs_teacher
def test_the_frame_benchmark_times_embedding_as_served_and_with_each_model_once() -> None:
    """`lrface bench frames` reports what seeing fused faces twice costs (times are reported, not judged)."""
    from service.frames_bench import _embedding_cost

    frame = np.asarray(Image.open(io.BytesIO(_frame_with_small_faces())).convert("RGB"))
    cost = _embedding_cost([frame], rounds=2)
    assert (cost["frames"], cost["faces"], cost["fused"]) == (1, 2, 1), cost  # the small face fused, the large not
    assert cost["as_served_per_frame"] > 0 and cost["each_model_once_per_frame"] > 0


def test_the_calibrations_choice_is_written_into_the_card_as_the_service_reads_it(tmp_path: Path) -> None:
    """`--update-card` (:func:`service.detected_routing.write_routing`): the detected fusion keeps how it
    sees a face through the card's file; the chip fusion has no such fields."""
    from service.detected_routing import write_routing

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, model, ignore=shutil.ignore_patterns("student.pt"))
    result = json.loads((Path(__file__).parents[1] / "reports/bench/detected-routing.json").read_text())
    for both, mirror in ((True, False), (False, True)):
        result["fusion"] = {**result["fusion"], "student_on_both_chips": both, "teacher_mirrored": mirror}
        card = load_card(model)
        write_routing(card, result)
        card.save(model)
        routing = load_card(model).routing
        assert routing is not None and isinstance(routing.detected_fusion, DetectedFusion)
        fusion = routing.detected_fusion
        assert (fusion.student_on_both_chips, fusion.teacher_mirrored) == (both, mirror)
        assert routing.detected_min_face_px == result["teacher_from_face_px"]
        assert routing.chip_fusion is not None and "teacher_mirrored" not in routing.chip_fusion.model_dump()
    card = load_card(model)
    card.routing = None  # a student without a teacher to route to: nothing to write
    with pytest.raises(ValueError, match="routes no faces to the teacher"):
        write_routing(card, result)


def test_each_face_is_scored_as_served_and_the_curve_at_the_switch_is_their_mean() -> None:
    """`rank1_served` (per size) and `rank1_by_threshold` (the curve the switch is chosen on) are one rule
    (:func:`service.detected_routing.served_hits`): the teacher's hit from the switch, the fusion's below."""
    from service.detected_routing import _choose_fusion, served_hits

    people, gallery, truths, rng = _noisy_people(7)
    space = GalleryFromTeacher(centre=[0.0] * 32, threshold=0.3)
    face_px = rng.uniform(12.0, 34.0, size=600)
    quality = np.clip((face_px - 10.0) / 24.0, 0.05, 1.0)[:, None]  # larger faces: a better teacher
    student = _unit(gallery[truths] + rng.normal(scale=0.7, size=(600, 32)))
    teacher = _unit(gallery[truths] + rng.normal(scale=0.3, size=(600, 32)) / quality)
    teacher_hits = (people[np.argmax(teacher @ gallery.T, axis=1)] == truths).astype(float)
    chosen = _choose_fusion(student, teacher, face_px, truths, teacher_hits, gallery, people, space, seed=0)
    switch, fused = chosen["teacher_from_face_px"], chosen["hits"]
    assert fused is not None and 12.0 < switch < 34.0, chosen["rank1_by_threshold"]  # both kinds of face served
    served = served_hits(face_px, switch, teacher_hits, fused)
    assert round(100 * served.mean(), 2) == chosen["rank1_by_threshold"][f"{switch:g}"]
    assert np.array_equal(served[face_px >= switch], teacher_hits[face_px >= switch])
    assert np.array_equal(served[face_px < switch], fused[face_px < switch])
