"""Published numbers for InvGlow (Schirrmeister et al., NeurIPS 2020, arXiv 2006.10848 v3).

The AUROC tables of the manuscript (unsupervised, supervised, grey images) and its local-vs-semantic results could
not be retrieved from any source available when this suite was written: every such cell is missing
(``Published(None)``), never guessed. The only numbers known are the Serra et al. replication in the original
repository (``SerraReplicationCode/ReferenceGlowVsDirectPng.ipynb``): CIFAR-10 test (in-distribution) vs SVHN test,
with y0ast's pretrained CIFAR-10 Glow, and the values Serra et al. report (their Supplementary D, Table 6). None of
them is printed with a ±.
"""

from __future__ import annotations

from common.results import NOT_PUBLISHED, Published

UNSUPERVISED_TABLE = "unsupervised AUROC (%)"
SUPERVISED_TABLE = "supervised AUROC (%)"
GREY_TABLE = "grey images (MNIST ↔ Fashion-MNIST), grey Tiny model, AUROC (%)"
SERRA_TABLE = "Serra et al. input complexity, CIFAR-10 vs SVHN, AUROC (%)"
LOCAL_SEMANTIC_TABLE = "local vs semantic: raw-likelihood AUROC (%), Spearman ρ with the full Glow, bits/dim"

# Rows of the unsupervised table as the original code computes them (reference note §4.1, §6).
RAW = "raw likelihood"
RATIO = "likelihood ratio to Tiny"
RATIO_OUTLIER_LOSS = "ratio to Tiny + outlier loss"


def final_scale_row(side: int) -> str:
    """The final-scale row of a Glow whose last scale is ``side`` × ``side`` (4 × 4 in the paper)."""
    return f"final-scale ({side}×{side}) contribution"


def local_glow_row(patch: int, size: int) -> str:
    """The local Glow's row: ``patch`` × ``patch`` patches of ``size`` × ``size`` images (8 × 8 of 32 × 32 in the
    paper, 16 patches)."""
    return f"local Glow ({(size // patch) ** 2} patches, {patch}×{patch} at {size}×{size})"


FINAL_SCALE = final_scale_row(4)
# The margin loss is the baseline the paper compares with (its ref. [3]); the original scores every finetuned model,
# this one too, with the ratio to Tiny. The raw-likelihood row (the outlier-exposure baseline's own score) is ours.
MARGIN_LOSS = "margin outlier loss, ratio to Tiny"
MARGIN_LOSS_RAW = "margin outlier loss, raw likelihood (extra row, not in the original's evaluation)"
UNSUPERVISED_ROWS = (RAW, RATIO, RATIO_OUTLIER_LOSS, FINAL_SCALE, MARGIN_LOSS, MARGIN_LOSS_RAW)
SUPERVISED_RATIO = "class-conditional Glow + outlier loss, ratio to Tiny"
SUPERVISED_ROWS = (SUPERVISED_RATIO,)
GREY_ROWS = (RAW, RATIO, RATIO_OUTLIER_LOSS, FINAL_SCALE)
FULL_GLOW = "full Glow"
LOCAL_GLOW = local_glow_row(8, 32)
DENSE_GLOW = "dense (fully connected) Glow"
LOCAL_SEMANTIC_ROWS = (FULL_GLOW, LOCAL_GLOW, DENSE_GLOW)
_TABLE_ROWS = {
    UNSUPERVISED_TABLE: UNSUPERVISED_ROWS,
    SUPERVISED_TABLE: SUPERVISED_ROWS,
    GREY_TABLE: GREY_ROWS,
    LOCAL_SEMANTIC_TABLE: LOCAL_SEMANTIC_ROWS,
}

SERRA_S = "S = bpd_glow − bpd_png"
SERRA_PNG = "PNG bpd only"
ORIGINAL_CODE = "original code"
SERRA_PAPER = "Serra et al."

SERRA_VALUES: dict[tuple[str, str], Published] = {
    (SERRA_S, ORIGINAL_CODE): Published(78.4),
    (SERRA_S, SERRA_PAPER): Published(95.0),
    (SERRA_PNG, ORIGINAL_CODE): Published(7.9),
    (SERRA_PNG, SERRA_PAPER): Published(7.7),
}
SERRA_SOURCES: dict[tuple[str, str], str] = {
    (SERRA_S, ORIGINAL_CODE): "original repo notebook output 0.7837",
    (SERRA_S, SERRA_PAPER): "Serra et al. 2020, Suppl. D, Table 6",
    (SERRA_PNG, ORIGINAL_CODE): "original repo notebook output 0.0787",
    (SERRA_PNG, SERRA_PAPER): "Serra et al. 2020, Suppl. D, Table 6",
}
NOT_RETRIEVED = "arXiv 2006.10848 tables: not retrieved"


def published(table: str, row: str, column: str) -> Published:
    """The manuscript's value (and its ±) of ``row`` and ``column`` of ``table``; missing where not retrieved.

    Raises:
        KeyError: ``table`` or ``row`` is not one of this paper's.
    """
    if table == SERRA_TABLE:
        if (row, column) not in SERRA_VALUES:
            raise KeyError(f"unknown Serra cell {row!r} / {column!r}; cells: {list(SERRA_VALUES)}")
        return SERRA_VALUES[(row, column)]
    if table not in _TABLE_ROWS or row not in _TABLE_ROWS[table]:
        raise KeyError(f"unknown cell {table!r} / {row!r}; tables and rows: {_TABLE_ROWS}")
    return NOT_PUBLISHED
