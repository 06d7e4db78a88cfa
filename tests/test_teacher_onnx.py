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


def test_wrong_chip_size_or_type_is_refused() -> None:
    with pytest.raises(ValueError, match="150x150"):
        DlibEmbedder().embed_chips(np.zeros((1, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):  # a 0-1 float chip would be a black face to the network
        DlibEmbedder().embed_chips(np.full((1, 150, 150, 3), 0.5, np.float32))


def test_missing_or_altered_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TeacherUnavailable, match="missing"):
        DlibEmbedder(tmp_path)
    altered = tmp_path / "altered"
    shutil.copytree(BUNDLED_TEACHER_DIR, altered)
    with (altered / TEACHER_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TeacherUnavailable, match="SHA-256"):
        DlibEmbedder(altered)
    unchecked = tmp_path / "unchecked"
    shutil.copytree(BUNDLED_TEACHER_DIR, unchecked)
    card = json.loads((unchecked / "card.json").read_text())
    del card["sha256"]
    (unchecked / "card.json").write_text(json.dumps(card))
    with pytest.raises(TeacherUnavailable, match="no SHA-256"):  # a card that cannot vouch for the file
        DlibEmbedder(unchecked)


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


def _int(value: int) -> bytes:
    """An integer as dlib serialises it: a byte count (high bit: negative), then little-endian bytes."""
    raw = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(raw) | (0x80 if value < 0 else 0)]) + raw


def _name(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def _tensor(shape: tuple[int, int, int, int], data: bytes) -> bytes:
    return _int(2) + b"".join(_int(n) for n in shape) + data


def _tiny_network(con_data: bytes | None = None) -> bytes:
    """dlib's layout for input -> one 1x1 convolution (2 filters on 3 channels) -> fc 2x2."""
    data = np.arange(8, dtype="<f4").tobytes() if con_data is None else con_data  # 6 weights + 2 biases
    con = _tensor((len(data) // 4, 1, 1, 1), data)
    return (
        _int(2) + _name("input_rgb_image_sized") + b"".join(_int(v) + _int(0) for v in (122, 117, 104))
        + _name("con_4") + con + b"".join(_int(v) for v in (2, 1, 1, 1, 1, 0, 0))
        + _name("fc_2") + _int(2) + _int(2) + _tensor((4, 1, 1, 1), np.ones(4, "<f4").tobytes())
    )  # fmt: skip


def test_parser_reads_dlibs_layout(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from training.teacher_export import parse_dlib_resnet

    path = tmp_path / "net.dat"
    path.write_bytes(_tiny_network())
    layers = parse_dlib_resnet(path)
    assert [layer.kind for layer in layers] == ["input_rgb_image_sized", "con_4", "fc_2"]
    assert layers[0].mean == (122.0, 117.0, 104.0)
    assert layers[1].weight is not None and layers[1].weight.shape == (2, 3, 1, 1)
    assert layers[1].bias is not None and list(layers[1].bias) == [6.0, 7.0]
    assert layers[2].weight is not None and layers[2].weight.shape == (2, 2)


def test_parser_skips_a_layer_name_inside_a_tensor(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from training.teacher_export import parse_dlib_resnet

    fake = _name("affine_") + _tensor((2, 1, 1, 1), b"")  # 13 bytes that read as a layer, in the weights
    path = tmp_path / "net.dat"
    path.write_bytes(_tiny_network(fake + bytes(32 - len(fake))))
    assert [layer.kind for layer in parse_dlib_resnet(path)] == ["input_rgb_image_sized", "con_4", "fc_2"]


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_parser_refuses_a_truncated_or_altered_file(tmp_path: Path, cut: float) -> None:
    pytest.importorskip("torch")
    from training.teacher_export import DlibFormatError, parse_dlib_resnet

    whole = _tiny_network()
    path = tmp_path / "net.dat"
    path.write_bytes(whole[: int(len(whole) * cut)])
    with pytest.raises(DlibFormatError):
        parse_dlib_resnet(path)
    # a convolution whose parameters do not fit its filters (7 floats for 2 filters on 3 channels + biases)
    path.write_bytes(_tiny_network(np.arange(7, dtype="<f4").tobytes()))
    with pytest.raises(DlibFormatError, match="parameters"):
        parse_dlib_resnet(path)
