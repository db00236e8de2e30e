"""The evaluation protocol of Rippel et al. (Sec. IV, reference note §1.11): 5 folds per category, mean ± SEM.

Per category the sorted good training images are split by ``KFold(5, shuffle=True, random_state=0)``; each fold's
training part (≈ 80 %) fits the models, its held-out part is unused, and the full test split is scored. A category's
value is the mean over its folds; a table cell is the mean over categories ± the SEM (ddof 1) across the category
means. Everything here works on pooled features, extracted once per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from sklearn.model_selection import KFold

from common.metrics import ood_metrics
from gaussian_ad.models import BaselineLevel, GaussianAD, GaussianLevel
from gaussian_ad.statistics import chi2_threshold


class CategoryFeatures(NamedTuple):
    """Pooled features of one category, one (N, C_l) float tensor per level.

    Attributes:
        train: features of the sorted good training images.
        test: features of the test images.
        test_labels: (N_test,) 1 defective, 0 good.
        augmented: per level (passes, N_train, C_l) features of augmented training images, or None.
    """

    train: list[torch.Tensor]
    test: list[torch.Tensor]
    test_labels: torch.Tensor
    augmented: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class Variant:
    """One model variant: the MVG (optionally after PCA / NPCA with a variance threshold), or a baseline."""

    kind: str = "mvg"
    reduction: str | None = None
    threshold: float | None = None

    @property
    def name(self) -> str:
        """ "mvg", "l2", "sed", "pca-0.99", "npca-0.999", ..."""
        return self.kind if self.reduction is None else f"{self.reduction}-{self.threshold:g}"

    def fit(self, features: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
        """The fitted level model of this variant."""
        if self.kind == "mvg":
            return GaussianLevel.fit(features, self.reduction, self.threshold, dtype)
        return BaselineLevel.fit(features, self.kind, dtype)


class FoldResult(NamedTuple):
    """Scores of one fold: per level distances (levels, N_test) and the Gaussians' dimensions (None: baseline)."""

    distances: torch.Tensor
    dofs: list[int | None]


def fold_train_indices(n_train: int, n_folds: int = 5, seed: int = 0) -> list[np.ndarray]:
    """The training indices of each fold: ``KFold(n_folds, shuffle=True, random_state=seed)`` over 0..n−1.

    Raises:
        ValueError: fewer images than needed (each fold must keep ≥ 2 training images and KFold needs
            ``n_folds`` ≤ n).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds: expected at least 2, got {n_folds}")
    if n_train < n_folds or n_train - math.ceil(n_train / n_folds) < 2:
        raise ValueError(f"{n_train} training images are too few for {n_folds} folds (need ≥ {max(n_folds, 3)})")
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [train for train, _ in splitter.split(np.arange(n_train))]


def fold_training_features(
    features: CategoryFeatures, indices: np.ndarray, level: int, augmented: bool
) -> torch.Tensor:
    """A fold's training features of one level: the selected images, or all their augmented copies."""
    index = torch.as_tensor(indices)
    if not augmented:
        return features.train[level][index]
    if features.augmented is None:
        raise ValueError("augmented: these features hold no augmented training passes")
    passes = features.augmented[level][:, index]
    return passes.reshape(-1, passes.shape[-1])


def evaluate_fold(
    features: CategoryFeatures,
    indices: np.ndarray,
    variant: Variant,
    levels: Sequence[int],
    augmented: bool = False,
    dtype: torch.dtype = torch.float64,
) -> FoldResult:
    """Fit ``variant`` per level (0-based indices) on one fold and score the whole test split."""
    models = [variant.fit(fold_training_features(features, indices, level, augmented), dtype) for level in levels]
    model = GaussianAD(models)
    distances = model([features.test[level] for level in levels])
    return FoldResult(distances, [getattr(m, "dof", None) for m in models])


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Image AUROC, defective = positive, higher score = more anomalous (``common.metrics``)."""
    return ood_metrics(scores, labels.bool())["AUROC"]


def fold_mean_aurocs(results: Sequence[FoldResult], labels: torch.Tensor) -> np.ndarray:
    """Per level AUROC, then the AUROC of the level mean (the sum predictor), each averaged over the folds."""
    per_fold = [
        [auroc(r.distances[level], labels) for level in range(len(r.distances))] + [auroc(r.distances.mean(0), labels)]
        for r in results
    ]
    return np.mean(per_fold, axis=0)


def working_points(
    distances: torch.Tensor, labels: torch.Tensor, dof: int, sigmas: Sequence[int]
) -> dict[int, tuple[float, float]]:
    """Measured (FPR, TPR) at the χ² thresholds t_n (Sec. IV-D); the nominal FPR is 1 − erf(n/√2).

    Args:
        distances: one level's Mahalanobis distances (N,).
        labels: (N,) 1 defective.
        dof: k of that level's Gaussian.
        sigmas: the n of each working point.
    """
    defective = labels.bool()
    points = {}
    for n in sigmas:
        flagged = distances > chi2_threshold(n, dof)
        points[n] = (float(flagged[~defective].double().mean()), float(flagged[defective].double().mean()))
    return points
