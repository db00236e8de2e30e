"""Fitting the per-level Gaussian: Ledoit-Wolf shrinkage, its precision, PCA / NPCA selection, χ² working points.

Rippel et al. (ICPR 2020), Sec. III: per feature level a multivariate Gaussian N(μ, Σ) is fitted to the pooled
features of the normal training images, Σ being the Ledoit-Wolf (2004) shrinkage estimate; Sec. IV-C reduces the
features with PCA ("keep the high-variance components") or NPCA ("keep the low-variance tail") first; Sec. IV-D
derives thresholds from M² ~ χ²_k. Everything here is float64 by default and exact (no ε added to Σ).

PCA / NPCA keep only identifiable components. n centred samples span at most n − 1 dimensions, so with n ≤ d the
covariance has a null space of dimension d − rank; scikit-learn's PCA (the original) still returns min(n, d)
components, the last of which are orthonormal vectors of that null space picked by round-off (float32 and float64,
or a permutation of the samples, pick different ones), and NPCA's low-variance tail always contained them.
:func:`fit_projection` drops every component without variance (:func:`identifiable_rank`): the null space is not
modelled, so the kept subspace, and with it the Ledoit-Wolf Mahalanobis distance (invariant to rotations within the
subspace), is a function of the training set alone.

Ledoit-Wolf with n samples of d features needs only the n × n Gram matrix G = X Xᵀ of the centred data X when
n < d (the usual case: ~170 images, up to 1792 dimensions): ‖XᵀX‖²_F = ‖G‖²_F, Σ_k ‖x_k‖⁴ = Σ_k G_kk², and
tr(XᵀX) = tr G. The precision Σ⁻¹ of Σ = a·I + b·XᵀX then follows from the push-through identity
Σ⁻¹ = a⁻¹ (I − Zᵀ Z) with Z = L⁻¹ X, L Lᵀ = (a/b)·I + G: one n × n Cholesky, an n²d triangular solve and one
n d² product, instead of a d³ eigendecomposition (scikit-learn's ``pinvh``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.special import erfc
from scipy.stats import chi2


class LedoitWolf(NamedTuple):
    """A Ledoit-Wolf fit (scikit-learn ``LedoitWolf`` semantics, ``assume_centered=False``).

    Attributes:
        mean: μ (d,).
        shrinkage: δ ∈ [0, 1], the weight of the scaled identity.
        scale: ν = tr(S) / d, S the 1/n empirical covariance.
        precision: Σ⁻¹ (d, d) of Σ = (1 − δ) S + δ ν I.
    """

    mean: torch.Tensor
    shrinkage: torch.Tensor
    scale: torch.Tensor
    precision: torch.Tensor


def _check_features(features: torch.Tensor, name: str = "features") -> None:
    if features.ndim != 2:
        raise ValueError(f"{name}: expected a (n_samples, n_features) matrix, got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"{name}: a covariance needs at least 2 samples, got {features.shape[0]}")
    if not features.is_floating_point() or not torch.isfinite(features).all():
        raise ValueError(f"{name}: expected finite floating-point values")


def _second_moments(centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tr XᵀX, ‖XᵀX‖²_F, Σ_k ‖x_k‖⁴) from the smaller of the Gram matrix X Xᵀ and the scatter matrix XᵀX."""
    n, d = centred.shape
    squared_norms = centred.square().sum(dim=1)
    product = centred @ centred.T if n <= d else centred.T @ centred
    return squared_norms.sum(), product.square().sum(), squared_norms.square().sum()


