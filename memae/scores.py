"""The anomaly score of MemAE (Sec. 3): the per-image mean squared reconstruction error, higher = more anomalous.

This is the one score path: the evaluator, the tables and users all call :func:`anomaly_scores`. No negation is
involved (the paper turns errors into a "regularity" 1 − minmax(e) only for its video plots; AUROC is unchanged).
"""

from __future__ import annotations

import torch

from memae.memory import BottleneckOutput
from memae.models import Autoencoder


def reconstruction_error(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch elements of (x̂ − x)²: (B, ...) → (B,)."""
    if x.shape != reconstruction.shape:
        raise ValueError(f"x and reconstruction differ in shape: {tuple(x.shape)} vs {tuple(reconstruction.shape)}")
    return (reconstruction - x).pow(2).flatten(1).mean(dim=1)


@torch.no_grad()
def anomaly_scores(
    model: Autoencoder, x: torch.Tensor, condition: torch.Tensor | None = None, selection: str = "sum"
) -> tuple[torch.Tensor, torch.Tensor, BottleneckOutput]:
    """Scores (B,) of images ``x`` with the model in eval mode (memory frozen, BatchNorm running statistics).

    Args:
        model: a trained autoencoder.
        x: normalised images (B, C, H, W).
        condition: (B,) memory indices for a conditional model (known condition); None = self-selection.
        selection: C-MemAE's self-selection criterion, ``"sum"`` or ``"max"``.

    Returns:
        ``(scores, reconstruction, bottleneck output)``.
    """
    model.eval()
    reconstruction, out = model(x, condition, selection)
    return reconstruction_error(x, reconstruction), reconstruction, out
