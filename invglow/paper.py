"""Published numbers for InvGlow (Schirrmeister et al., NeurIPS 2020, arXiv 2006.10848 v3).

The AUROC tables of the manuscript (unsupervised and supervised) could not be retrieved from any source available
when this suite was written (reference/paper_numbers.md §1.1, §1.3): every such cell is ``None`` ("missing"),
never guessed. The only numbers known are the Serra et al. replication in the original repository
(``SerraReplicationCode/ReferenceGlowVsDirectPng.ipynb``): CIFAR-10 test (in-distribution) vs SVHN test, with
y0ast's pretrained CIFAR-10 Glow, and the values Serra et al. report (their Supplementary D, Table 6).
"""

from __future__ import annotations

from typing import NamedTuple

UNSUPERVISED_TABLE = "unsupervised AUROC (%)"
SUPERVISED_TABLE = "supervised AUROC (%)"
GREY_TABLE = "grey images (MNIST ↔ Fashion-MNIST), grey Tiny model, AUROC (%)"
SERRA_TABLE = "Serra et al. input complexity, CIFAR-10 vs SVHN, AUROC (%)"

# Rows of the unsupervised table as the original code computes them (reference note §4.1, §6).
RAW = "raw likelihood"
RATIO = "likelihood ratio to Tiny"
RATIO_OUTLIER_LOSS = "ratio to Tiny + outlier loss"
FINAL_SCALE = "final-scale (4×4) contribution"
MARGIN_LOSS = "margin outlier loss, raw likelihood"  # the baseline the paper compares with (its ref. [3])
UNSUPERVISED_ROWS = (RAW, RATIO, RATIO_OUTLIER_LOSS, FINAL_SCALE, MARGIN_LOSS)
SUPERVISED_RATIO = "class-conditional Glow + outlier loss, ratio to Tiny"
SUPERVISED_ROWS = (SUPERVISED_RATIO,)
GREY_ROWS = (RAW, RATIO, RATIO_OUTLIER_LOSS, FINAL_SCALE)
_TABLE_ROWS = {UNSUPERVISED_TABLE: UNSUPERVISED_ROWS, SUPERVISED_TABLE: SUPERVISED_ROWS, GREY_TABLE: GREY_ROWS}

SERRA_S = "S = bpd_glow − bpd_png"
SERRA_PNG = "PNG bpd only"
ORIGINAL_CODE = "original code"
SERRA_PAPER = "Serra et al."


class PublishedValue(NamedTuple):
    """A published number, or None when it could not be found, with where it comes from."""

    value: float | None
    source: str


SERRA_VALUES: dict[tuple[str, str], PublishedValue] = {
    (SERRA_S, ORIGINAL_CODE): PublishedValue(78.4, "original repo notebook output 0.7837"),
    (SERRA_S, SERRA_PAPER): PublishedValue(95.0, "Serra et al. 2020, Suppl. D, Table 6"),
    (SERRA_PNG, ORIGINAL_CODE): PublishedValue(7.9, "original repo notebook output 0.0787"),
    (SERRA_PNG, SERRA_PAPER): PublishedValue(7.7, "Serra et al. 2020, Suppl. D, Table 6"),
}


def table_value(table: str, row: str, in_distribution: str, ood: str) -> PublishedValue:
    """The manuscript's AUROC for ``row`` of ``table`` and the pair (in_distribution → ood): not retrieved, so None."""
    if table not in _TABLE_ROWS or row not in _TABLE_ROWS[table]:
        raise KeyError(f"unknown cell {table!r} / {row!r}; tables and rows: {_TABLE_ROWS}")
    return PublishedValue(None, f"arXiv 2006.10848 {table}, {in_distribution} → {ood}: not retrieved")
