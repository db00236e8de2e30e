"""Anomaly scores of Rippel et al. (Sec. III-B, IV-A): higher = more anomalous, as the paper's distances are.

The one score path used by the evaluator, the tables and users: per level a distance to the fitted normal
distribution, image score = mean of the level distances (the paper's "sum" over levels; the mean ranks images the
same). No negation anywhere: a distance already grows with anomaly.
"""

from __future__ import annotations

import torch


def mahalanobis(features: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Non-squared Mahalanobis distance M(x) = sqrt((x − μ)ᵀ Σ⁻¹ (x − μ)) (Eq. 1 of the paper).

    Args:
        features: x (m, d), cast to the dtype of ``mean``.
        mean: μ (d,).
        precision: Σ⁻¹ (d, d), symmetric.

    Returns:
        (m,) distances, in ``mean``'s dtype; the quadratic form is clamped at 0 against round-off.
    """
    centred = features.to(mean.dtype) - mean
    return ((centred @ precision) * centred).sum(dim=1).clamp_(min=0).sqrt_()


def standardized_euclidean(features: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """sqrt(mean_d ((x_d − μ_d) / σ_d)²): the SED baseline; with σ = 1 the L2 baseline (note §1.8).

    Args:
        features: x (m, d).
        mean: μ (d,).
        scale: σ (d,), positive.

    Returns:
        (m,) root-mean-square standardised deviations.
    """
    return ((features.to(mean.dtype) - mean) / scale).square().mean(dim=1).sqrt()


def combine_levels(distances: torch.Tensor) -> torch.Tensor:
    """Image score from per-level distances (levels, m): their mean over levels (the paper's sum predictor)."""
    if distances.ndim != 2 or distances.shape[0] == 0:
        raise ValueError(f"distances: expected shape (levels, m) with levels ≥ 1, got {tuple(distances.shape)}")
    return distances.mean(dim=0)
