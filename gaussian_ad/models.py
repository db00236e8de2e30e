"""Per-level normal-data models of Rippel et al. (Sec. III-B, IV-A, IV-C): fitted statistics live in buffers.

``GaussianLevel`` is the paper's multivariate Gaussian (MVG) of one level, optionally in a PCA / NPCA subspace;
``BaselineLevel`` the L2 and SED baselines; ``GaussianAD`` stacks one model per selected level. No module here
sees images: they take the pooled backbone features, so features are extracted once and reused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gaussian_ad.scores import combine_levels, mahalanobis, standardized_euclidean
from gaussian_ad.statistics import Projection, fit_ledoit_wolf, fit_projection

REDUCTIONS = (None, "pca", "npca")
BASELINES = ("l2", "sed")


class GaussianLevel(nn.Module):
    """N(μ, Σ) of one level with Ledoit-Wolf Σ; score = non-squared Mahalanobis distance (optionally after PCA).

    Args:
        mean: μ (k,).
        precision: Σ⁻¹ (k, k).
        projection: the PCA / NPCA projection to k components, or None (k = d).
    """

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, projection: Projection | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("precision", precision)
        self.register_buffer("projection_mean", None if projection is None else projection.mean)
        self.register_buffer("projection_components", None if projection is None else projection.components)

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        reduction: str | None = None,
        threshold: float | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> GaussianLevel:
        """Fit to training features (n, d): optional PCA / NPCA with variance ``threshold``, then mean + LW.

        Raises:
            ValueError: a reduction without threshold or the reverse (the original code asserts the same), or
                fewer than 2 samples.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction: expected None, 'pca' or 'npca', got {reduction!r}")
        if (reduction is None) != (threshold is None):
            raise ValueError("threshold: give a variance threshold exactly when a reduction (pca / npca) is chosen")
        projection = None if reduction is None else fit_projection(features, threshold, reduction, dtype)
        reduced = features.to(dtype) if projection is None else projection(features)
        fit = fit_ledoit_wolf(reduced, dtype)
        return cls(fit.mean, fit.precision, projection)

    @property
    def dof(self) -> int:
        """k, the dimension of the Gaussian (of M² ~ χ²_k)."""
        return int(self.mean.shape[0])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distances (m,) of features (m, d)."""
        if self.projection_components is not None:
            features = Projection(self.projection_mean, self.projection_components)(features)
        return mahalanobis(features, self.mean, self.precision)


class BaselineLevel(nn.Module):
    """The paper's univariate baselines on one level (note §1.8): L2 (σ = 1) or SED (σ = per-feature std).

    Args:
        mean: μ (d,).
        scale: σ (d,).
    """

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    @classmethod
    def fit(cls, features: torch.Tensor, kind: str, dtype: torch.dtype = torch.float64) -> BaselineLevel:
        """``kind`` "l2" or "sed" fitted to (n, d) features; SED uses the unbiased std (torch ``.std``).

        Deviation: a feature constant over the training set gets σ = 1 instead of a division by zero.
        """
        if kind not in BASELINES:
            raise ValueError(f"kind: expected 'l2' or 'sed', got {kind!r}")
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"features: expected (n, d) with n ≥ 2, got {tuple(features.shape)}")
        values = features.to(dtype)
        scale = values.std(dim=0) if kind == "sed" else torch.ones_like(values[0])
        return cls(values.mean(dim=0), torch.where(scale > 0, scale, torch.ones_like(scale)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised RMS distances (m,) of features (m, d)."""
        return standardized_euclidean(features, self.mean, self.scale)


class GaussianAD(nn.Module):
    """One fitted model per selected level; ``score`` is the image anomaly score (higher = more anomalous).

    Args:
        levels: per selected level a :class:`GaussianLevel` or :class:`BaselineLevel`.
    """

    def __init__(self, levels: Sequence[nn.Module]) -> None:
        super().__init__()
        if not levels:
            raise ValueError("levels: expected at least one level model")
        self.levels = nn.ModuleList(levels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level distances (levels, m) from one (m, d_l) feature matrix per selected level."""
        if len(features) != len(self.levels):
            raise ValueError(f"features: expected {len(self.levels)} levels, got {len(features)}")
        return torch.stack([level(f) for level, f in zip(self.levels, features, strict=True)])

    def score(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Image scores (m,): the mean of the level distances (the paper's sum predictor)."""
        return combine_levels(self.forward(features))
