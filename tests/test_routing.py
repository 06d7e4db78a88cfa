"""Each face goes to the model that serves it best: with a routing in the model card, faces of at
least ``min_face_px`` are matched by the teacher (dlib's ResNet in ONNX Runtime) against the gallery's
teacher embeddings, smaller ones by the student. Real photos, a real server."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from lrface.alignment import aligner_available
from lrface.model_card import Routing, load_card
from lrface.teacher import DLIB_VERSION
from tests.faces import aligned_chip_png, lfw_faces
from tests.model_fixtures import write_tiny_model
from tests.server import running_server

pytestmark = pytest.mark.skipif(not aligner_available(), reason="dlib (the align extra) not installed")
PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")


def _routed_model(directory: Path, min_face_px: int = 40) -> Path:
    write_tiny_model(directory)
    card = load_card(directory)
    card.routing = Routing(teacher_version=DLIB_VERSION, min_face_px=min_face_px, threshold=0.5)
    card.save(directory)
    return directory


def _small_chip(photo: Path, side: int = 16) -> bytes:
    return aligned_chip_png(photo, side)


def test_large_faces_go_to_the_teacher_small_ones_to_the_student(tmp_path: Path) -> None:
    photos = {name: lfw_faces(name, 3) for name in PEOPLE}
    env = {"LRFACE_MODEL": str(_routed_model(tmp_path / "model")), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    with running_server(env) as url, httpx.Client(base_url=url, timeout=60) as client:
        ready = client.get("/readyz").json()
        assert ready["teacher_from_px"] == 40 and "teacher" in ready["embedders"]
        for name in PEOPLE:
            first = photos[name][0]
            files = {"images": (first.name, first.read_bytes())}
            assert (
                client.post(f"/gallery/subjects/{name}/faces", files=files, data={"detect": "true"}).status_code == 201
            )
        assert client.get("/readyz").json()["teacher_faces"] == 3
        for name in PEOPLE:  # another photo of each: the teacher identifies it (the tiny student could not)
            probe = photos[name][1]
            found = client.post("/identify", files={"image": (probe.name, probe.read_bytes())},
                                data={"detect": "true"}).json()  # fmt: skip
            assert found["embedder"] == "teacher" and found["face_px"] >= 40
            assert found["decision"] == name and found["threshold"] == 0.5
        small = client.post("/identify", files={"image": ("s.png", _small_chip(photos["Colin_Powell"][1]))}).json()
        assert small["embedder"] == "student" and small["face_px"] == 16
        assert small["threshold"] == load_card(Path(env["LRFACE_MODEL"])).threshold
        a, b = photos["Tony_Blair"][1:3]
        pair = {"image_a": (a.name, a.read_bytes()), "image_b": (b.name, b.read_bytes())}
        verdict = client.post("/verify", files=pair, data={"detect": "true"}).json()
        assert verdict["embedder"] == "teacher" and verdict["same_person"]
        pair = {"image_a": (a.name, a.read_bytes()), "image_b": ("s.png", _small_chip(b))}
        mixed = client.post("/verify", files=pair).json()
        assert mixed["embedder"] == "student"  # one small face: both in the student's space
        embedded = client.post("/embed", files={"images": ("s.png", _small_chip(a))}).json()
        assert embedded["embedder"] == "student" and np.asarray(embedded["embeddings"][0]["embedding"]).shape == (32,)


def test_without_dlib_or_routing_the_student_serves_every_face(tmp_path: Path) -> None:
    env = {
        "LRFACE_MODEL": str(_routed_model(tmp_path / "model")),
        "LRFACE_GALLERY_DIR": str(tmp_path / "g"),
        "LRFACE_USE_TEACHER": "false",
    }
    photo = lfw_faces("Colin_Powell", 1)[0]
    with running_server(env) as url:
        assert httpx.get(url + "/readyz").json()["teacher_faces"] is None
        body = {"image": {"data": base64.b64encode(photo.read_bytes()).decode()}}
        assert httpx.post(url + "/identify", json=body).json()["embedder"] == "student"


def test_a_gallery_enrolled_before_the_teacher_stays_with_the_student_until_reembedded(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.server import ROOT

    photos = lfw_faces("Colin_Powell", 2)
    plain = {"LRFACE_MODEL": str(write_tiny_model(tmp_path / "plain")), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    with running_server(plain) as url:
        files = {"images": (photos[0].name, photos[0].read_bytes())}
        assert (
            httpx.post(url + "/gallery/subjects/powell/faces", files=files, data={"detect": "true"}).status_code == 201
        )
    # The same student weights, now with a routing in the card (its hash and so the gallery's model id
    # are unchanged): large faces could go to the teacher, but the teacher's index is still empty.
    routed = {**plain, "LRFACE_MODEL": str(_routed_model(tmp_path / "plain"))}
    probe = {"image": (photos[1].name, photos[1].read_bytes())}
    with running_server(routed) as url:
        assert httpx.get(url + "/readyz").json()["teacher_faces"] == 0
        found = httpx.post(url + "/identify", files=probe, data={"detect": "true"}).json()
        assert found["embedder"] == "student"  # not an empty teacher index
    reembed = subprocess.run(
        [sys.executable, "-m", "lrface_cli", "gallery", "reembed"],
        env={**os.environ, **routed}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert reembed.returncode == 0, reembed.stderr
    with running_server(routed) as url:
        assert httpx.get(url + "/readyz").json()["teacher_faces"] == 1
        found = httpx.post(url + "/identify", files=probe, data={"detect": "true"}).json()
        assert found["embedder"] == "teacher" and found["decision"] == "powell"


def test_detected_faces_switch_at_the_cards_detected_size() -> None:
    import numpy as np

    from lrface.embedder import FaceInput
    from lrface.model_card import Routing
    from service.embedders import Embedders
    from service.faces import DecodedFace

    face = FaceInput(np.zeros((8, 8, 3), np.uint8), None)
    routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9, detected_min_face_px=16.5)
    embedders = Embedders(student=None, teacher=object(), routing=routing)  # type: ignore[arg-type]
    detected = [DecodedFace(face, "", (0.0, 0.0, 1.0, 1.0), face_px=px, input="detected") for px in (16.4, 16.5)]
    chips = [DecodedFace(face, "", None, face_px=px, input="chip") for px in (19.9, 20.0)]
    assert [embedders.space_for(f) for f in detected] == ["student", "teacher"]
    assert [embedders.space_for(f) for f in chips] == ["student", "teacher"]  # a chip's switch is the card's
    embedders.routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9)  # no detected switch
    assert [embedders.space_for(f) for f in detected] == ["student", "student"]


def test_without_a_teacher_no_face_reaches_it_and_the_description_names_the_detected_switch() -> None:
    import math
    from types import SimpleNamespace

    from lrface.embedder import FaceInput
    from service.embedders import Embedders
    from service.faces import DecodedFace

    face = DecodedFace(FaceInput(np.zeros((8, 8, 3), np.uint8), None), "", None, face_px=500.0, input="detected")
    routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9, detected_min_face_px=16.0)
    alone = Embedders(student=None, teacher=None, routing=routing)  # type: ignore[arg-type]
    assert alone.teacher_from(face) == math.inf and alone.space_for(face) == "student"
    student = SimpleNamespace(model_version="s:1", card=SimpleNamespace(gallery_from_teacher=None))
    teacher = SimpleNamespace(model_id="teacher-dlib:v")
    both = Embedders(student=student, teacher=teacher, routing=routing)  # type: ignore[arg-type]
    assert both.describe() == "student s:1 below 20 px; 16 px for detected faces; teacher teacher-dlib:v from there"


def test_the_teacher_runs_on_the_settings_providers_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import service.embedders as embedders_module
    from lrface.settings import Settings
    from service.embedders import Embedders

    opened: list[tuple[object, ...]] = []

    class FakeTeacher:
        version = "v"

        def __init__(self, *args: object) -> None:
            opened.append(args)

    routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9)
    student = SimpleNamespace(card=SimpleNamespace(routing=routing))
    monkeypatch.setattr(embedders_module, "DlibEmbedder", FakeTeacher)
    monkeypatch.setattr(embedders_module, "get_settings", lambda: Settings(providers="cpu", threads=3))
    assert Embedders.for_model(student).teacher is not None  # type: ignore[arg-type]
    assert opened[-1][1:] == ("cpu", 3)  # as LRFACE_PROVIDERS and LRFACE_THREADS say, like the student
    Embedders.for_model(student, providers="auto", threads=0)  # type: ignore[arg-type]
    assert opened[-1][1:] == ("auto", 0)


def test_the_detected_switch_is_the_cheaper_end_of_the_rank1_plateau() -> None:
    from service.detected_routing import choose_threshold

    candidates = [14.0, 15.0, 16.0, 17.0, 18.0]
    assert choose_threshold(candidates, [0.70, 0.701, 0.702, 0.699, 0.69], plateau=0.0025) == 16.0
    assert choose_threshold(candidates, [0.70, 0.701, 0.702, 0.699, 0.69], plateau=0.0) == 16.0
    assert choose_threshold(candidates, [0.5, 0.5, 0.5, 0.5, 0.5]) == 18.0  # flat: the teacher from the largest
    # fused below the switch, both models run there: the cheaper side of the plateau is the smallest
    assert choose_threshold(candidates, [0.69, 0.701, 0.702, 0.7015, 0.69], largest=False) == 15.0
    assert choose_threshold(candidates, [0.5, 0.5, 0.5, 0.5, 0.5], largest=False) == 14.0
