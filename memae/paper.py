"""Published numbers of Gong et al., ICCV 2019 (MemAE), with their table, row and column.

Only values confirmed by a source are given (reference/paper_numbers.md §2, reference/memae.md §2.2); a value
that could not be found is absent, never guessed. The baseline rows of the image table (OC-SVM, KDE, VAE, PixCNN,
DSEBM) could not be verified and are left out. The paper prints no ± for these means. C-MemAE (Zamel's B.Sc.
thesis) published no retrievable numbers, so every C-MemAE row has no published value.
"""

from __future__ import annotations

from common.results import NOT_PUBLISHED, Published

IMAGE_TABLE = "Table 1: image one-class AUROC (%), mean over the 10 classes"
"""The MemAE image table (Sec. 4.1); the paper prints fractions, our tables print percent."""

DATASETS = {"MNIST": "mnist", "CIFAR-10": "cifar10"}
"""Each column's data in the paper, by its ``common.datasets`` name."""

IMAGE_AUROC: dict[tuple[str, str], float] = {
    ("AE", "MNIST"): 0.9619,
    ("AE", "CIFAR-10"): 0.5706,
    ("MemAE-nonSpar", "MNIST"): 0.9725,
    ("MemAE-nonSpar", "CIFAR-10"): 0.6058,
    ("MemAE", "MNIST"): 0.9751,
    ("MemAE", "CIFAR-10"): 0.6088,
}
"""(row, column) → mean AUROC over the 10 one-class tasks, as the fraction the paper prints."""


def published(table: str, row: str, column: str) -> Published:
    """The published value of a cell of our ``table``, in percent as our tables print it (no ±: the paper
    gives none); :data:`~common.results.NOT_PUBLISHED` when the paper has no such cell."""
    if table != IMAGE_TABLE or (row, column) not in IMAGE_AUROC:
        return NOT_PUBLISHED
    return Published(100.0 * IMAGE_AUROC[(row, column)])
