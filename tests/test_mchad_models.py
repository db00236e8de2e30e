"""MCHAD networks, centers and scores: shapes, parameter counts, distances, running means, score signs."""

from __future__ import annotations

import pytest
import torch

from mchad.models import (
    CenterNet,
    ClassAnchors,
    ClassCenters,
    RunningCenters,
    SmallResNet,
    WideResNet,
    squared_distances,
)
from mchad.scores import energy, min_distance, msp, predict, score


def test_wrn_40_2_has_the_published_parameter_count() -> None:
    # WRN-40-2 with a 10-way head has 2,243,546 parameters (Zagoruyko & Komodakis' 2.2M).
    assert sum(p.numel() for p in WideResNet(10).parameters()) == 2_243_546


def test_wrn_emits_the_embedding_and_checks_its_arguments() -> None:
    model = WideResNet(16, depth=10, widen_factor=1, in_channels=1).eval()
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 16)
    assert model.features(torch.randn(2, 1, 32, 32)).shape == (2, 64)
    with pytest.raises(ValueError, match="depth must be 6n"):
        WideResNet(16, depth=12)


def test_wrn_dropout_only_in_training() -> None:
    model = WideResNet(4, depth=10, widen_factor=1, dropout=0.5, in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_small_resnet_keeps_the_first_blocks_fixed_dropout() -> None:
    model = SmallResNet(5, width=8, depth=3, dropout=0.0)
    assert model(torch.randn(2, 3, 12, 12)).shape == (2, 5)
    assert [block.dropout.p for block in model.blocks] == [0.3, 0.0, 0.0]


def test_squared_distances_match_brute_force_and_are_never_negative() -> None:
    generator = torch.Generator().manual_seed(0)
    z, mu = torch.randn(5, 3, generator=generator), torch.randn(4, 3, generator=generator)
    brute = torch.stack([torch.stack([((a - b) ** 2).sum() for b in mu]) for a in z])
    torch.testing.assert_close(squared_distances(z, mu), brute, rtol=1e-5, atol=1e-5)
    assert squared_distances(mu, mu).min() >= 0


def test_embedding_size_must_match_the_centers() -> None:
    with pytest.raises(ValueError, match=r"must agree in D: got embeddings \(2, 5\) and centers \(3, 4\)"):
        ClassCenters(3, 4)(torch.zeros(2, 5))


def test_center_kinds() -> None:
    torch.manual_seed(0)
    centers = ClassCenters(3, 4)
    assert centers.centers.requires_grad and centers.centers.shape == (3, 4)
    anchors = ClassAnchors(3, magnitude=2.0)
    assert "centers" in dict(anchors.named_buffers()) and not list(anchors.parameters())
    assert anchors(torch.tensor([[2.0, 0.0, 0.0]])).tolist() == [[0.0, 8.0, 8.0]]


def test_running_centers_follow_the_cumulative_batch_mean() -> None:
    running = RunningCenters(2, 1)
    running.update(torch.tensor([[2.0], [0.0]]), torch.tensor([True, False]))
    assert running.centers.tolist() == [[2.0], [0.0]] and running.batches_seen.item() == 1
    running.update(torch.tensor([[4.0], [6.0]]), torch.tensor([True, True]))
    # class 0: (4 + 1·2) / 2 = 3; class 1 (absent from batch 1, but the count is global): (6 + 1·0) / 2 = 3
    assert running.centers.tolist() == [[3.0], [3.0]]
    running.reset()
    assert running.centers.abs().sum() == 0 and running.batches_seen.item() == 0


def test_center_net_outputs() -> None:
    backbone = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        backbone.weight.copy_(torch.eye(2))
    anchors = ClassAnchors(2, magnitude=1.0)
    output = CenterNet(backbone, anchors)(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    assert output.distances.tolist() == [[0.0, 2.0], [10.0, 4.0]]
    assert torch.equal(output.logits, -output.distances)
    assert predict(output).tolist() == [0, 1]
    assert score(output).tolist() == [0.0, 4.0]
    softmax_model = CenterNet(backbone)(torch.tensor([[1.0, 0.0]]))
    assert softmax_model.distances is None and torch.equal(softmax_model.logits, softmax_model.embedding)
    with pytest.raises(ValueError, match="needs a model with class centers"):
        score(softmax_model, "distance")


def test_scores_are_higher_for_anomalies() -> None:
    # Regression pins for the negations (pytorch-ood #143): far from every center / flat softmax = anomalous.
    near, far = torch.tensor([[0.1, 5.0]]), torch.tensor([[4.0, 5.0]])
    assert min_distance(far) > min_distance(near)
    confident, flat = torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    assert msp(flat) > msp(confident)
    assert msp(flat).item() == pytest.approx(-0.5)
    weak, strong = torch.tensor([[0.0, 0.0]]), torch.tensor([[5.0, 5.0]])
    assert energy(weak) > energy(strong)
    assert energy(weak).item() == pytest.approx(-torch.log(torch.tensor(2.0)).item())
