"""The teacher in ONNX Runtime (models/teacher-dlib) against dlib's own network: the same descriptors
on real aligned faces, so galleries and teacher caches made with dlib stay valid; the export
reproduces the released file; a missing or altered file is refused, and the service then serves
every face with the student."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from lrface.teacher import BUNDLED_TEACHER_DIR, TEACHER_FILE, DlibEmbedder, TeacherUnavailable

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    from training.teacher_export import sample_chips

    return sample_chips(12)


def test_onnx_teacher_gives_dlibs_descriptors(chips: np.ndarray) -> None:
    from training.teacher_export import dlib_descriptors

    want = dlib_descriptors(chips)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = DlibEmbedder().embed_chips(chips)
    assert got.shape == (len(chips), 128)
    assert np.abs(got - want).max() < 1e-4
    # and the faces stay apart as dlib keeps them: every chip is nearest to itself
    assert (np.argmax(got @ want.T, axis=1) == np.arange(len(chips))).all()


def test_batches_give_the_single_chip_answer(chips: np.ndarray) -> None:
    teacher = DlibEmbedder()
    teacher.batch = 5
    together = teacher.embed_chips(chips)
    one_by_one = np.concatenate([teacher.embed_chips(chips[i : i + 1]) for i in range(len(chips))])
    assert np.abs(together - one_by_one).max() < 1e-5


def test_export_reproduces_the_released_network(tmp_path: Path, chips: np.ndarray) -> None:
    pytest.importorskip("torch")
    from training.teacher_export import PARITY_TOLERANCE, export_teacher

    card = export_teacher(tmp_path / "teacher")
    assert float(str(card["onnx_dlib_max_abs_diff"])) <= PARITY_TOLERANCE
    fresh = DlibEmbedder(tmp_path / "teacher").embed_chips(chips)
    released = DlibEmbedder().embed_chips(chips)
    assert np.abs(fresh - released).max() < 1e-5
    released_card = json.loads((BUNDLED_TEACHER_DIR / "card.json").read_text())
    assert released_card["version"] == card["version"] and released_card["source"] == card["source"]


def test_wrong_chip_size_is_refused() -> None:
    with pytest.raises(ValueError, match="150x150"):
        DlibEmbedder().embed_chips(np.zeros((1, 112, 112, 3), np.uint8))


def test_missing_or_altered_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TeacherUnavailable, match="missing"):
        DlibEmbedder(tmp_path)
    altered = tmp_path / "altered"
    shutil.copytree(BUNDLED_TEACHER_DIR, altered)
    with (altered / TEACHER_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TeacherUnavailable, match="SHA-256"):
        DlibEmbedder(altered)


def test_service_without_the_teacher_network_serves_every_face_with_the_student(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lrface.embedder import OnnxEmbedder
    from lrface.settings import get_settings
    from service.embedders import Embedders

    student = OnnxEmbedder(get_settings().model, "cpu", 1)
    assert student.card.routing is not None  # the released card routes large faces to the teacher
    with caplog.at_level(logging.WARNING, logger="lrface.embedders"):
        embedders = Embedders.for_model(student, teacher_dir=tmp_path)
    assert embedders.teacher is None and "teacher model missing" in caplog.text
    assert Embedders.for_model(student).teacher is not None
