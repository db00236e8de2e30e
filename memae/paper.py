"""Published numbers of Gong et al., ICCV 2019 (MemAE), with their table, row and column.

Only values confirmed by a source are given (reference/paper_numbers.md §2, reference/memae.md §2.2); a value
that could not be found is None, never guessed. The baseline rows of the image table (OC-SVM, KDE, VAE, PixCNN,
DSEBM) could not be verified and are left out. C-MemAE (Zamel's B.Sc. thesis) published no retrievable numbers,
so every C-MemAE row has paper value None.
"""

from __future__ import annotations

IMAGE_TABLE = "Table 1: image one-class AUROC (%), mean over the 10 classes"
"""The MemAE image table (Sec. 4.1); the paper prints fractions, we print percent."""

IMAGE_AUROC: dict[tuple[str, str], float] = {
    ("AE", "MNIST"): 0.9619,
    ("AE", "CIFAR-10"): 0.5706,
    ("MemAE-nonSpar", "MNIST"): 0.9725,
    ("MemAE-nonSpar", "CIFAR-10"): 0.6058,
    ("MemAE", "MNIST"): 0.9751,
    ("MemAE", "CIFAR-10"): 0.6088,
}
"""(row, column) → mean AUROC over the 10 one-class tasks, as a fraction."""


def image_auroc(row: str, column: str) -> float | None:
    """The published mean AUROC of ``row`` on ``column``, or None when the paper has no such cell."""
    return IMAGE_AUROC.get((row, column))
