"""SVHN cropped digits (format 2): the MATLAB files ``{train,test,extra}_32x32.mat`` Netzer et al. distribute.

Each file holds ``X``, uint8 (32, 32, 3, N) indexed [row, column, channel (RGB), image], and ``y``, (N, 1)
labels 1..10 where 10 stands for the digit 0. See http://ufldl.stanford.edu/housenumbers/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from common.datasets import ImageSet
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError

SPLITS = ("train", "test", "extra")
IMAGE_SIZE = 32
ZERO_LABEL = 10
"""SVHN's label of the digit 0."""


def split_file(split: str) -> str:
    """The name of split ``split``'s file, ``<split>_32x32.mat``."""
    return f"{split}_32x32.mat"


def read_svhn(folder: Path, split: str) -> ImageSet:
    """Read SVHN split ``split`` ("train", "test" or "extra") from ``folder/<split>_32x32.mat``.

    The whole file is loaded into memory (the extra split needs about 1.6 GB, twice that while transposing).

    Returns:
        Images uint8 (N, 3, 32, 32), channels red, green, blue, and labels int64 (N,) equal to the digit (0..9).
    """
    if split not in SPLITS:
        raise ValueError(f"SVHN has splits {', '.join(SPLITS)}, not {split!r}")
    path = folder / split_file(split)
    if not path.is_file():
        raise MissingDataError(path, how_to_get("svhn", folder))
    images, labels = _read_mat(path)
    expected_shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    if images is None or images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != expected_shape:
        raise DataError(path, f"'X' should be uint8 of shape (32, 32, 3, N), found {_describe(images)}")
    n_images = images.shape[3]
    if labels is None or labels.shape != (n_images, 1) or labels.dtype.kind not in "iuf":
        raise DataError(path, f"'y' should be numbers of shape ({n_images}, 1), found {_describe(labels)}")
    labels = labels.reshape(-1)
    if not np.isin(labels, np.arange(1, ZERO_LABEL + 1)).all():
        raise DataError(path, f"'y' should hold the labels 1..{ZERO_LABEL}, found {np.unique(labels)[:20]}")
    images = np.ascontiguousarray(images.transpose(3, 2, 0, 1))
    digits = np.where(labels == ZERO_LABEL, 0, labels).astype(np.int64)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(digits))


def _read_mat(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The variables ``X`` and ``y`` of a MATLAB file (None where absent), or a DataError if it cannot be read."""
    with path.open("rb") as file:
        try:
            content = scipy.io.loadmat(file, variable_names=("X", "y"))
        # A damaged file can fail with many exception types (MatReadError, OSError, ValueError, IndexError, ...).
        except Exception as error:
            raise DataError(path, f"not a readable MATLAB file ({type(error).__name__}: {error})") from error
    return content.get("X"), content.get("y")


def _describe(value: np.ndarray | None) -> str:
    """Dtype and shape of a loaded variable for error messages, or 'nothing' if it is absent."""
    return "nothing" if value is None else f"{value.dtype} of shape {value.shape}"
