"""MCHAD, Center, CAC and II losses against hand-computed values and direct (loop) computations, gradients too."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mchad.losses import (
    CACLoss,
    IILoss,
    MCHADLoss,
    SoftmaxLoss,
    batch_class_means,
    cac_distances,
    center_term,
    nll_term,
    outlier_term,
)
from mchad.models import squared_distances

# Two classes; rows 0-1 in-distribution (classes 0 and 1), rows 2-3 outliers. B = 4, C = 2.
DISTANCES = torch.tensor([[1.0, 4.0], [9.0, 0.25], [0.5, 2.0], [0.04, 3.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, -1, -1])
CE_ROWS = math.log1p(math.exp(1.0 - 4.0)) + math.log1p(math.exp(0.25 - 9.0))  # log(1 + Σ_{j≠y} e^{D_y − D_j})


@pytest.mark.parametrize(
    ("normalization", "center", "nll", "outlier"),
    [
        # center: (1 + 0.25) / (B·C = 8); nll: ÷ B = 4; outlier: Σ relu(1 − D²) = (1 − 0.25) + (1 − 0.0016)
        ("original", 1.25 / 8, CE_ROWS / 4, 0.75 + 0.9984),
        # center: ÷ B_in = 2; nll: ÷ B_in = 2; outlier: mean over the 2 outliers of Σ_j relu(1 − D) = (0.5 + 0.96) / 2
        ("paper", 1.25 / 2, CE_ROWS / 2, (0.5 + 0.96) / 2),
    ],
)
def test_mchad_terms_match_hand_computed_values(normalization: str, center: float, nll: float, outlier: float) -> None:
    loss = MCHADLoss(weight_center=0.5, weight_nll=1.5, weight_outlier=2.0, margin=1.0, normalization=normalization)
    total, terms = loss(DISTANCES, LABELS)
    assert terms["center"].item() == pytest.approx(center, rel=1e-12)
    assert terms["nll"].item() == pytest.approx(nll, rel=1e-12)
    assert terms["outlier"].item() == pytest.approx(outlier, rel=1e-12)
    assert total.item() == pytest.approx(0.5 * center + 1.5 * nll + 2.0 * outlier, rel=1e-12)


def test_without_outliers_both_normalizations_agree_and_outlier_term_is_zero() -> None:
    distances, labels = DISTANCES[:2], LABELS[:2]
    paper = MCHADLoss(normalization="paper", weight_outlier=1.0)(distances, labels).terms
    original = MCHADLoss(normalization="original", weight_outlier=1.0)(distances, labels).terms
    assert paper["nll"].item() == pytest.approx(original["nll"].item())
    assert paper["center"].item() == pytest.approx(2 * original["center"].item())  # only the ÷C differs
    assert paper["outlier"].item() == original["outlier"].item() == 0.0


def test_radius_is_subtracted_from_the_squared_distance() -> None:
    # max(0, D_y − r): row 0 has D_y = 1 → 0.5; row 1 has D_y = 0.25 → 0.
    assert center_term(DISTANCES, LABELS, radius=0.5, normalization="paper").item() == pytest.approx(0.25)


def test_nll_is_cross_entropy_over_negative_distances() -> None:
    expected = F.cross_entropy(-DISTANCES[:2], LABELS[:2])
    assert nll_term(-DISTANCES, LABELS, "paper").item() == pytest.approx(expected.item(), rel=1e-12)


def loop_mchad(
    z: torch.Tensor, mu: torch.Tensor, y: list[int], margin: float, weights: tuple[float, ...]
) -> torch.Tensor:
    """The original normalisation written with Python loops over samples and centers (independent oracle)."""
    b, c = len(y), mu.shape[0]
    center = nll = outlier = z.new_zeros(())
    for i in range(b):
        d = [((z[i] - mu[j]) ** 2).sum() for j in range(c)]
        if y[i] >= 0:
            center = center + d[y[i]]
            nll = nll + torch.log(sum(torch.exp(d[y[i]] - d[j]) for j in range(c)))
        else:
            outlier = outlier + sum(torch.clamp(margin**2 - d[j] ** 2, min=0) for j in range(c))
    return weights[0] * center / (b * c) + weights[1] * nll / b + weights[2] * outlier


def test_loss_and_gradients_match_a_loop_implementation() -> None:
    generator = torch.Generator().manual_seed(0)
    z = (0.5 * torch.randn(7, 3, generator=generator, dtype=torch.float64)).requires_grad_()
    mu = (0.5 * torch.randn(4, 3, generator=generator, dtype=torch.float64)).requires_grad_()
    y = [0, 3, 1, -1, 2, -1, -1]
    weights = (0.7, 1.5, 0.3)
    loss = MCHADLoss(*weights, margin=1.5, normalization="original")
    ours = loss(squared_distances(z, mu), torch.tensor(y)).total
    reference = loop_mchad(z, mu, y, 1.5, weights)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-10)
    assert reference.item() > 0 and loss(squared_distances(z, mu), torch.tensor(y)).terms["outlier"].item() > 0
    ours_grads = torch.autograd.grad(ours, (z, mu))
    reference_grads = torch.autograd.grad(reference, (z, mu))
    for mine, theirs in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("normalization", ["paper", "original"])
def test_mchad_gradcheck(normalization: str) -> None:
    generator = torch.Generator().manual_seed(1)
    distances = (torch.rand(6, 3, generator=generator, dtype=torch.float64) * 2).requires_grad_()
    labels = torch.tensor([0, 1, 2, -1, -1, 1])
    loss = MCHADLoss(0.5, 1.5, 0.1, margin=1.2, normalization=normalization)
    assert torch.autograd.gradcheck(lambda d: loss(d, labels).total, (distances,))


def test_outlier_term_is_quartic_in_the_original_code() -> None:
    # One outlier at Euclidean distance e from the single center: original = m² − e⁴, paper = m² − e².
    e, m = 0.8, 1.0
    distances, labels = torch.tensor([[e**2]]), torch.tensor([-1])
    assert outlier_term(distances, labels, m, "original").item() == pytest.approx(m**2 - e**4)
    assert outlier_term(distances, labels, m, "paper").item() == pytest.approx(m**2 - e**2)


@pytest.mark.parametrize(
    ("distances", "labels", "message"),
    [
        (torch.zeros(3, 2), torch.tensor([0, 2, 1]), r"labels must lie in \[0, 1\]"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), "expected 3 integer labels"),
        (torch.zeros(3, 2), torch.tensor([0.0, 1.0, 1.0]), "integer labels"),
        (torch.zeros(3), torch.tensor([0, 1, 1]), r"\(B, C\) matrix"),
    ],
)
def test_bad_labels_and_shapes_get_one_clear_error(distances: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MCHADLoss()(distances, labels)


def test_unknown_normalization_is_refused() -> None:
    with pytest.raises(ValueError, match="normalization"):
        MCHADLoss(normalization="batch")  # type: ignore[arg-type]


def test_center_baseline_uses_the_classifier_logits_for_the_nll() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    terms = MCHADLoss(weight_center=0.5, weight_nll=1.0)(DISTANCES[:2], LABELS[:2], logits=logits).terms
    assert terms["nll"].item() == pytest.approx(F.cross_entropy(logits, LABELS[:2]).item())


# CAC


def test_cac_distance_powers() -> None:
    squared = torch.tensor([[4.0, 0.0]], requires_grad=True)
    assert cac_distances(squared, 1).tolist() == [[2.0, 0.0]]
    assert cac_distances(squared, 2).tolist() == [[4.0, 0.0]]
    assert cac_distances(squared, 4).tolist() == [[16.0, 0.0]]
    cac_distances(squared, 1).sum().backward()
    assert torch.isfinite(squared.grad).all() and squared.grad.tolist() == [[0.25, 0.0]]  # d√s/ds = 1/(2√s)
    with pytest.raises(ValueError, match="power"):
        cac_distances(squared, 3)


@pytest.mark.parametrize(
    ("label", "index_bug", "tuplet"),
    [
        (0, False, math.log(1 + math.exp(1 - 2) + math.exp(1 - 3))),
        (0, True, math.log(1 + math.exp(0) + math.exp(1 - 2))),  # others = {0, 1}: true class in, class 2 out
        (1, True, math.log(1 + math.exp(2 - 1) + math.exp(0))),
        (2, False, math.log(1 + math.exp(3 - 1) + math.exp(3 - 2))),
        (2, True, math.log(1 + math.exp(3 - 1) + math.exp(3 - 2))),  # the last class is unaffected
    ],
)
def test_cac_tuplet_with_and_without_the_index_bug(label: int, index_bug: bool, tuplet: float) -> None:
    distances = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    loss = CACLoss(weight_anchor=0.5, index_bug=index_bug)
    total, terms = loss(distances, torch.tensor([label]))
    assert terms["tuplet"].item() == pytest.approx(tuplet, rel=1e-12)
    assert terms["anchor"].item() == label + 1.0
    assert total.item() == pytest.approx(tuplet + 0.5 * (label + 1.0), rel=1e-12)


def test_gcac_ignores_outliers_in_the_cac_terms_and_adds_the_outlier_term() -> None:
    loss = CACLoss(weight_anchor=2.0, weight_tuplet=1.5, weight_outlier=0.1, margin=1.0, normalization="original")
    total, terms = loss(DISTANCES, LABELS)
    cac_only = CACLoss(weight_anchor=2.0)(DISTANCES[:2], LABELS[:2]).total
    assert terms["outlier"].item() == pytest.approx(0.75 + 0.9984)
    assert total.item() == pytest.approx(1.5 * cac_only.item() + 0.1 * (0.75 + 0.9984), rel=1e-12)
    # without the bug the tuplet term is cross-entropy over −d
    assert terms["tuplet"].item() == pytest.approx(F.cross_entropy(-DISTANCES[:2], LABELS[:2]).item(), rel=1e-12)


# II loss


def test_ii_loss_hand_computed() -> None:
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 5.0], [9.0, 9.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, -1])
    # means (1, 0) and (0, 4): every ID point is at squared distance 1 from its mean; ||μ0 − μ1||² = 1 + 16
    total, terms = IILoss(n_classes=3, alpha=2.0)(z, labels)
    assert terms["intra_spread"].item() == pytest.approx(1.0)
    assert terms["inter_separation"].item() == pytest.approx(17.0)
    assert total.item() == pytest.approx(1.0 - 2.0 * 17.0)


def test_ii_separation_is_the_closest_pair_and_gradients_match_a_loop() -> None:
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(9, 2, generator=generator, dtype=torch.float64).requires_grad_()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, -1])
    ours = IILoss(n_classes=3, alpha=100.0)(z, labels).total
    means = [z[labels == k].mean(0) for k in range(3)]
    intra = sum(((z[i] - means[int(labels[i])]) ** 2).sum() for i in range(8)) / 8
    inter = min(((means[j] - means[k]) ** 2).sum() for j in range(3) for k in range(3) if j != k)
    reference = intra - 100.0 * inter
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, z)[0], torch.autograd.grad(reference, z)[0])


def test_batch_class_means_marks_absent_classes() -> None:
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    means, present = batch_class_means(z, torch.tensor([2, 2, -1]), 3)
    assert present.tolist() == [False, False, True]
    assert means.tolist() == [[0.0, 0.0], [0.0, 0.0], [2.0, 3.0]]


def test_softmax_loss_is_cross_entropy_over_known_rows() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    total, _ = SoftmaxLoss()(logits, torch.tensor([0, 1, -1]))
    assert total.item() == pytest.approx(F.cross_entropy(logits[:2], torch.tensor([0, 1])).item())
