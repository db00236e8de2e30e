"""InvGlow losses and scores: hand-computed values, sign conventions, non-finite handling, PNG complexity."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invglow.losses import bits_per_dim, margin_loss, nll_nats, outlier_loss, wrong_class_loss
from invglow.scores import (
    NON_FINITE_SCORE,
    anomaly_scores,
    auroc_percent,
    evaluate_sets,
    png_bits_per_dim,
    serra_scores,
)


def test_nll_and_bits_per_dim_by_hand() -> None:
    lp = torch.tensor([0.0, -3072 * math.log(2)])
    assert torch.allclose(
        nll_nats(lp, 3072), torch.tensor([3072 * math.log(256), 3072 * math.log(256) + 3072 * 0.6931471805599453])
    )
    assert torch.allclose(bits_per_dim(lp, 3072), torch.tensor([8.0, 9.0]))


def test_outlier_loss_is_weighted_bce_with_target_zero_and_base_detached() -> None:
    fine = torch.tensor([-7000.0, -7500.0, -6400.0], requires_grad=True)
    base = torch.tensor([-7200.0, -7100.0, -6500.0], requires_grad=True)
    loss = outlier_loss(fine, base, weight=6000.0, temperature=1000.0)
    logits = (fine.detach() - base.detach()) / 1000.0
    expected = 6000.0 * F.binary_cross_entropy_with_logits(logits, torch.zeros(3))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert base.grad is None
    assert (fine.grad > 0).all()  # raising the finetuned likelihood of outliers raises the loss


def test_margin_loss_by_hand() -> None:
    nll_in = torch.tensor([10.0, 20.0, 30.0])
    nll_out = torch.tensor([15.0, 40.0])
    # pairs (10, 15): relu(8 + 10 − 15) = 3; (20, 40): relu(8 + 20 − 40) = 0
    assert margin_loss(nll_in, nll_out, margin=8.0).item() == pytest.approx(1.5)


def test_score_signs_higher_means_more_anomalous() -> None:
    """Pins every negation relative to the paper's log-likelihood ranking (regression guard, pytorch-ood #143)."""
    fine_in = torch.tensor([[-100.0, -50.0, -10.0], [-90.0, -60.0, -12.0]])
    fine_out = torch.tensor([[-100.0, -50.0, -30.0], [-80.0, -70.0, -40.0]])
    base_in = fine_in - 5.0  # finetuned model likes in-distribution images more than Tiny does
    base_out = fine_out + 5.0  # ... and outliers less
    ratio_in = anomaly_scores("ratio", fine_in, base_in).values
    ratio_out = anomaly_scores("ratio", fine_out, base_out).values
    assert np.allclose(ratio_in, [-15.0, -15.0]) and np.allclose(ratio_out, [15.0, 15.0])  # 5 nats × 3 scales
    assert auroc_percent(ratio_in, {"out": ratio_out}) == {"out": 100.0}
    assert np.allclose(anomaly_scores("raw", fine_in).values, [160.0, 162.0])
    final_in, final_out = (anomaly_scores("final_scale", lp).values for lp in (fine_in, fine_out))
    assert np.allclose(final_in, [10.0, 12.0])
    assert auroc_percent(final_in, {"out": final_out}) == {"out": 100.0}


def test_non_finite_likelihoods_are_counted_warned_and_most_anomalous() -> None:
    fine = torch.tensor([[-1.0, -1.0], [float("nan"), -1.0], [float("-inf"), 0.0]])
    with pytest.warns(UserWarning, match="2 of 3 likelihoods are not finite"):
        scores = anomaly_scores("raw", fine)
    assert scores.non_finite == 2
    assert scores.values[1] == scores.values[2] == NON_FINITE_SCORE
    assert scores.values[0] == 2.0


def test_ratio_without_tiny_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Tiny"):
        anomaly_scores("ratio", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="kind"):
        anomaly_scores("bpd", torch.zeros(2, 3))  # type: ignore[arg-type]


def test_png_bits_per_dim_matches_direct_encoding_and_ranks_complexity() -> None:
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.integers(0, 256, (1, 3, 32, 32), dtype=np.uint8))
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    flat[:, 0] = 200
    bpd = png_bits_per_dim(torch.cat([noise, flat]))
    bgr = cv2.cvtColor(noise[0].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and bpd[0] == pytest.approx(8 * len(png) / 3072)
    decoded = cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, noise[0].permute(1, 2, 0).numpy())  # colours stored correctly
    assert bpd[0] > 8.0 > 1.0 > bpd[1]
    swapped = png_bits_per_dim(noise, as_original=True)
    assert swapped[0] == pytest.approx(png_bits_per_dim(noise.flip(1))[0])  # original: RGB passed as BGR
    grey = png_bits_per_dim(noise[:, :1])
    assert grey.shape == (1,) and grey[0] > 8.0


def test_png_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        png_bits_per_dim(torch.zeros(1, 3, 8, 8))


def test_serra_score_is_glow_bpd_minus_png_bpd() -> None:
    images = torch.full((2, 3, 8, 8), 128, dtype=torch.uint8)
    fine = torch.tensor([[0.0, 0.0], [-192 * math.log(2), 0.0]])  # 8 and 9 bits/dim
    scores = serra_scores(fine, images)
    assert np.allclose(scores.values, np.array([8.0, 9.0]) - png_bits_per_dim(images))


def test_wrong_class_loss_by_hand() -> None:
    class_lp = torch.tensor([[-10.0, -20.0], [-30.0, -5.0]])
    base = torch.tensor([-15.0, -10.0])
    loss = wrong_class_loss(class_lp, base, torch.tensor([0, 1]), weight=2.0, temperature=5.0)
    # wrong entries: sample 0 class 1: (−20 + 15)/5 = −1; sample 1 class 0: (−30 + 10)/5 = −4; mean over 4 entries
    expected = 2.0 * (F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(-4.0))) / 4
    assert loss.item() == pytest.approx(expected.item())


def test_ratio_and_no_final_scale_for_single_column_models() -> None:
    fine = torch.tensor([[-10.0], [-20.0], [-30.0], [-40.0]])
    base = torch.full((4, 3), -5.0)
    results = evaluate_sets(fine, base, torch.tensor([0, 0, 1, 1]), ("in", "out"), n_dims=4)
    assert results["AUROC-ratio/out"] == 100.0
    assert "AUROC-final_scale/out" not in results
