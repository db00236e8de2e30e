"""Objectives of InvGlow (Schirrmeister et al., NeurIPS 2020, Sec. 2–3; reference note invglow.md §2.2, §3).

All in nats per image, as the original: the training loss is the mean per-image NLL, and the outlier-loss
weight (6000) and temperature (1000) are relative to that scale (≈7.2k nats for a CIFAR image).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

N_BINS = 256  # 8-bit pixels: the discrete likelihood adds D · log 256 (uniform dequantization over 1/256 bins)


def nll_nats(log_density: torch.Tensor, n_dims: int) -> torch.Tensor:
    """Discrete negative log-likelihood −log P(u) = −lp + D · log 256 per image (nats).

    Args:
        log_density: lp = log p(x) of the dequantized x = u/256 − 0.5 (+ noise), shape (B,).
        n_dims: D.
    """
    return -log_density + n_dims * math.log(N_BINS)


def bits_per_dim(log_density: torch.Tensor, n_dims: int) -> torch.Tensor:
    """bpd = NLL / (D · ln 2) = 8 − lp / (D · ln 2), shape (B,)."""
    return nll_nats(log_density, n_dims) / (n_dims * math.log(2))


def outlier_loss(
    log_density_fine: torch.Tensor, log_density_base: torch.Tensor, weight: float, temperature: float
) -> torch.Tensor:
    """The paper's outlier loss (Eq. 2) on general-distribution (Tiny) images.

    L_out = λ · mean_x softplus((log p_fine(x) − log p_base(x)) / T)

    i.e. λ · BCE-with-logits(Δ/T, target 0): the finetuned model is pushed to give Tiny images lower likelihood
    than the Tiny model does. The base term is detached (the Tiny model is fixed).

    Args:
        log_density_fine: log p of the finetuned model on the outlier batch, (B,).
        log_density_base: log p of the general (Tiny) model on the same batch, (B,).
        weight: λ (6000).
        temperature: T (1000).
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    return weight * F.softplus((log_density_fine - log_density_base.detach()) / temperature).mean()


def margin_loss(nll_in: torch.Tensor, nll_out: torch.Tensor, margin: float) -> torch.Tensor:
    """The margin outlier loss of Nalisnick et al. / Hendrycks et al. that the paper compares with (original 'margin').

    mean relu(margin + NLL_in.detach() − NLL_out) over the first min(B_in, B_out) pairs: outliers must be at
    least ``margin`` nats less likely than inliers (the original uses margin = D nats ≈ 1.44 bpd).
    """
    n = min(len(nll_in), len(nll_out))
    return torch.relu(margin + nll_in[:n].detach() - nll_out[:n]).mean()


def wrong_class_loss(
    class_log_densities: torch.Tensor,
    log_density_base: torch.Tensor,
    labels: torch.Tensor,
    weight: float,
    temperature: float,
) -> torch.Tensor:
    """Supervised variant's loss on the *other* classes of each in-distribution image (reference note §3).

    λ · mean over all B × C entries of (1 − onehot(y)) · softplus((log p(x | c) − log p_base(x)) / T): every wrong
    class is pushed below the general model as an outlier would be (masked entries count as 0 in the mean, as the
    original).

    Args:
        class_log_densities: log p(x | c), (B, C).
        log_density_base: log p_base(x) of the general model, (B,); detached.
        labels: true classes (B,).
        weight: λ (6000).
        temperature: T (1000).
    """
    wrong = 1.0 - F.one_hot(labels, class_log_densities.shape[1]).to(class_log_densities.dtype)
    logits = (class_log_densities - log_density_base.detach()[:, None]) / temperature
    return weight * (wrong * F.softplus(logits)).mean()
