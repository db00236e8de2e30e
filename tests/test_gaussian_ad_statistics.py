"""Ledoit-Wolf, precision, Mahalanobis, PCA / NPCA and χ² thresholds against scikit-learn, scipy and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.covariance import LedoitWolf as SkLedoitWolf
from sklearn.decomposition import PCA

from gaussian_ad.models import BaselineLevel, GaussianAD, GaussianLevel
from gaussian_ad.scores import combine_levels, mahalanobis
from gaussian_ad.statistics import (
    chi2_threshold,
    fit_ledoit_wolf,
    fit_projection,
    identifiable_rank,
    principal_components,
    selected_components,
    shrunk_precision,
    sigma_probability,
)


def _correlated(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) / math.sqrt(d)
    return rng.standard_normal((n, d)) @ mixing * rng.uniform(0.2, 3.0, size=d) + rng.standard_normal(d)


@pytest.mark.parametrize(("n", "d"), [(30, 400), (120, 40), (50, 50), (60, 600), (10, 1)])
def test_ledoit_wolf_equals_sklearn(n: int, d: int) -> None:
    data = _correlated(n, d, seed=n + d)
    reference = SkLedoitWolf().fit(data)
    ours = fit_ledoit_wolf(torch.from_numpy(data))
    assert ours.precision.dtype == torch.float64
    np.testing.assert_allclose(float(ours.shrinkage), reference.shrinkage_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours.mean.numpy(), reference.location_, rtol=1e-6, atol=1e-9)
    scale = np.abs(reference.precision_).max()
    np.testing.assert_allclose(ours.precision.numpy() / scale, reference.precision_ / scale, atol=1e-6)


def test_float32_option_follows_sklearn_on_float32() -> None:
    data = _correlated(40, 100, seed=3).astype(np.float32)
    reference = SkLedoitWolf().fit(data)
    ours = fit_ledoit_wolf(torch.from_numpy(data), dtype=torch.float32)
    assert ours.precision.dtype == torch.float32
    scale = np.abs(reference.precision_).max()
    np.testing.assert_allclose(ours.precision.numpy() / scale, reference.precision_ / scale, atol=1e-4)


@pytest.mark.parametrize(("n", "d", "shrinkage"), [(20, 60, 0.3), (60, 20, 0.3), (20, 60, 1.0), (60, 20, 0.0)])
def test_precision_is_the_inverse_of_the_shrunk_covariance(n: int, d: int, shrinkage: float) -> None:
    centred = torch.from_numpy(_correlated(n, d, seed=7))
    centred = centred - centred.mean(dim=0)
    scale = centred.square().sum() / (n * d)
    covariance = (1 - shrinkage) * centred.T @ centred / n + shrinkage * scale * torch.eye(d, dtype=torch.float64)
    precision = shrunk_precision(centred, torch.tensor(shrinkage, dtype=torch.float64), scale)
    torch.testing.assert_close(precision @ covariance, torch.eye(d, dtype=torch.float64), atol=1e-8, rtol=0)


def test_rank_deficient_unshrunk_covariance_gets_the_pseudo_inverse() -> None:
    centred = torch.from_numpy(_correlated(5, 8, seed=1))
    centred = centred - centred.mean(dim=0)
    zero = torch.tensor(0.0, dtype=torch.float64)
    precision = shrunk_precision(centred, zero, centred.square().mean())
    torch.testing.assert_close(precision, torch.linalg.pinv(centred.T @ centred / 5, hermitian=True))


def test_mahalanobis_equals_scipy_and_is_not_squared() -> None:
    data = torch.from_numpy(_correlated(80, 12, seed=2))
    fit = fit_ledoit_wolf(data)
    tests = torch.from_numpy(_correlated(6, 12, seed=9))
    ours = mahalanobis(tests, fit.mean, fit.precision)
    expected = [scipy_mahalanobis(t, fit.mean.numpy(), fit.precision.numpy()) for t in tests.numpy()]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10)
    assert float(mahalanobis(fit.mean[None], fit.mean, fit.precision)) == 0.0


def test_fit_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_ledoit_wolf(torch.zeros(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="constant"):
        fit_ledoit_wolf(torch.ones(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(n_samples, n_features\)"):
        fit_ledoit_wolf(torch.zeros(5, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ PCA / NPCA
def test_pca_equals_sklearn() -> None:
    data = _correlated(30, 50, seed=4)
    mean, components, ratio = principal_components(torch.from_numpy(data))
    reference = PCA(n_components=None).fit(data)
    assert components.shape == (30, 50)
    np.testing.assert_allclose(ratio.numpy()[:29], reference.explained_variance_ratio_[:29], rtol=1e-8, atol=1e-14)
    signs = np.sign((components.numpy()[:29] * reference.components_[:29]).sum(axis=1))
    np.testing.assert_allclose(components.numpy()[:29] * signs[:, None], reference.components_[:29], atol=1e-8)
    np.testing.assert_allclose(mean.numpy(), reference.mean_)


def test_selection_rule_hand_cases() -> None:
    ratio = torch.tensor([0.6, 0.25, 0.1, 0.04, 0.01])  # cumulative .6 .85 .95 .99 1
    assert selected_components(ratio, 0.9, "pca") == slice(0, 3)  # up to and including the crossing component
    assert selected_components(ratio, 0.9, "npca") == slice(1, 5)  # from one before the crossing component
    assert selected_components(ratio, 0.97, "pca") == slice(0, 4)
    assert selected_components(ratio, 0.97, "npca") == slice(2, 5)
    assert selected_components(ratio, 0.5, "npca") == slice(0, 5)  # crossing at 0: everything (documented)
    with pytest.raises(ValueError, match="threshold"):
        selected_components(ratio, 1.0, "pca")
    with pytest.raises(ValueError, match="mode"):
        selected_components(ratio, 0.9, "ica")


def test_npca_level_equals_sklearn_pipeline() -> None:
    train, tests = _correlated(60, 20, seed=5), _correlated(7, 20, seed=6)
    level = GaussianLevel.fit(torch.from_numpy(train), "npca", 0.99)
    pca = PCA(n_components=None).fit(train)
    crossing = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) > 0.99))
    keep = pca.components_[crossing - 1 :]
    reduced_train, reduced_test = (train - pca.mean_) @ keep.T, (tests - pca.mean_) @ keep.T
    lw = SkLedoitWolf().fit(reduced_train)
    expected = [scipy_mahalanobis(t, lw.location_, lw.precision_) for t in reduced_test]
    assert level.dof == keep.shape[0]
    np.testing.assert_allclose(level(torch.from_numpy(tests)).numpy(), expected, rtol=1e-6)
    projection = fit_projection(torch.from_numpy(train), 0.95, "pca")
    assert projection.components.shape[0] == _crossing(pca, 0.95) + 1


def _crossing(pca: PCA, threshold: float) -> int:
    return int(np.argmax(np.cumsum(pca.explained_variance_ratio_) > threshold))


@pytest.mark.parametrize(("n", "d", "threshold"), [(20, 60, 0.99), (12, 200, 0.9), (30, 31, 0.999)])
def test_npca_with_fewer_samples_than_dimensions_equals_eigh_on_the_identifiable_part(
    n: int, d: int, threshold: float
) -> None:
    """n ≤ d: the NPCA tail runs to the last component with variance (rank n − 1); the null space is not kept."""
    train, tests = _correlated(n, d, seed=n * d), _correlated(5, d, seed=1)
    values, vectors = np.linalg.eigh(np.cov(train, rowvar=False, bias=True))
    values, vectors = values[::-1], vectors[:, ::-1]
    assert values[n - 2] > 1e-6 * values[0] and abs(values[n - 1]) < 1e-12 * values[0]  # rank n − 1
    crossing = int(np.argmax(np.cumsum(values[: n - 1]) / values.sum() > threshold))
    keep = vectors[:, crossing - 1 : n - 1].T
    mean = train.mean(axis=0)
    lw = SkLedoitWolf().fit((train - mean) @ keep.T)
    expected = [scipy_mahalanobis(t, lw.location_, lw.precision_) for t in (tests - mean) @ keep.T]
    level = GaussianLevel.fit(torch.from_numpy(train), "npca", threshold)
    assert level.dof == keep.shape[0]
    np.testing.assert_allclose(level(torch.from_numpy(tests)).numpy(), expected, rtol=1e-6)
    components = level.projection_components.numpy()
    np.testing.assert_allclose(components.T @ components, keep.T @ keep, atol=1e-8)  # the same subspace


def test_npca_with_fewer_samples_than_dimensions_is_deterministic() -> None:
    """float32 and float64 fits and a permutation of the training rows give the same NPCA model (n = 20 < d = 60)."""
    train, tests = torch.from_numpy(_correlated(20, 60, seed=12)), torch.from_numpy(_correlated(8, 60, seed=13))
    reference = GaussianLevel.fit(train, "npca", 0.99)
    permuted = GaussianLevel.fit(train[torch.randperm(20, generator=torch.Generator().manual_seed(0))], "npca", 0.99)
    single = GaussianLevel.fit(train.float(), "npca", 0.99, dtype=torch.float32)
    assert reference.dof == permuted.dof == single.dof
    torch.testing.assert_close(permuted(tests), reference(tests), rtol=1e-9, atol=0)
    torch.testing.assert_close(single(tests.float()).double(), reference(tests), rtol=1e-3, atol=0)


def test_identifiable_rank_stops_at_the_null_space() -> None:
    rng = np.random.default_rng(14)
    wide = torch.from_numpy(rng.standard_normal((10, 30)))
    tall = torch.from_numpy(np.hstack([rng.standard_normal((50, 17)), np.full((50, 3), 2.5)]))  # 3 constant features
    for data, rank in ((wide, 9), (tall, 17)):
        for dtype in (torch.float64, torch.float32):
            _, _, ratio = principal_components(data.to(dtype))
            assert identifiable_rank(ratio, *data.shape) == rank
    tail = fit_projection(tall, 0.5, "npca").components  # the tail ends before the constant features' axes
    assert tail.shape[0] > 1 and float(tail[:, 17:].abs().max()) < 1e-12
    with pytest.raises(ValueError, match="constant"):
        fit_projection(torch.ones(6, 4, dtype=torch.float64), 0.9, "npca")


# ------------------------------------------------------------------------------------------------ models, scores
def test_baselines_hand_computed() -> None:
    train = torch.tensor([[0.0, 0.0], [2.0, 4.0]], dtype=torch.float64)
    l2, sed = BaselineLevel.fit(train, "l2"), BaselineLevel.fit(train, "sed")
    x = torch.tensor([[1.0, 2.0 + math.sqrt(8.0)]], dtype=torch.float64)  # mean (1, 2); std (√2, √8)
    assert float(l2(x)) == pytest.approx(2.0)  # sqrt((0² + 8) / 2)
    assert float(sed(x)) == pytest.approx(math.sqrt(0.5))  # sqrt((0 + 1) / 2)


def test_combined_score_is_mean_of_non_squared_level_distances_and_higher_is_anomalous() -> None:
    rng = np.random.default_rng(8)
    levels = [torch.from_numpy(rng.standard_normal((50, d))) for d in (3, 6)]
    model = GaussianAD([GaussianLevel.fit(f) for f in levels])
    probe = [torch.cat([f.mean(dim=0, keepdim=True), f.mean(dim=0, keepdim=True) + 10]) for f in levels]
    distances = model(probe)
    torch.testing.assert_close(model.score(probe), distances.mean(dim=0))
    assert model.score(probe)[1] > model.score(probe)[0]  # far from the normal data = more anomalous
    torch.testing.assert_close(combine_levels(torch.tensor([[1.0, 4.0], [3.0, 0.0]])), torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError, match="expected 2 levels"):
        model(probe[:1])
    with pytest.raises(ValueError, match="threshold"):
        GaussianLevel.fit(levels[0], "pca")


def test_buffers_round_trip_through_state_dict() -> None:
    features = torch.from_numpy(_correlated(40, 10, seed=11))
    level = GaussianLevel.fit(features, "pca", 0.9)
    assert set(level.state_dict()) == {"mean", "precision", "projection_mean", "projection_components"}
    assert all(not p.requires_grad for p in level.buffers()) and not list(level.parameters())


# ------------------------------------------------------------------------------------------------ χ² thresholds
def test_chi2_thresholds_hand_cases() -> None:
    for n_sigma in (1, 2, 3, 5, 8):
        assert chi2_threshold(n_sigma, 1) == pytest.approx(n_sigma, rel=1e-9)  # M = |z| for k = 1
        tail = 1 - sigma_probability(n_sigma) if n_sigma < 6 else math.erfc(n_sigma / math.sqrt(2))
        assert chi2_threshold(n_sigma, 2) == pytest.approx(math.sqrt(-2 * math.log(tail)), rel=1e-7)  # χ²₂ = Exp(½)
    assert sigma_probability(3) == pytest.approx(0.9973002, abs=1e-7)
    with pytest.raises(ValueError, match="dof"):
        chi2_threshold(1, 0)


def test_gaussian_data_meets_the_nominal_false_positive_rate() -> None:
    generator = torch.Generator().manual_seed(0)
    dim = 5
    train = torch.randn(4000, dim, generator=generator, dtype=torch.float64)
    test = torch.randn(20000, dim, generator=generator, dtype=torch.float64)
    level = GaussianLevel.fit(train)
    for n_sigma in (1, 2):
        fpr = float((level(test) > chi2_threshold(n_sigma, dim)).double().mean())
        assert fpr == pytest.approx(1 - sigma_probability(n_sigma), abs=0.015)