def ledoit_wolf_shrinkage(centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Ledoit-Wolf shrinkage δ and the target scale ν of centred data, in O(min(n, d)·n·d).

    Follows scikit-learn's ``ledoit_wolf_shrinkage`` exactly (including δ = 0 for one feature and for β = 0):
    with S = XᵀX/n, ν = tr S / d, δ̂² = ‖S − νI‖²_F / d, β̂² = min(δ̂², (Σ_k ‖x_k‖⁴/n − ‖S‖²_F)/(n d)),
    δ = β̂² / δ̂².

    Args:
        centred: X (n, d), each column of mean zero.

    Returns:
        (δ, ν) as 0-dim tensors of ``centred``'s dtype.
    """
    n, d = centred.shape
    trace, frobenius, fourth = _second_moments(centred)
    scale = trace / (n * d)
    if d == 1:
        return torch.zeros_like(scale), scale
    s_frobenius = frobenius / n**2
    delta = (s_frobenius - 2.0 * scale * trace / n + d * scale**2) / d
    beta = torch.minimum((fourth / n - s_frobenius) / (n * d), delta)
    shrinkage = torch.where(beta == 0, torch.zeros_like(beta), beta / torch.where(delta == 0, 1.0, delta))
    return shrinkage, scale


def shrunk_precision(centred: torch.Tensor, shrinkage: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Σ⁻¹ for Σ = (1 − δ) XᵀX/n + δ ν I, exactly, the fastest way for the shape of X.

    n < d and δν > 0: push-through identity (module docstring), O(n²d + n d²). Otherwise Σ is formed and inverted
    through its Cholesky factor; a singular Σ (δν = 0 with rank-deficient data) gets the pseudo-inverse, like
    scikit-learn's ``pinvh``.

    Args:
        centred: X (n, d).
        shrinkage: δ.
        scale: ν.

    Returns:
        (d, d) symmetric precision matrix.
    """
    n, d = centred.shape
    ridge = shrinkage * scale
    weight = (1.0 - shrinkage) / n
    eye = torch.eye(d, dtype=centred.dtype, device=centred.device)
    if ridge > 0 and weight == 0:  # δ = 1: Σ = νI
        return eye / ridge
    if ridge > 0 and n < d:
        inner = centred @ centred.T
        inner.diagonal().add_(ridge / weight)
        factor = torch.linalg.cholesky(inner)
        whitened = torch.linalg.solve_triangular(factor, centred, upper=False)
        return torch.addmm(eye, whitened.T, whitened, alpha=-1.0).div_(ridge)
    covariance = torch.addmm(ridge * eye, centred.T, centred, alpha=weight)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if info == 0:
        return torch.cholesky_inverse(factor)
    return torch.linalg.pinv(covariance, hermitian=True)


def fit_ledoit_wolf(features: torch.Tensor, dtype: torch.dtype = torch.float64) -> LedoitWolf:
    """Mean and Ledoit-Wolf precision of ``features`` (Rippel et al. Sec. III-B), equal to scikit-learn's.

    Args:
        features: (n, d) training features of one level, n ≥ 2.
        dtype: computation dtype; float64 (default) or float32 (what the original code's scikit-learn call got).

    Returns:
        The :class:`LedoitWolf` fit, in ``dtype``.
    """
    _check_features(features)
    values = features.to(dtype)
    mean = values.mean(dim=0)
    centred = values - mean
    shrinkage, scale = ledoit_wolf_shrinkage(centred)
    if scale <= 0:
        raise ValueError("features: every feature is constant over the samples; the covariance is zero")
    return LedoitWolf(mean, shrinkage, scale, shrunk_precision(centred, shrinkage, scale))


# ------------------------------------------------------------------------------------------------ PCA / NPCA
class Projection(NamedTuple):
    """An affine projection z = (x − mean) · componentsᵀ onto selected principal components.

    Attributes:
        mean: (d,) the PCA centre.
        components: (k, d) orthonormal rows, in decreasing variance order.
    """

    mean: torch.Tensor
    components: torch.Tensor

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Project (m, d) features to (m, k)."""
        return (features.to(self.mean.dtype) - self.mean) @ self.components.T


def principal_components(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full PCA as scikit-learn ``PCA(n_components=None)``: min(n, d) components by decreasing variance.

    Returns:
        (mean (d,), components (min(n, d), d), explained variance ratio (min(n, d),)).
    """
    _check_features(features)
    mean = features.mean(dim=0)
    centred = features - mean
    if centred.shape[0] < centred.shape[1]:  # LAPACK is ~10× faster on the tall transpose: Xᵀ = U S Vᵀ
        left, singular, _ = torch.linalg.svd(centred.T, full_matrices=False)
        right = left.T
    else:
        _, singular, right = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.square()
    return mean, right, variance / variance.sum()


RANK_TOLERANCE = float(np.finfo(np.float32).eps)
"""ε of :func:`identifiable_rank`: the precision of the stored (float32) features, whatever the computation dtype."""


def identifiable_rank(ratio: torch.Tensor, n_samples: int, n_features: int) -> int:
    """How many leading principal components have variance: r ≤ n − 1 with √(ratio_i / ratio_0) > max(n, d)·ε.

    The components from r on span (part of) the covariance's null space, where any orthonormal basis is as good as
    another (module docstring). n − 1 is the exact bound for centred data; the tolerance, numpy's ``matrix_rank``
    rule on singular values at float32 precision (:data:`RANK_TOLERANCE`), catches further rank deficiency (e.g.
    constant features) alike in a float32 and a float64 fit.

    Args:
        ratio: explained variance ratio per component (min(n, d),), decreasing.
        n_samples: n, the number of samples the components were fitted to.
        n_features: d.
    """
    floor = float(ratio[0]) * (max(n_samples, n_features) * RANK_TOLERANCE) ** 2
    rank = min(int((ratio > floor).sum()), n_samples - 1)
    if rank == 0:
        raise ValueError("features: every feature is constant over the samples; there is no principal component")
    return rank


def selected_components(ratio: torch.Tensor, threshold: float, mode: str) -> slice:
    """The component slice the paper's PCA / NPCA keeps (reference note §1.9).

    With c the cumulative explained-variance ratio and k the first index where c > ``threshold``: PCA keeps
    [0, k] (the high-variance components up to and including the crossing one); NPCA keeps [k − 1, end) (the
    low-variance tail, from one component *before* the crossing). Deviation: for k = 0 the original's slice
    ``[-1:]`` would keep only the last component; we keep all of them ([0, end)).

    Args:
        ratio: explained variance ratio per component, decreasing.
        threshold: t in (0, 1), e.g. 0.95 / 0.99 for PCA, 0.99 / 0.999 / 0.9999 for NPCA.
        mode: ``"pca"`` or ``"npca"``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold: expected a variance fraction in (0, 1), got {threshold}")
    cumulative = torch.cumsum(ratio.to(torch.float64), dim=0)
    above = cumulative > threshold
    crossing = int(torch.argmax(above.to(torch.int8))) if bool(above.any()) else len(ratio) - 1
    if mode == "pca":
        return slice(0, crossing + 1)
    if mode == "npca":
        return slice(max(crossing - 1, 0), len(ratio))
    raise ValueError(f"mode: expected 'pca' or 'npca', got {mode!r}")


def fit_projection(
    features: torch.Tensor, threshold: float, mode: str, dtype: torch.dtype = torch.float64
) -> Projection:
    """PCA or NPCA (Rippel et al. Sec. IV-C) fitted to training features (n, d), in ``dtype``.

    Deviation: the selection runs over the r identifiable components only (:func:`identifiable_rank`). The
    original's NPCA tail also held the min(n, d) − r components without variance: at n ≤ d (Table III's deep levels)
    null-space vectors that round-off picks, so it keeps min(n, d) − r (usually one) dimensions more than this.
    """
    mean, components, ratio = principal_components(features.to(dtype))
    rank = identifiable_rank(ratio, *features.shape)
    return Projection(mean, components[:rank][selected_components(ratio[:rank], threshold, mode)].contiguous())


# ------------------------------------------------------------------------------------------------ χ² thresholds
def sigma_probability(n_sigma: float) -> float:
    """p_n = erf(n/√2): the probability mass within n standard deviations of a univariate normal."""
    return float(1.0 - erfc(n_sigma / np.sqrt(2.0)))


def chi2_threshold(n_sigma: float, dof: int) -> float:
    """t_n = sqrt(χ²_k.ppf(erf(n/√2))), the Mahalanobis distance of the "n σ" working point (Sec. IV-D).

    If x ~ N(μ, Σ) in k dimensions, M² ~ χ²_k, so P(M > t_n) = 1 − p_n. Computed from the upper tail
    (``isf(erfc(n/√2))``) to stay accurate for large n.
    """
    if dof < 1:
        raise ValueError(f"dof: expected a positive number of dimensions, got {dof}")
    if n_sigma <= 0:
        raise ValueError(f"n_sigma: expected a positive number, got {n_sigma}")
    return float(np.sqrt(chi2.isf(erfc(n_sigma / np.sqrt(2.0)), dof)))
