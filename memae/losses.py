"""The MemAE training objective (Gong et al., ICCV 2019, Sec. 3): MSE reconstruction + α · entropy.

.. math::
    L = \\frac{1}{T} \\sum_t \\Big( R(x^t, \\hat x^t) + \\alpha E(\\hat w^t) \\Big), \\qquad
    E(\\hat w) = \\sum_i -\\hat w_i \\log \\hat w_i

R is the mean squared error over all elements (the official code's ``nn.MSELoss()``, for which α = 0.0002 was
tuned); E is summed over slots and averaged over every query (samples × positions), as the official code does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

ENTROPY_WEIGHT = 2e-4  # α "for all experiments" (Sec. 4), official EntropyLossWeight
LOG_EPSILON = 1e-12  # inside the log, as in the official code (issue #10: log 0)


class LossTerms(NamedTuple):
    """The objective and its two parts (all scalars)."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    entropy: torch.Tensor


def addressing_entropy(attention: torch.Tensor) -> torch.Tensor:
    """E(ŵ) = Σ_i −ŵ_i log ŵ_i per query, averaged over queries.

    Args:
        attention: addressing weights (B, N, *spatial); every (sample, position) is one query over N slots.
    """
    rows = attention.movedim(1, -1).reshape(-1, attention.shape[1])
    return -(rows * torch.log(rows + LOG_EPSILON)).sum(dim=1).mean()


def memae_loss(
    x: torch.Tensor, reconstruction: torch.Tensor, attention: torch.Tensor | None, entropy_weight: float
) -> LossTerms:
    """The objective: ``mse(x̂, x) + α · E(ŵ)``; without a memory (AE) or with α = 0 (MemAE-nonSpar) just the MSE.

    Args:
        x: input (B, C, H, W).
        reconstruction: x̂, same shape.
        attention: ŵ (B, N, *spatial) or None.
        entropy_weight: α ≥ 0.
    """
    if entropy_weight < 0:
        raise ValueError(f"entropy_weight must be non-negative, got {entropy_weight}")
    mse = F.mse_loss(reconstruction, x)
    entropy = addressing_entropy(attention) if attention is not None else mse.new_zeros(())
    total = mse + entropy_weight * entropy if entropy_weight > 0 else mse
    return LossTerms(total, mse, entropy)
