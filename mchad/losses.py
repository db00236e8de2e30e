"""Objectives of MCHAD and its baselines on squared distances D (B, C) to the class centers.

Labels y ≥ 0 mark in-distribution samples of class y; y < 0 marks outliers (the "G-" variants train with
TinyImages300k outliers in the same batch; pytorch-ood's convention). B = B_in + B_out rows in all.

MCHAD (reference mchad.md §1): weight_center·L_Λ + weight_nll·L_Δ + weight_outlier·L_Θ with

- L_Λ (center, intra-class):  max(0, D_{i,y_i} − r)
- L_Δ (NLL, inter-class):     −log softmax(−D_i)_{y_i} = log(1 + Σ_{j≠y} exp(D_{i,y} − D_{i,j}))
- L_Θ (outlier, extra-class): Σ_j max(0, m² − D_ij)  for an outlier i.

Two reductions, chosen by ``normalization``:

``"paper"`` (the formulas as written)
    L_Λ and L_Δ are means over the B_in in-distribution samples, L_Θ a mean over the B_out outliers of its sum
    over the C centers; the hinge compares the squared distance D with m².
``"original"`` (the code that produced the published numbers, mchad.md §1.2; pytorch-ood ≤ 0.0.12)
    L_Λ = Σ_ID max(0, D_{i,y_i} − r) / (B·C); L_Δ = Σ_ID CE_i / B (B counts the outliers too);
    L_Θ = Σ_{OOD} Σ_j max(0, m² − D_ij²): a sum, and *quartic* in the Euclidean distance because the code
    squares the already squared distance. The small published weights (1e-5 … 5e-4) were tuned for this.

Center loss, II loss and CAC are the baselines of the paper's table (mchad.md §2.3).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

Normalization = Literal["paper", "original"]
NORMALIZATIONS = ("paper", "original")
CAC_DISTANCE_POWERS = (1, 2, 4)
_TUPLET_CLAMP = 50.0  # pytorch-ood clamps D_y − D_j at 50 before exp (numerical safety; no effect below it)


class LossTerms(NamedTuple):
    """The weighted total to minimise and each unweighted term (for logging), all scalars."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def check_distances_and_labels(distances: torch.Tensor, labels: torch.Tensor, name: str = "distances") -> None:
    """One clear error for a distance matrix (B, C) and labels (B,) that do not fit together.

    Raises:
        ValueError: wrong shapes, a floating-point label, or a label ≥ C.
    """
    if distances.ndim != 2:
        raise ValueError(f"{name}: expected a (B, C) matrix, got shape {tuple(distances.shape)}")
    if labels.shape != (distances.shape[0],) or labels.is_floating_point():
        raise ValueError(
            f"labels: expected {distances.shape[0]} integer labels to match {name} {tuple(distances.shape)}, "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and int(labels.max()) >= distances.shape[1]:
        raise ValueError(
            f"labels: in-distribution labels must lie in [0, {distances.shape[1] - 1}] (C = {distances.shape[1]} "
            f"classes; negative = outlier), got {int(labels.max())}"
        )


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _at_true_class(matrix: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(matrix[i, y_i] for every row i, ID mask)``, the mask (B,) in ``matrix``'s dtype.

    Outlier rows read column 0 and must be multiplied by the mask: masks instead of boolean indexing keep the
    losses free of host synchronisations.
    """
    known = labels >= 0
    values = matrix.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)
    return values, known.to(matrix.dtype)


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Number of set entries of a 0/1 mask, at least 1 (a mean over no rows is 0, not NaN)."""
    return mask.sum().clamp_min(1)


def center_term(
    distances: torch.Tensor, labels: torch.Tensor, radius: float = 0.0, normalization: Normalization = "paper"
) -> torch.Tensor:
    """L_Λ, the intra-class term: max(0, D_{i,y_i} − r) over the in-distribution rows (see module docstring).

    ``radius`` r is subtracted from the squared distance, not its square, as in the original code (r = 0 in every
    experiment).
    """
    _check_normalization(normalization)
    values, known = _at_true_class(distances, labels)
    total = ((values - radius).clamp_min(0) * known).sum()
    return total / (distances.numel() if normalization == "original" else _count(known))


def nll_term(logits: torch.Tensor, labels: torch.Tensor, normalization: Normalization = "paper") -> torch.Tensor:
    """L_Δ, cross-entropy of ``logits`` (B, C) over the in-distribution rows (MCHAD: logits = −D).

    ``"paper"`` averages over the B_in ID rows, ``"original"`` over all B rows (outlier rows count 0).
    """
    _check_normalization(normalization)
    true_logits, known = _at_true_class(logits, labels)
    total = ((torch.logsumexp(logits, dim=1) - true_logits) * known).sum()
    return total / (labels.numel() if normalization == "original" else _count(known))


def outlier_term(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, normalization: Normalization = "paper"
) -> torch.Tensor:
    """L_Θ, the extra-class term pushing outliers out of every hypersphere (0 without outliers in the batch).

    ``"paper"``: mean over outliers of Σ_j max(0, m² − D_ij). ``"original"``: Σ_outliers Σ_j max(0, m² − D_ij²)
    (the original code squares the squared distance, mchad.md §1.2 and §6.1).
    """
    _check_normalization(normalization)
    outliers = (labels < 0).to(distances.dtype)
    if normalization == "original":
        return ((margin**2 - distances.pow(2)).clamp_min(0) * outliers[:, None]).sum()
    return ((margin**2 - distances).clamp_min(0) * outliers[:, None]).sum() / _count(outliers)


class MCHADLoss(nn.Module):
    """The MCHAD objective λ_Λ·L_Λ + λ_Δ·L_Δ + λ_Θ·L_Θ (G-MCHAD when λ_Θ > 0 and the batch holds outliers).

    It also serves the Center baselines: pass the classifier's logits as ``logits`` (Center: λ_Λ·center + CE;
    G-Center: λ_Λ·center + λ_Δ·CE + λ_Θ·outlier, mchad.md §2.3).

    Args:
        weight_center: λ_Λ (α in the ablation).
        weight_nll: λ_Δ (β; "weight_ce" in the original configs).
        weight_outlier: λ_Θ (γ; "weight_oe").
        radius: r of the center term (0 in every experiment).
        margin: m of the outlier term.
        normalization: ``"paper"`` or ``"original"`` (module docstring).
    """

    def __init__(
        self,
        weight_center: float = 1.0,
        weight_nll: float = 1.0,
        weight_outlier: float = 0.0,
        radius: float = 0.0,
        margin: float = 1.0,
        normalization: Normalization = "paper",
    ) -> None:
        super().__init__()
        _check_normalization(normalization)
        self.weight_center, self.weight_nll, self.weight_outlier = weight_center, weight_nll, weight_outlier
        self.radius, self.margin, self.normalization = radius, margin, normalization

    def forward(self, distances: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None) -> LossTerms:
        """Loss of squared distances (B, C) and labels (B,); ``logits`` (B, C) default to −distances."""
        check_distances_and_labels(distances, labels)
        logits = -distances if logits is None else logits
        terms = {
            "center": center_term(distances, labels, self.radius, self.normalization),
            "nll": nll_term(logits, labels, self.normalization),
            "outlier": outlier_term(distances, labels, self.margin, self.normalization),
        }
        total = (
            self.weight_center * terms["center"]
            + self.weight_nll * terms["nll"]
            + self.weight_outlier * terms["outlier"]
        )
        return LossTerms(total, terms)


def cac_distances(squared: torch.Tensor, power: int = 1) -> torch.Tensor:
    """CAC's distances from squared Euclidean ones: ||z − c||^power, power 1 (CAC paper), 2 or 4.

    Power 4 is what pytorch-ood 0.0.7 computed (it squared the squared distances; fixed in June 2023) and so
    what the published CAC / G-CAC numbers used (mchad.md §2.3).
    """
    if power not in CAC_DISTANCE_POWERS:
        raise ValueError(f"power must be one of {CAC_DISTANCE_POWERS}, got {power}")
    if power == 1:
        # sqrt has an infinite derivative at 0; a zero distance gets gradient 0 instead of NaN.
        return torch.where(squared > 0, squared, 1.0).sqrt() * (squared > 0)
    return squared if power == 2 else squared.pow(2)


class CACLoss(nn.Module):
    """Class Anchor Clustering (Miller et al., WACV 2021): tuplet + α·anchor, on CAC distances d (B, C).

    - anchor: mean over ID rows of d_{i,y_i};
    - tuplet: mean over ID rows of log(1 + Σ_{j≠y} exp(d_{i,y} − d_{i,j}));
    - G-CAC adds λ_Θ·L_Θ on the same d (mchad.md §2.3: ``weight_ce·CAC + weight_oe·L_out``).

    Args:
        weight_anchor: α.
        weight_tuplet: weight of the whole CAC loss in G-CAC ("weight_ce"); 1 for CAC.
        weight_outlier: λ_Θ of the outlier term (0 for CAC).
        margin: m of the outlier term.
        normalization: reduction of the outlier term (``"paper"`` or ``"original"``, see module docstring).
        index_bug: reproduce pytorch-ood's tuplet indexing (all versions up to 0.4.0): the "other" classes are
            always 0..C−2, so the true class (a constant exp(0)) is included and class C−1 never is.
    """

    def __init__(
        self,
        weight_anchor: float = 1.0,
        weight_tuplet: float = 1.0,
        weight_outlier: float = 0.0,
        margin: float = 1.0,
        normalization: Normalization = "paper",
        index_bug: bool = False,
    ) -> None:
        super().__init__()
        _check_normalization(normalization)
        self.weight_anchor, self.weight_tuplet, self.weight_outlier = weight_anchor, weight_tuplet, weight_outlier
        self.margin, self.normalization, self.index_bug = margin, normalization, index_bug

    def tuplet(self, distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The tuplet term (mean over ID rows; 0 without ID rows)."""
        true, known = _at_true_class(distances, labels)
        differences = (true[:, None] - distances).clamp(max=_TUPLET_CLAMP)
        others = torch.ones_like(differences)
        if self.index_bug:
            others[:, -1] = 0.0
        else:
            others = others.scatter(1, labels.clamp_min(0)[:, None], 0.0)
        per_row = torch.log1p((differences.exp() * others).sum(1))
        return (per_row * known).sum() / _count(known)

    def forward(self, distances: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        """Loss of CAC distances (B, C) (see :func:`cac_distances`) and labels (B,)."""
        check_distances_and_labels(distances, labels)
        true, known = _at_true_class(distances, labels)
        terms = {
            "anchor": (true * known).sum() / _count(known),
            "tuplet": self.tuplet(distances, labels),
            "outlier": outlier_term(distances, labels, self.margin, self.normalization),
        }
        cac = terms["tuplet"] + self.weight_anchor * terms["anchor"]
        return LossTerms(self.weight_tuplet * cac + self.weight_outlier * terms["outlier"], terms)


def batch_class_means(
    embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding of each class in the batch, (C, D), and which classes are present, (C,) bool.

    Outlier rows (label < 0) are left out; absent classes get a zero row.
    """
    known = labels >= 0
    one_hot = F.one_hot(labels[known], n_classes).to(embeddings.dtype)  # (B_in, C)
    counts = one_hot.sum(0)
    sums = one_hot.T @ embeddings[known]
    return sums / counts.clamp_min(1)[:, None], counts > 0


class IILoss(nn.Module):
    """ii-loss (Hassen & Chan, SDM 2020): intra-class spread − α · inter-class separation.

    - intra spread: (1/B_in) Σ_i ||z_i − μ_{y_i}||², μ the batch class means;
    - inter separation: min over pairs of classes present in the batch of ||μ_j − μ_k||².

    α = 1 in the ii-loss paper; the MCHAD runs used α = 100 ("weight_sep", mchad.md §2.3). Outlier rows are
    ignored. The loss needs at least one ID sample; with one class present the separation is 0.
    """

    def __init__(self, n_classes: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.n_classes, self.alpha = n_classes, alpha

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        """Loss of embeddings z (B, D) and labels (B,)."""
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings: expected a (B, D) matrix, got shape {tuple(embeddings.shape)}")
        check_distances_and_labels(embeddings.new_empty(len(embeddings), self.n_classes), labels, "embeddings")
        means, present = batch_class_means(embeddings, labels, self.n_classes)
        known = labels >= 0
        offsets = embeddings[known] - means[labels[known]]
        intra = offsets.pow(2).sum() / max(int(known.sum()), 1)
        centers = means[present]
        between = (centers[:, None] - centers[None]).pow(2).sum(-1)
        between = between + torch.diag(torch.full((len(centers),), torch.inf, device=between.device))
        inter = between.min() if len(centers) > 1 else between.new_zeros(())
        return LossTerms(intra - self.alpha * inter, {"intra_spread": intra, "inter_separation": inter})


class SoftmaxLoss(nn.Module):
    """Cross-entropy of the softmax baseline over the in-distribution rows (mean)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        check_distances_and_labels(logits, labels, "logits")
        nll = nll_term(logits, labels, "paper")
        return LossTerms(nll, {"nll": nll})
