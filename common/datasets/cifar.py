"""CIFAR-10 and CIFAR-100, "python version": the pickled batches Krizhevsky distributes.

Each batch file is a Python 2 cPickle of a dict with byte-string keys: ``b"data"``, a uint8 numpy array
(N, 3072) whose rows hold the red, green and blue 32×32 planes one after the other, each row-major; labels
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100) as lists of ints; and
``b"batch_label"``, ``b"filenames"``. See https://www.cs.toronto.edu/~kriz/cifar.html.

Unpickling can run arbitrary code, so the batches are read with an unpickler that only resolves the names a
uint8 array and byte strings need, whatever the pickle protocol: ``_reconstruct``, ``ndarray`` and ``dtype``
(protocols 2 to 4, as distributed), ``_frombuffer`` (protocol 5), and ``_codecs.encode`` (how Python 3 writes
byte strings at protocol 2). The last two are replaced by functions that accept only what those pickles hold
(a latin-1 string; a buffer, a dtype without Python objects, a shape); any other name makes the file a DataError.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.datasets import ImageSet
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError
from common.safe_pickle import restricted_unpickler

IMAGE_SHAPE = (3, 32, 32)
"""Channels (red, green, blue), rows, columns of one CIFAR image."""

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_CLASSES = 10

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_LABEL_KEYS = {"fine": b"fine_labels", "coarse": b"coarse_labels"}
CIFAR100_CLASSES = {"fine": 100, "coarse": 20}

_ARRAY_RECONSTRUCT = np.empty(0).__reduce__()[0]


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle of ``bytes`` calls it: a str and "latin1", nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _array_from_buffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's ``_frombuffer`` (protocol-5 arrays) restricted to plain buffers, dtypes without objects and shapes."""
    if (
        not isinstance(buffer, (bytes, bytearray, memoryview, pickle.PickleBuffer))
        or not isinstance(dtype, np.dtype)
        or dtype.hasobject
        or not isinstance(shape, tuple)
        or not all(isinstance(size, int) and size >= 0 for size in shape)
        or order not in ("C", "F")
    ):
        raise pickle.UnpicklingError("refusing a protocol-5 array that is not a plain numeric buffer")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


_ALLOWED_GLOBALS = {
    # Python 2 / numpy 1 spell the module numpy.core.multiarray (as in the distributed files), numpy 2 numpy._core.
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.numeric", "_frombuffer"): _array_from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _array_from_buffer,
    ("_codecs", "encode"): _latin1_bytes,
}


def read_cifar10(folder: Path, split: str) -> ImageSet:
    """Read CIFAR-10 split ``split`` ("train": data_batch_1..5, "test": test_batch) from
    ``folder/cifar-10-batches-py``.

    Returns:
        Images uint8 (N, 3, 32, 32), channels red, green, blue, and labels int64 (N,) in 0..9.
    """
    if split not in CIFAR10_BATCHES:
        raise ValueError(f"CIFAR-10 has splits {', '.join(CIFAR10_BATCHES)}, not {split!r}")
    paths = [folder / CIFAR10_FOLDER / name for name in CIFAR10_BATCHES[split]]
    _require_files(paths, "cifar10", folder)
    batches = [_read_batch(path, b"labels", CIFAR10_CLASSES) for path in paths]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))


def read_cifar100(folder: Path, split: str, label_kind: str = "fine") -> ImageSet:
    """Read CIFAR-100 split ``split`` ("train" or "test") from ``folder/cifar-100-python``.

    Args:
        folder: the dataset folder holding ``cifar-100-python/``.
        split: "train" or "test" (the file of that name).
        label_kind: "fine" (100 classes) or "coarse" (20 superclasses).

    Returns:
        Images uint8 (N, 3, 32, 32), channels red, green, blue, and labels int64 (N,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-100 has splits train, test, not {split!r}")
    if label_kind not in CIFAR100_LABEL_KEYS:
        raise ValueError(f"label_kind must be one of {', '.join(CIFAR100_LABEL_KEYS)}, not {label_kind!r}")
    path = folder / CIFAR100_FOLDER / split
    _require_files([path], "cifar100", folder)
    images, labels = _read_batch(path, CIFAR100_LABEL_KEYS[label_kind], CIFAR100_CLASSES[label_kind])
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))


# Resolves only the numpy names needed to rebuild arrays (see module docstring).
_ArrayOnlyUnpickler = restricted_unpickler(_ALLOWED_GLOBALS, "only numpy arrays are allowed")


def _require_files(paths: list[Path], dataset: str, folder: Path) -> None:
    """Raise a MissingDataError for the first of ``paths`` that does not exist (before any is read)."""
    for path in paths:
        if not path.is_file():
            raise MissingDataError(path, how_to_get(dataset, folder))


def _read_batch(path: Path, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch file, validated."""
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(path, f"expected a dict with keys b'data' and {label_key!r}, found {found}")
    data, labels = batch[b"data"], np.asarray(batch[label_key])
    row_size = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row_size:
        raise DataError(path, f"b'data' should be a uint8 array (N, {row_size}), found {_describe(data)}")
    if labels.shape != (len(data),) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(path, f"{label_key!r} should hold {len(data)} integers, found {_describe(labels)}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(path, f"{label_key!r} should lie in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def _unpickle(path: Path) -> Any:
    """The object pickled in ``path`` (byte strings stay ``bytes``), or a DataError if it cannot be decoded."""
    with path.open("rb") as file:
        try:
            return _ArrayOnlyUnpickler(file, encoding="bytes").load()
        # A damaged pickle can fail with almost any exception type (EOFError, UnpicklingError, ValueError, ...).
        except Exception as error:
            raise DataError(path, f"not a readable CIFAR python pickle ({type(error).__name__}: {error})") from error


def _describe(value: Any) -> str:
    """Short description of a decoded value for error messages: dtype and shape of arrays, else the type."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
