"""Anomaly scores and class predictions: the one path used by the evaluator, the tables and users.

Convention: **higher = more anomalous** (OOD positive). The paper's table scores every method by the distance to
the nearest center (the "Distance" columns, mchad.md §3.4), including CAC and Center; the softmax reference
model is scored by MSP or energy.
"""

from __future__ import annotations

from typing import Literal

import torch

from mchad.models import CenterOutput

ScoreKind = Literal["distance", "msp", "energy"]
SCORE_KINDS = ("distance", "msp", "energy")
PredictBy = Literal["distance", "logits"]


def min_distance(distances: torch.Tensor) -> torch.Tensor:
    """min_j D_ij, the squared distance to the nearest center (B,); no negation needed (far = anomalous)."""
    return distances.min(dim=1).values


def msp(logits: torch.Tensor) -> torch.Tensor:
    """−max_j softmax(logits)_j (B,). Negated: a confident maximum softmax probability means in-distribution."""
    return -logits.softmax(dim=1).max(dim=1).values


def energy(logits: torch.Tensor) -> torch.Tensor:
    """−logsumexp_j logits_j (B,), the energy E(x) of Liu et al. 2020: high energy = anomalous (negated LSE)."""
    return -torch.logsumexp(logits, dim=1)


def score(output: CenterOutput, kind: ScoreKind = "distance") -> torch.Tensor:
    """Outlier scores (B,) of a :class:`CenterNet` output; higher = more anomalous.

    Raises:
        ValueError: an unknown ``kind``, or ``"distance"`` for a model without centers.
    """
    if kind == "distance":
        if output.distances is None:
            raise ValueError("kind='distance' needs a model with class centers; use 'msp' or 'energy'")
        return min_distance(output.distances)
    if kind == "msp":
        return msp(output.logits)
    if kind == "energy":
        return energy(output.logits)
    raise ValueError(f"kind must be one of {SCORE_KINDS}, got {kind!r}")


def predict(output: CenterOutput, by: PredictBy = "distance") -> torch.Tensor:
    """Predicted classes (B,): the nearest center (``"distance"``) or argmax of the logits (``"logits"``)."""
    if by == "distance":
        if output.distances is None:
            raise ValueError("by='distance' needs a model with class centers; use 'logits'")
        return output.distances.argmin(dim=1)
    if by == "logits":
        return output.logits.argmax(dim=1)
    raise ValueError(f"by must be 'distance' or 'logits', got {by!r}")
