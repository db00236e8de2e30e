"""Published numbers of Rippel et al. (image AUROC in %, MVTec AD), with their table, row and column.

Source: the hand transcription in jpcbertoldo/anomasota (commit a60669d, ``data/src/005-gaussian-ad.*.json``),
see reference/paper_numbers.md §3; the paper PDF itself could not be read. Values not found (Table III, Table IV,
the L2 / SED columns of Table I, the ResNet table) are absent, never guessed: :func:`published` returns
``NOT_PUBLISHED``.
"""

from __future__ import annotations

from common.results import NOT_PUBLISHED, Published

LEVELS = tuple(f"L{i}" for i in range(1, 10))
SUM = "sum"

# Table I (= Table II, B4): MVG per level and the all-level sum, no augmentation; (mean, SEM across categories).
# Table II: EfficientNet B0..B7, MVG, no augmentation.
_TABLE_II = {
    "efficientnet-b0": (
        (56.8, 6.0),
        (62.3, 5.7),
        (68.4, 6.0),
        (73.8, 5.4),
        (79.1, 5.3),
        (86.1, 4.1),
        (92.5, 2.3),
        (92.2, 2.5),
        (91.3, 3.0),
        (90.6, 3.2),
    ),
    "efficientnet-b1": (
        (56.7, 6.0),
        (58.2, 6.0),
        (67.8, 6.1),
        (73.6, 5.7),
        (81.0, 4.8),
        (87.1, 3.9),
        (95.3, 1.4),
        (94.7, 1.5),
        (93.4, 2.0),
        (93.3, 2.2),
    ),
    "efficientnet-b2": (
        (59.9, 6.1),
        (59.5, 5.7),
        (68.4, 5.9),
        (75.2, 5.2),
        (82.7, 4.9),
        (89.1, 3.6),
        (95.5, 1.4),
        (94.7, 1.6),
        (93.1, 2.0),
        (93.6, 2.1),
    ),
    "efficientnet-b3": (
        (60.1, 6.3),
        (62.0, 6.2),
        (70.1, 6.2),
        (73.5, 5.6),
        (82.1, 5.1),
        (91.2, 2.8),
        (96.4, 1.2),
        (94.8, 1.7),
        (92.8, 2.1),
        (94.0, 2.2),
    ),
    "efficientnet-b4": (
        (60.3, 6.1),
        (62.0, 6.4),
        (71.1, 5.4),
        (75.6, 5.5),
        (82.1, 4.6),
        (89.1, 3.1),
        (96.7, 1.0),
        (95.5, 1.1),
        (93.1, 1.7),
        (94.8, 1.6),
    ),
    "efficientnet-b5": (
        (61.5, 6.2),
        (63.7, 6.5),
        (69.5, 6.2),
        (76.5, 5.4),
        (83.9, 4.3),
        (89.0, 3.0),
        (96.9, 1.2),
        (96.2, 1.2),
        (93.0, 1.9),
        (95.2, 1.6),
    ),
    "efficientnet-b6": (
        (61.3, 6.3),
        (63.2, 6.4),
        (70.6, 5.7),
        (75.1, 5.9),
        (81.7, 4.8),
        (88.1, 3.1),
        (96.7, 1.1),
        (95.7, 1.0),
        (93.4, 1.5),
        (95.3, 1.2),
    ),
    "efficientnet-b7": (
        (60.4, 6.2),
        (61.6, 7.0),
        (71.2, 5.8),
        (76.8, 5.2),
        (82.4, 4.8),
        (87.5, 3.6),
        (96.3, 1.6),
        (95.7, 1.3),
        (92.2, 1.8),
        (94.2, 1.8),
    ),
}
TABLE_II: dict[tuple[str, str], tuple[float, float]] = {
    (row, arch): value for arch, values in _TABLE_II.items() for row, value in zip((*LEVELS, SUM), values, strict=True)
}
TABLE_I: dict[tuple[str, str], tuple[float, float]] = {
    (row, "MVG"): value for (row, arch), value in TABLE_II.items() if arch == "efficientnet-b4"
}

# Tables V / VIII: EfficientNet-B4, all 9 levels summed, with augmentation; per category, %, no SEM given.
_TABLE_V = {
    "carpet": (100.0, 100.0),
    "grid": (89.7, 81.7),
    "leather": (100.0, 99.7),
    "tile": (99.8, 99.8),
    "wood": (99.6, 98.6),
    "bottle": (100.0, 99.8),
    "cable": (95.0, 95.5),
    "capsule": (95.1, 93.8),
    "hazelnut": (99.1, 99.6),
    "metal_nut": (94.7, 94.7),
    "pill": (88.7, 88.4),
    "screw": (85.2, 85.4),
    "toothbrush": (96.9, 96.4),
    "transistor": (95.5, 96.3),
    "zipper": (97.9, 97.8),
    "mean": (95.8, 95.2),
}
TABLE_V: dict[tuple[str, str], tuple[float, None]] = {
    (category, column): (value, None)
    for category, values in _TABLE_V.items()
    for column, value in zip(("NPCA 0.99", "MVG"), values, strict=True)
}

TABLES = {"table1": TABLE_I, "table2": TABLE_II, "table5": TABLE_V}


def published(table: str, row: str, column: str) -> Published:
    """The published mean of a cell and its ± (the SEM across categories where the paper prints one).

    ``NOT_PUBLISHED`` (value None) where the paper's number is not available.
    """
    value = TABLES.get(table, {}).get((row, column))
    return NOT_PUBLISHED if value is None else Published(*value)
