"""MCHAD configs resolved as the original code ran them: G-CAC's anchor weight α."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mchad.config import PAPER_METHODS, MethodConfig
from mchad.engine import build_objective
from mchad.models import CenterOutput

# kkirchheim/mchad configs/experiment/{cifar10,cifar100}-gcac.yaml set weight_center: 2.0 (released GCAC: α = it).
GCAC_WEIGHT_CENTER = {"CIFAR10": 2.0, "CIFAR100": 2.0}


def gcac(dataset: str) -> MethodConfig:
    return next(method for method in PAPER_METHODS[dataset] if method.name == "G-CAC")


@pytest.mark.parametrize("dataset", sorted(GCAC_WEIGHT_CENTER))
def test_paper_gcac_alpha_is_weight_center(dataset: str) -> None:
    method = gcac(dataset)
    assert method.weight_center == GCAC_WEIGHT_CENTER[dataset]
    assert method.anchor_weight == method.weight_center
    assert dataclasses.replace(method, cac_alpha="one").anchor_weight == 1.0


@pytest.mark.parametrize(
    ("dataset", "cac_alpha", "alpha"),
    [("CIFAR10", "weight_center", 2.0), ("CIFAR100", "weight_center", 2.0), ("CIFAR10", "one", 1.0)],
)
def test_gcac_objective_uses_the_resolved_alpha(dataset: str, cac_alpha: str, alpha: float) -> None:
    method = dataclasses.replace(gcac(dataset), cac_alpha=cac_alpha)
    # One ID row (class 0) and one outlier, three classes; squared distances D, CAC distances d = D² (power 4).
    squared = torch.tensor([[1.0, 2.0, 3.0], [0.5, 2.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, -1])
    output = CenterOutput(torch.zeros(2, 3, dtype=torch.float64), squared, -squared)
    total, terms = build_objective(method, n_classes=3)(None, output, labels)
    # ID row: d = (1, 4, 9); anchor d_y = 1; tuplet with the index bug sums over classes 0, 1: log(1 + e^0 + e^{1−4}).
    tuplet, anchor = math.log(2 + math.exp(-3)), 1.0
    # outlier row: d = (0.25, 4, 9); original reduction Σ_j max(0, m² − d_j²).
    outlier = sum(max(0.0, method.margin**2 - d**2) for d in (0.25, 4.0, 9.0))
    assert terms["tuplet"].item() == pytest.approx(tuplet, rel=1e-12)
    assert terms["anchor"].item() == anchor
    expected = method.weight_nll * (tuplet + alpha * anchor) + method.weight_outlier * outlier
    assert total.item() == pytest.approx(expected, rel=1e-12)


def test_unknown_cac_alpha_is_refused() -> None:
    with pytest.raises(ValueError, match="cac_alpha"):
        _ = dataclasses.replace(gcac("CIFAR10"), cac_alpha="two").anchor_weight  # type: ignore[arg-type]
