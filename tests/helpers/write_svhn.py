"""Write SVHN cropped-digit files ``<split>_32x32.mat`` exactly as Netzer et al. distribute them.

Each MATLAB file holds ``X``, uint8 (32, 32, 3, N) indexed [row, column, channel, image], and ``y``, uint8
(N, 1) with labels 1..10, 10 standing for the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io


def save_svhn(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``folder/<split>_32x32.mat`` for each split.

    Args:
        folder: the dataset folder (created if needed).
        splits: "train", "test" and/or "extra" -> (images uint8 (N, 3, 32, 32) RGB, digits (N,) in 0..9).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, digits) in splits.items():
        svhn_labels = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": svhn_labels})


def write_svhn(
    folder: Path, n_train: int, n_test: int, n_extra: int = 0, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write random SVHN train and test splits, and extra if ``n_extra > 0``, into ``folder``.

    Returns:
        split -> (images uint8 (N, 3, 32, 32), digits int64 (N,) in 0..9): what ``common.datasets.load`` must give.
    """
    rng = np.random.default_rng(seed)
    sizes = {"train": n_train, "test": n_test, "extra": n_extra}
    splits = {
        split: (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.int64))
        for split, n in sizes.items()
        if split != "extra" or n > 0
    }
    save_svhn(folder, splits)
    return splits
