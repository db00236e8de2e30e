"""Gaussian AD: Rippel, Mertens, Merhof, "Modeling the Distribution of Normal Data in Pre-Trained Deep Features for
Anomaly Detection", ICPR 2020 (arXiv 2005.14140).

A multivariate Gaussian (mean + Ledoit-Wolf covariance) per globally pooled EfficientNet level of the normal
training images; the anomaly score is the non-squared Mahalanobis distance, averaged over levels.
Paper: https://arxiv.org/abs/2005.14140
"""

from gaussian_ad.models import BaselineLevel, GaussianAD, GaussianLevel
from gaussian_ad.scores import combine_levels, mahalanobis, standardized_euclidean

__all__ = ["BaselineLevel", "GaussianAD", "GaussianLevel", "combine_levels", "mahalanobis", "standardized_euclidean"]
