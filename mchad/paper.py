"""Published numbers of Kirchheim et al., ICPR 2022 (MCHAD), so every report puts them beside ours.

``MAIN_TABLE``: the main table (LaTeX label ``tab:results``; reference mchad.md §4.1), WRN-40-2 pretrained, mean and
± (pandas SEM) over 21 seeds × 7 OOD sets, in percent. Columns use the paper's names: its "AUPR-IN" has the OOD
samples as positives and its "AUPR-OUT" the ID samples (pytorch-ood ≤ 0.1.9 naming, mchad.md §3.2), both
trapezoidal; FPR95 is the FPR of ID samples at 95 % TPR of OOD samples.

``PER_OOD_AUROC``: per-OOD-set AUROC read off the README bar charts (mchad.md §4.2), **approximate (±1)**; the
paper prints no per-set numbers. Entries the charts give only as "≈ 100" are None.

:func:`published` is what the tables read.
"""

from __future__ import annotations

from common.results import NOT_PUBLISHED, Published

TABLE_NAME = "Table tab:results (main table)"
PER_SET_TABLE_NAME = "per-OOD-set AUROC (README bar charts, approximate)"
COLUMNS = ("Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95")
DATASETS = ("SVHN", "CIFAR10", "CIFAR100")
METHODS = ("MCHAD", "II", "CAC", "Center", "G-MCHAD", "G-Center", "G-CAC")
OOD_SETS = ("Texture", "Uniform", "Gaussian", "Tiny Crop", "Tiny Resize", "LSUN Crop", "LSUN Resize")

_ROWS = {
    # (dataset, method): Acc, ±, AUROC, ±, AUPR-IN, ±, AUPR-OUT, ±, FPR95, ±
    ("SVHN", "MCHAD"): (95.81, 0.01, 99.22, 0.04, 97.12, 0.14, 99.74, 0.02, 3.16, 0.20),
    ("SVHN", "II"): (10.59, 0.11, 49.32, 1.25, 27.95, 1.00, 74.65, 0.80, 86.42, 1.64),
    ("SVHN", "CAC"): (94.56, 0.03, 95.97, 0.18, 89.05, 0.44, 97.68, 0.14, 14.60, 1.02),
    ("SVHN", "Center"): (96.06, 0.01, 97.96, 0.11, 94.15, 0.24, 98.89, 0.08, 6.35, 0.31),
    ("SVHN", "G-MCHAD"): (95.69, 0.01, 99.38, 0.05, 97.24, 0.24, 99.80, 0.02, 2.14, 0.18),
    ("SVHN", "G-Center"): (95.87, 0.01, 99.33, 0.11, 98.29, 0.28, 99.69, 0.05, 2.60, 0.41),
    ("SVHN", "G-CAC"): (94.22, 0.03, 98.77, 0.18, 97.84, 0.31, 99.12, 0.13, 5.67, 0.97),
    ("CIFAR10", "MCHAD"): (94.83, 0.02, 94.15, 0.32, 89.61, 0.65, 95.80, 0.22, 16.18, 0.80),
    ("CIFAR10", "II"): (28.41, 0.19, 60.83, 1.41, 59.18, 1.34, 63.24, 1.47, 78.18, 2.41),
    ("CIFAR10", "CAC"): (95.17, 0.01, 92.81, 0.38, 88.14, 0.77, 94.84, 0.23, 18.87, 0.76),
    ("CIFAR10", "Center"): (94.45, 0.01, 92.59, 0.25, 88.93, 0.36, 92.66, 0.38, 29.75, 1.58),
    ("CIFAR10", "G-MCHAD"): (94.69, 0.01, 96.69, 0.19, 94.31, 0.40, 97.57, 0.13, 10.27, 0.52),
    ("CIFAR10", "G-Center"): (94.28, 0.02, 93.29, 0.51, 89.27, 0.83, 94.77, 0.40, 19.19, 1.19),
    ("CIFAR10", "G-CAC"): (94.98, 0.03, 93.33, 0.59, 90.33, 0.72, 94.78, 0.42, 19.95, 1.18),
    ("CIFAR100", "MCHAD"): (77.52, 0.02, 79.88, 0.97, 72.59, 1.11, 84.18, 0.81, 48.83, 2.05),
    ("CIFAR100", "II"): (5.90, 0.07, 51.05, 1.46, 50.56, 1.11, 55.79, 1.27, 86.72, 1.88),
    ("CIFAR100", "CAC"): (75.67, 0.02, 73.85, 1.12, 68.82, 1.24, 77.90, 0.97, 59.91, 1.92),
    ("CIFAR100", "Center"): (76.59, 0.02, 74.26, 1.41, 69.04, 1.37, 78.16, 1.25, 57.64, 2.32),
    ("CIFAR100", "G-MCHAD"): (77.14, 0.02, 83.96, 0.97, 80.56, 1.03, 86.27, 0.90, 45.17, 2.38),
    ("CIFAR100", "G-Center"): (67.94, 0.11, 69.38, 2.35, 75.34, 1.70, 69.52, 2.04, 66.75, 3.40),
    ("CIFAR100", "G-CAC"): (69.99, 0.94, 68.67, 1.34, 64.88, 1.32, 73.20, 1.11, 66.95, 1.85),
}

MAIN_TABLE: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    key: {column: (values[2 * i], values[2 * i + 1]) for i, column in enumerate(COLUMNS)}
    for key, values in _ROWS.items()
}
"""(dataset, method) → column → (mean, ±) in percent."""

_PER_SET = {
    ("CIFAR10", "MCHAD"): (93, 92, 94, 96.5, 92, 97.5, 94),
    ("CIFAR10", "G-MCHAD"): (97, 97.5, 98, 96, 95, 97, 97),
    ("CIFAR100", "MCHAD"): (75, 84, 84, 87, 72.5, 87.5, 68.5),
    ("CIFAR100", "G-MCHAD"): (79.5, 94.5, 92, 88.5, 73, 89, 71),
    ("SVHN", "MCHAD"): (99, None, None, 99, 99, 99, 99),  # noise sets: "≈ 100" on the chart
}

PER_OOD_AUROC: dict[tuple[str, str], dict[str, float | None]] = {
    key: dict(zip(OOD_SETS, values, strict=True)) for key, values in _PER_SET.items()
}
"""(dataset, method) → OOD set → AUROC in percent, approximate; rows not in the charts' legend are absent."""


def row_name(dataset: str, method: str) -> str:
    """The row label of (dataset, method) in both tables, e.g. "SVHN G-MCHAD"."""
    return f"{dataset} {method}"


_MAIN_ROWS = {row_name(*key): columns for key, columns in MAIN_TABLE.items()}
_PER_SET_ROWS = {row_name(*key): columns for key, columns in PER_OOD_AUROC.items()}


def published(table: str, row: str, column: str) -> Published:
    """The published number at (``table``, ``row``, ``column``) with its ± (percent); ``Published(None)`` if none.

    ``table`` is :data:`TABLE_NAME` (columns :data:`COLUMNS`, ± = SEM over 21 seeds × 7 OOD sets) or
    :data:`PER_SET_TABLE_NAME` (columns :data:`OOD_SETS`, read off a chart: no ±); ``row`` is :func:`row_name`.
    """
    if table == TABLE_NAME:
        return Published(*_MAIN_ROWS[row][column]) if row in _MAIN_ROWS else NOT_PUBLISHED
    if table == PER_SET_TABLE_NAME:
        return Published(_PER_SET_ROWS.get(row, {}).get(column))
    raise KeyError(f"unknown table {table!r}; tables: {TABLE_NAME!r}, {PER_SET_TABLE_NAME!r}")
