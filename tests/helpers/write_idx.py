"""Write IDX files and MNIST-style dataset folders exactly as LeCun et al. distribute them."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
"""Element type -> IDX type code."""

SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic number, big-endian int32 dimensions, big-endian values."""
    dtype = array.dtype.newbyteorder("=")
    header = bytes([0, 0, IDX_TYPE_CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file at ``path``, gzipped if the name ends in ``.gz``."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def save_idx_dataset(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], compressed: bool = True) -> None:
    """Write MNIST-layout files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` into ``folder``.

    Args:
        folder: the dataset folder (created if needed).
        splits: "train" and/or "test" -> (images uint8 (N, 1, 28, 28), labels (N,) in 0..255).
        compressed: write ``.gz`` files (as distributed) or plain ones.
    """
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compressed else ""
    for split, (images, labels) in splits.items():
        prefix = SPLIT_PREFIXES[split]
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images.reshape(len(images), 28, 28))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8))


def write_idx_dataset(
    folder: Path, n_train: int, n_test: int, seed: int = 0, compressed: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write random MNIST-style train and test splits into ``folder``.

    Returns:
        split -> (images uint8 (N, 1, 28, 28), labels int64 (N,) in 0..9): what ``common.datasets.load`` must give.
    """
    rng = np.random.default_rng(seed)
    splits = {
        split: (rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.int64))
        for split, n in (("train", n_train), ("test", n_test))
    }
    save_idx_dataset(folder, splits, compressed)
    return splits
