"""The ``teacher-lr`` student: dlib's network rebuilt from the released teacher ONNX file (no dlib,
no ``.dat``: how a GPU machine builds it), which at initialisation *is* the teacher, reading the
same normalised LR input as any student; the training loop starts its output at the targets' centre."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrface.preprocessing import HR_CHIP_SIDE, normalise  # noqa: E402
from lrface.teacher import BUNDLED_TEACHER_DIR, TEACHER_FILE, DlibEmbedder  # noqa: E402
from training.teacher_export import DlibFormatError, DlibResNet, layers_from_onnx  # noqa: E402

TEACHER_ONNX = BUNDLED_TEACHER_DIR / TEACHER_FILE


def test_onnx_layers_rebuild_dlibs_network() -> None:
    pytest.importorskip("dlib")
    from lrface.alignment import _load_dlib
    from training.teacher_export import parse_dlib_resnet

    _, models = _load_dlib()
    from_dat = parse_dlib_resnet(Path(models.face_recognition_model_location()))
    from_onnx = layers_from_onnx(TEACHER_ONNX)
    assert [(a.kind, a.stride, a.padding, a.window) for a in from_dat] == [
        (b.kind, b.stride, b.padding, b.window) for b in from_onnx
    ]
    x = torch.rand(2, 3, HR_CHIP_SIDE, HR_CHIP_SIDE) * 255
    with torch.no_grad():
        assert torch.equal(DlibResNet(from_dat)(x), DlibResNet(from_onnx)(x))


def test_another_onnx_file_is_refused() -> None:
    with pytest.raises(DlibFormatError):
        layers_from_onnx(Path(__file__).parents[1] / "models" / "mtcnn" / "pnet.onnx")


def test_untrained_teacher_lr_is_the_teacher_on_its_own_input() -> None:
    """A 150-px chip through the student's normalised input gives the released teacher's embedding
    (the up-sampling inside is the identity at 150 px): the un-normalisation is right."""
    from training.models import get_model

    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, size=(4, 10, 10, 3))
    chips = np.stack([np.kron(c, np.ones((15, 15, 1))) for c in coarse]).astype(np.uint8)
    model = get_model("teacher-lr", 16, 128).eval()
    with torch.no_grad():
        got = model(torch.from_numpy(np.stack([normalise(c) for c in chips]))).numpy()
    want = DlibEmbedder().embed_chips(chips)
    assert np.abs(got - want).max() < 1e-4
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 5_000_000


def test_training_starts_the_output_at_the_targets_centre(tmp_path: Path) -> None:
    from training.config import TrainConfig
    from training.dataset import FaceArrays
    from training.loop import train

    rng = np.random.default_rng(1)
    n = 16
    emb = rng.normal(size=(n, 128)).astype(np.float32) + 3.0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    data = FaceArrays(
        chips=rng.integers(0, 255, size=(n, 64, 64, 3), dtype=np.uint8),
        labels=np.arange(n) % 4,
        emb=emb,
        emb_flip=emb,
    )
    config = TrainConfig(
        name="t",
        model="teacher-lr",
        epochs=1,
        batch_size=8,
        lr=0.0,
        optimizer="sgd",
        losses={"identity": 0.0, "instance": 1.0},
        augment_enabled=False,
        device="cpu",
    )
    train(config, tmp_path, data, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert np.allclose(state["model"]["centre"].numpy(), emb.mean(axis=0), atol=1e-6)


def test_release_keeps_the_teacher_gallery_only_where_it_identifies_better(tmp_path: Path) -> None:
    """``choose_gallery_from_teacher`` on validation-like data: faces of one person share a base image
    under heavy noise, so the student's own gallery (one noisy face a person) identifies moderately; a
    "teacher" gallery of each person's clean prototype in the student's space is kept, with a threshold
    from the pairs; one of random vectors is not."""
    from lrface.model_card import load_card
    from tests.model_fixtures import write_tiny_model
    from training.evaluate import student_embedder
    from training.release import choose_gallery_from_teacher
    from training.validation import ValData

    model = write_tiny_model(tmp_path / "m", dim=32)
    rng = np.random.default_rng(0)
    people, per = 12, 4
    labels = np.repeat(np.arange(people), per)
    base = rng.uniform(60, 200, size=(people, 64, 64, 3))
    chips = np.clip(base[labels] + rng.normal(0, 60, size=(len(labels), 64, 64, 3)), 0, 255).astype(np.uint8)
    pairs = np.asarray([[i, j] for i in range(len(labels)) for j in range(i + 1, len(labels))])
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    probes = student_embedder(model)(list(chips))
    prototypes = np.stack([probes[labels == p].mean(0) for p in range(people)])[labels]
    centre = [0.0] * 32
    choose_gallery_from_teacher(load_card(model), model, ValData(chips, pairs, same, labels, prototypes), centre)
    rule = load_card(model).gallery_from_teacher
    assert rule is not None and -1 < rule.threshold < 1
    assert rule.validation["rank1_16px_gallery_teacher"] > rule.validation["rank1_16px_gallery_student"]
    noise = rng.normal(size=(len(labels), 32)).astype(np.float32)
    card = load_card(model)
    card.gallery_from_teacher = None
    choose_gallery_from_teacher(card, model, ValData(chips, pairs, same, labels, noise), centre)
    assert load_card(model).gallery_from_teacher is None


RELEASE = Path(__file__).parents[1] / "models" / "lrface-student"


def test_a_run_continues_the_released_model_from_its_onnx_file(tmp_path: Path) -> None:
    """``init_from: models/lrface-student`` (no checkpoint of it anywhere): the training loop starts from
    the release's weights, so before any step the module embeds a face as the released file does."""
    from lrface.embedder import FaceInput, OnnxEmbedder
    from lrface.preprocessing import face_to_input
    from training.config import TrainConfig
    from training.dataset import FaceArrays
    from training.loop import train

    rng = np.random.default_rng(2)
    chip = np.kron(rng.uniform(0, 255, size=(8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    want = OnnxEmbedder(RELEASE, "cpu").embed([FaceInput(chip)])[0]
    n = 8
    emb = rng.normal(size=(n, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    data = FaceArrays(chips=rng.integers(0, 255, size=(n, 64, 64, 3), dtype=np.uint8), labels=np.arange(n) % 4,
                      emb=emb, emb_flip=emb)  # fmt: skip
    config = TrainConfig(name="t", model="teacher-lr", epochs=1, batch_size=8, lr=0.0, optimizer="sgd",
                         losses={"identity": 0.0, "instance": 1.0}, augment_enabled=False, device="cpu",
                         init_from=str(RELEASE), center_targets=False)  # fmt: skip
    train(config, tmp_path, data, progress=False)

    def embedding(checkpoint: Path | None) -> np.ndarray:
        from training.models import get_model

        model = get_model("teacher-lr", 16, 128).eval()
        if checkpoint is not None:
            model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
        with torch.no_grad():
            out = model(torch.from_numpy(face_to_input(chip, 16)[None])).numpy()[0]
        return out / np.linalg.norm(out)

    assert np.abs(embedding(tmp_path / "last.pt") - want).max() < 1e-3
    assert np.abs(embedding(None) - want).max() > 0.05  # the teacher's own weights: another network


def test_a_release_of_another_network_or_one_read_out_of_order_is_refused(tmp_path: Path) -> None:
    """The reader takes the unnamed constants in the order of their names; a graph whose names are out of
    its trace order (same network) would be mis-read: the check against ONNX Runtime refuses it."""
    import shutil

    import onnx

    from lrface.model_card import file_sha256, load_card
    from training.models import get_model
    from training.release_init import ReleaseInitError, state_from_release

    with pytest.raises(ReleaseInitError, match="not a ResFaceLR"):
        state_from_release(get_model("resface-s", 16, 128), RELEASE)
    renamed = tmp_path / "m"
    shutil.copytree(RELEASE, renamed)
    model = onnx.load(str(renamed / "model.onnx"))
    swap = {"view_2": "view_4", "view_4": "view_2"}  # two scales of the same shape, names swapped throughout
    for init in model.graph.initializer:
        init.name = swap.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [swap.get(name, name) for name in node.input]
    onnx.save(model, str(renamed / "model.onnx"))
    card = load_card(RELEASE)
    card.onnx_sha256 = file_sha256(renamed / "model.onnx")  # a release of that file
    card.save(renamed)
    with pytest.raises(ReleaseInitError, match="differs from it"):
        state_from_release(get_model("teacher-lr", 16, 128), renamed)
