"""Where /identify decides (``LRFACE_OPERATING_POINT``, a request's ``operating_point``): each kind of
face's best-accuracy threshold, or the one at which the card's validation measured an open-set FPIR of
10% or 1% (:func:`lrface.model_card.open_set_threshold`); a kind without that figure keeps its
best-accuracy threshold, and two faces compared with each other are never moved."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from lrface.alignment import aligner_available
from lrface.embedder import FaceInput
from lrface.model_card import (
    ChipFusion,
    DetectedFusion,
    DistantViews,
    GalleryFromTeacher,
    Routing,
    load_card,
    open_set_threshold,
)
from lrface.settings import BUNDLED_MODEL_DIR
from service.embedders import Embedders
from service.faces import DecodedFace
from tests.faces import lfw_faces
from tests.server import running_server


def _open_set(fpir_10: float, fpir_1: float) -> dict[str, object]:
    return {"open_set": {"fpir_10": {"threshold": fpir_10}, "fpir_1": {"threshold": fpir_1}}}


def test_each_kind_of_face_has_its_threshold_at_each_operating_point() -> None:
    views = DistantViews(weight=0.5, threshold=0.41, validation=_open_set(0.78, 0.84))
    space = GalleryFromTeacher(centre=[0.0] * 4, threshold=0.37, distant_views=views)
    chips = ChipFusion(from_face_px=18.0, student_weight=0.4, threshold=0.40, validation=_open_set(0.75, 0.82))
    detected = DetectedFusion(student_weight=0.4, threshold=0.38, validation={})  # no open-set figure
    routing = Routing(teacher_version="v", min_face_px=20, threshold=0.9, detected_min_face_px=28.0,
                      detected_fusion=detected, chip_min_face_px=30.0, chip_fusion=chips,
                      teacher_open_set={"fpir_10": {"threshold": 0.93}, "fpir_1": {"threshold": 0.95}})  # fmt: skip
    student = SimpleNamespace(model_version="s:1", card=SimpleNamespace(gallery_from_teacher=space, threshold=0.43))
    teacher = SimpleNamespace(model_id="t")
    embedders = Embedders(student=student, teacher=teacher, routing=routing)  # type: ignore[arg-type]
    face = FaceInput(np.zeros((8, 8, 3), np.uint8), None)
    small = DecodedFace(face, "", None, face_px=16.0, input="chip")
    middle = DecodedFace(face, "", None, face_px=20.0, input="chip")
    found = DecodedFace(face, "", (0, 0, 1, 1), face_px=20.0, input="detected")
    table = {
        point: [
            embedders.threshold_at("student", faces=[small], point=point),
            embedders.threshold_at("student", faces=[middle], point=point),
            embedders.threshold_at("student", faces=[found], point=point),
            embedders.threshold_at("teacher", point=point),
        ]
        for point in ("best_accuracy", "fpir_10", "fpir_1")
    }
    assert table == {
        "best_accuracy": [(0.41, "best_accuracy"), (0.40, "best_accuracy"), (0.38, "best_accuracy"),
                          (0.9, "best_accuracy")],
        # the detected fusion measured no open-set figure: its best-accuracy threshold, and it says so
        "fpir_10": [(0.78, "fpir_10"), (0.75, "fpir_10"), (0.38, "best_accuracy"), (0.93, "fpir_10")],
        "fpir_1": [(0.84, "fpir_1"), (0.82, "fpir_1"), (0.38, "best_accuracy"), (0.95, "fpir_1")],
    }  # fmt: skip
    assert embedders.threshold("student", faces=[middle]) == 0.40  # the plain threshold: best accuracy
    # a track of a fused chip and a fused detected face: the stricter of their thresholds at the point
    assert embedders.threshold_at("student", faces=[middle, found], point="fpir_10") == (0.75, "fpir_10")
    # two faces compared with each other (no gallery): the pair thresholds, whatever the point
    assert embedders.threshold_at("student", False, [middle], "fpir_1") == (0.43, "best_accuracy")
    assert embedders.threshold_at("teacher", False, [], "fpir_1") == (0.9, "best_accuracy")
    alone = Embedders(student=student)  # type: ignore[arg-type]  # no teacher: the student's own gallery
    assert alone.threshold_at("student", faces=[middle], point="fpir_1") == (0.43, "best_accuracy")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.skipif(
    not aligner_available() or load_card(BUNDLED_MODEL_DIR).gallery_from_teacher is None,
    reason="needs dlib and a released student in the teacher's space",
)
def test_identify_decides_at_the_requested_or_configured_operating_point(tmp_path: Path) -> None:
    card = load_card(BUNDLED_MODEL_DIR)
    assert card.routing is not None and card.routing.teacher_open_set, "calibrate the card's teacher_open_set"
    views = card.gallery_from_teacher.distant_views if card.gallery_from_teacher else None
    assert views is not None
    powell, another = lfw_faces("Colin_Powell", 2)
    small = np.asarray(Image.open(another).convert("RGB").crop((70, 70, 180, 180)).resize((16, 16), Image.BOX))
    env = {"LRFACE_GALLERY_DIR": str(tmp_path / "g")}  # LRFACE_OPERATING_POINT left at its default
    with running_server(env) as url, httpx.Client(base_url=url, timeout=120) as client:
        assert client.get("/readyz").json()["operating_point"] == "fpir_10"
        enrolled = client.post("/gallery/subjects/powell/faces", files={"images": (powell.name, powell.read_bytes())})
        assert enrolled.status_code == 201, enrolled.text

        def ask(data: dict[str, str], image: bytes, name: str = "p.png") -> dict[str, object]:
            response = client.post("/identify", files={"image": (name, image)}, data=data)
            assert response.status_code == 200, response.text
            return response.json()

        def at(rule_threshold: float, validation: dict[str, Any], point: str, entries: int) -> float:
            return open_set_threshold(rule_threshold, validation, point, entries)[0]

        chip = ask({}, _png(small))  # the service's default: LRFACE_OPERATING_POINT, for a gallery of one face
        assert chip["operating_point"] == "fpir_10" and chip["embedder"] == "student"
        assert chip["threshold"] == pytest.approx(at(views.threshold, views.validation, "fpir_10", 1))
        strict = ask({"operating_point": "fpir_1"}, _png(small))
        assert strict["threshold"] == pytest.approx(at(views.threshold, views.validation, "fpir_1", 1))
        assert strict["threshold"] > chip["threshold"]
        loose = ask({"operating_point": "best_accuracy"}, _png(small))
        assert loose["threshold"] == views.threshold <= chip["threshold"]  # a point is never looser
        photo = ask({"operating_point": "fpir_1"}, another.read_bytes(), another.name)  # an HR photo: the teacher
        assert photo["embedder"] == "teacher"
        teacher = {"open_set": card.routing.teacher_open_set}
        assert photo["threshold"] == pytest.approx(at(card.routing.threshold, teacher, "fpir_1", 1))
        # a larger gallery searched: a stricter threshold for the same FPIR
        other = lfw_faces("Tony_Blair", 1)[0]
        added = client.post("/gallery/subjects/blair/faces", files={"images": (other.name, other.read_bytes())})
        assert added.status_code == 201, added.text
        wider = ask({"operating_point": "fpir_1"}, _png(small))
        assert wider["threshold"] == pytest.approx(at(views.threshold, views.validation, "fpir_1", 2))
        assert views.validation["open_set"].get("per_comparison"), "calibrate the card's per-comparison thresholds"
        assert wider["threshold"] > strict["threshold"]
        assert strict["faces"][0]["operating_point"] == "fpir_1"
        as_json = client.post("/identify", json={"image": {"data": base64.b64encode(_png(small)).decode()},
                                                 "operating_point": "fpir_1"})  # fmt: skip
        want = at(views.threshold, views.validation, "fpir_1", 2)
        assert as_json.status_code == 200 and as_json.json()["threshold"] == pytest.approx(want), as_json.text
        bad_json = client.post("/identify", json={"image": {"data": "x"}, "operating_point": "1%"})
        assert bad_json.status_code == 422 and "operating_point" in bad_json.json()["detail"]
        given = ask({"operating_point": "fpir_1", "threshold": "0.5"}, _png(small))
        assert given["threshold"] == 0.5 and given["operating_point"] == "threshold"
        bad = client.post("/identify", files={"image": ("p.png", _png(small))}, data={"operating_point": "fpir_5"})
        assert bad.status_code == 422 and "operating_point" in bad.text


def test_an_fpir_is_scaled_to_the_size_of_the_gallery_searched() -> None:
    """From the calibration's per-comparison impostor thresholds: the rate 1 - (1 - FPIR) ** (1 / N) for a
    gallery of N entries, log-interpolated; past the table it runs on in log-size to the threshold
    measured at the calibration's size, and stays there; never looser than best accuracy."""
    table = [[0.01, 0.6], [0.1, 0.5], [0.0001, 0.8], [0.001, 0.7]]  # any order
    validation = {"open_set": {"gallery": 963, "fpir_10": {"threshold": 0.79}, "fpir_1": {"threshold": 0.85},
                               "per_comparison": {"comparisons": 10**6, "thresholds": table}}}  # fmt: skip
    sizes = (0, 1, 10, 100, 300, 962, 963, 10_000)
    ten = [open_set_threshold(0.4, validation, "fpir_10", n) for n in sizes]
    one = [open_set_threshold(0.4, validation, "fpir_1", n) for n in sizes]
    assert all(point == "fpir_10" for _, point in ten) and all(point == "fpir_1" for _, point in one)
    ten_at, one_at = (
        dict(zip(sizes, (t for t, _ in ten), strict=True)),
        dict(zip(sizes, (t for t, _ in one), strict=True)),
    )
    assert list(ten_at.values()) == sorted(ten_at.values()) and list(one_at.values()) == sorted(one_at.values())
    assert ten_at[0] == ten_at[1] == pytest.approx(0.5)  # an empty gallery is scaled as one face; the table's end
    assert 0.79 < ten_at[963] < 0.8 and one_at[963] == pytest.approx(0.85)  # stricter than measured; the table's end
    assert one_at[962] == pytest.approx(0.85, abs=1e-3) and one_at[10_000] == 0.85  # no jump; flat beyond
    assert one_at[100] == pytest.approx(0.8, abs=1e-3)  # the table's strictest rate reached at about 100 entries
    assert 0.8 < one_at[300] < 0.85  # between the table's end and the calibration's measured threshold
    # ten entries: the rate 1 - 0.9 ** (1 / 10), log-interpolated between the rates 0.1 and 0.01
    assert ten_at[10] == pytest.approx(0.5 + 0.1 * (-1 - np.log10(1 - 0.9**0.1)), abs=1e-9)
    assert open_set_threshold(0.4, validation, "fpir_10", None) == (0.79, "fpir_10")  # no size: as measured
    assert open_set_threshold(0.4, validation, "best_accuracy", 100) == (0.4, "best_accuracy")
    # never looser than the best-accuracy threshold (a gallery of one face at FPIR 10%: a rate of 10%)
    assert open_set_threshold(0.55, validation, "fpir_10", 1) == (0.55, "fpir_10")
