"""Each loss against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from training.losses import (  # noqa: E402
    EmbeddingMatchLoss,
    LogitKDLoss,
    MarginSoftmax,
    PairwiseDistanceLoss,
    TripletAngleLoss,
)
from training.losses.angle import triplet_cosines  # noqa: E402
from training.losses.pairwise import normalised_distances  # noqa: E402

T = torch.tensor


def test_embedding_match_cosine_by_hand() -> None:
    loss = EmbeddingMatchLoss("cosine")
    assert loss(T([[1.0, 0.0]]), T([[0.0, 3.0]])).item() == pytest.approx(1.0)
    value = loss(T([[1.0, 0.0], [1.0, 1.0]]), T([[2.0, 0.0], [1.0, 0.0]])).item()
    assert value == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    assert EmbeddingMatchLoss("l2")(T([[1.0, 0.0]]), T([[0.0, 1.0]])).item() == pytest.approx(2.0)


def test_embedding_match_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="must be equal"):
        EmbeddingMatchLoss()(torch.zeros(2, 3), torch.zeros(2, 4))


def test_logit_kd_by_hand() -> None:
    # p_teacher = (0.75, 0.25), p_student = (0.5, 0.5): KL = .75 ln 1.5 + .25 ln .5
    value = LogitKDLoss(temperature=1.0)(T([[0.0, 0.0]]), T([[math.log(3.0), 0.0]])).item()
    assert value == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    # T^2 scaling: temperature 2 on logits doubled gives the same distributions, times 4.
    value2 = LogitKDLoss(temperature=2.0)(T([[0.0, 0.0]]), T([[2 * math.log(3.0), 0.0]])).item()
    assert value2 == pytest.approx(4 * value, abs=1e-6)


def test_pairwise_distances_by_hand() -> None:
    x = T([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    mean = (2 * math.sqrt(2) + 2) / 3
    d = normalised_distances(x)
    assert d[0, 1].item() == pytest.approx(math.sqrt(2) / mean, abs=1e-5)
    assert d[0, 2].item() == pytest.approx(2 / mean, abs=1e-5)
    assert d[1, 1].item() == 0.0


def test_pairwise_loss_by_hand_and_scale_free() -> None:
    student = T([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    teacher = T([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    mean = (2 * math.sqrt(2) + 2) / 3
    gap = (2 - math.sqrt(2)) / mean  # four off-diagonal entries differ by this, two agree
    expected = 4 * 0.5 * gap**2 / 6
    assert PairwiseDistanceLoss()(student, teacher).item() == pytest.approx(expected, abs=1e-5)
    assert PairwiseDistanceLoss()(student * 5.0, student).item() == pytest.approx(0.0, abs=1e-7)


def test_triplet_cosines_by_hand() -> None:
    x = T([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    c = triplet_cosines(x)
    assert c[0, 1, 2].item() == pytest.approx(1 / math.sqrt(2), abs=1e-5)  # angle at x0: 45 degrees
    assert c[1, 0, 2].item() == pytest.approx(0.0, abs=1e-6)  # angle at x1: Thales, 90 degrees
    assert c[2, 0, 1].item() == pytest.approx(1 / math.sqrt(2), abs=1e-5)


def test_triplet_angle_loss_zero_when_equal_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    loss = TripletAngleLoss()
    assert loss(a, a * 3).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(a, b).item() > 1e-3
    with pytest.raises(ValueError, match="N >= 3"):
        loss(a[:2], b[:2])


def test_margin_softmax_by_hand() -> None:
    head = MarginSoftmax(2, 2, scale=1.0, arc_margin=0.0)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    a = 0.3  # the embedding sits at angle a from class 0, pi/2 - a from class 1
    emb, label = T([[2 * math.cos(a), 2 * math.sin(a)]]), torch.tensor([0])

    def ce(target: float, other: float) -> float:
        return math.log(1 + math.exp(other - target))

    assert head(emb, label).item() == pytest.approx(ce(math.cos(a), math.sin(a)), abs=1e-5)
    head.arc_margin = 0.5  # ArcFace: cos(theta + m)
    assert head(emb, label).item() == pytest.approx(ce(math.cos(a + 0.5), math.sin(a)), abs=1e-5)
    head.arc_margin, head.cos_margin = 0.0, 0.25  # CosFace: cos(theta) - m
    assert head(emb, label).item() == pytest.approx(ce(math.cos(a) - 0.25, math.sin(a)), abs=1e-5)


def test_losses_have_gradients() -> None:
    student = torch.randn(6, 8, requires_grad=True)
    teacher = torch.randn(6, 8)
    total = EmbeddingMatchLoss()(student, teacher) + PairwiseDistanceLoss()(student, teacher)
    total = total + TripletAngleLoss()(student, teacher)
    total.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
