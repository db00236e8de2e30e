"""IDX files (MNIST, Fashion-MNIST): the format LeCun et al. distribute MNIST in, gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
int32 per dimension, then the values in row-major (C) order, big-endian. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from common.datasets import ImageSet
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code -> element type (multi-byte values are big-endian)."""

IMAGE_SIZE = 28
"""MNIST and Fashion-MNIST images are 28×28 grey."""

IDX_DATASETS = ("mnist", "fashion-mnist")
"""Registered datasets read by :func:`read_idx_dataset`; a folder of that name gets its download hint."""

_SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
CHUNK_BYTES = 1 << 20
MAX_DEFLATE_RATIO = 1032  # deflate's largest expansion: 258 bytes per 2-bit code, ~1032:1 (zlib's tech notes)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, plain or gzipped (name ending in ``.gz``), into an array of its header's shape.

    Plain files are memory-mapped copy-on-write (nothing is read until used; writes never reach the file).
    Multi-byte types keep their big-endian byte order.

    Raises:
        MissingDataError: the file does not exist.
        DataError: wrong magic number, unknown type code, or a size that does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(path)
    if path.suffix == ".gz":
        return _read_gzipped_idx(path)
    with path.open("rb") as file:
        dtype, shape = _read_header(file, path)
        header_size = file.tell()
    _check_data_size(path, dtype, shape, path.stat().st_size - header_size)
    return np.memmap(path, dtype=dtype, mode="c", offset=header_size, shape=shape)


def read_idx_dataset(folder: Path, split: str) -> ImageSet:
    """Read MNIST or Fashion-MNIST split ``split`` ("train" or "test") from ``folder`` as distributed.

    Reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, uncompressed if present (memory-mapped), else
    the ``.gz`` file. Hints for missing files name the dataset after the folder (see ``IDX_DATASETS``).

    Returns:
        Images uint8 (N, 1, 28, 28) and labels int64 (N,).
    """
    if split not in _SPLIT_PREFIXES:
        raise ValueError(f"IDX datasets have splits {', '.join(_SPLIT_PREFIXES)}, not {split!r}")
    prefix = _SPLIT_PREFIXES[split]
    images_path = _existing_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _existing_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            images_path,
            f"expected unsigned bytes of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"found {images.dtype} of shape {images.shape}",
        )
    if labels.dtype != np.uint8 or labels.shape != (len(images),):
        raise DataError(
            labels_path,
            f"expected {len(images)} unsigned-byte labels (one per image in {images_path.name}), "
            f"found {labels.dtype} of shape {labels.shape}",
        )
    return ImageSet(
        torch.from_numpy(images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)), torch.from_numpy(labels.astype(np.int64))
    )


def _existing_idx_file(folder: Path, name: str) -> Path:
    """``folder/name`` if it exists, else ``folder/name.gz`` if that exists, else a MissingDataError."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    hint = how_to_get(folder.name, folder) if folder.name in IDX_DATASETS else "Place the IDX files there."
    hint = f"(Also read uncompressed, as {name}.) {hint}"
    raise MissingDataError(folder / f"{name}.gz", hint)


def _read_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Parse the magic number and dimensions at the start of ``stream``; leave it at the first value."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES or magic[3] == 0:
        codes = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
        raise DataError(
            path,
            f"not an IDX file: magic number {magic.hex()!r} should be two zero bytes, "
            f"a type code ({codes}) and a non-zero number of dimensions",
        )
    ndim = magic[3]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(path, f"truncated header: {ndim} dimensions need {4 * ndim} bytes, found {len(dims)}")
    shape = tuple(int(size) for size in np.frombuffer(dims, dtype=">u4"))
    return IDX_TYPES[magic[2]], shape


def _read_gzipped_idx(path: Path) -> np.ndarray:
    """Decompress a ``.gz`` IDX file into a new (writable) array, checking its size against the header.

    The stream is inflated chunk by chunk and never beyond the size the header promises (plus one byte, to notice
    a longer stream), so a small file that inflates to far more than its header says costs no memory; a header
    promising more than deflate can produce from the file's size is refused before anything is inflated.
    """
    with gzip.open(path, "rb") as stream:
        try:
            dtype, shape = _read_header(stream, path)
            expected = math.prod(shape) * dtype.itemsize
            limit = MAX_DEFLATE_RATIO * path.stat().st_size + CHUNK_BYTES
            if expected > limit:
                raise DataError(
                    path,
                    f"header promises {expected:,} data bytes ({dtype}, shape {shape}), more than a gzip file of "
                    f"{path.stat().st_size:,} bytes can hold (truncated or corrupt)",
                )
            data = bytearray()
            while len(data) <= expected and (chunk := stream.read(min(CHUNK_BYTES, expected + 1 - len(data)))):
                data += chunk
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(path, f"corrupt or truncated gzip stream ({error})") from error
    if len(data) > expected:
        raise DataError(
            path, f"header promises {expected} data bytes ({dtype}, shape {shape}), but the stream holds more"
        )
    _check_data_size(path, dtype, shape, len(data))
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _check_data_size(path: Path, dtype: np.dtype, shape: tuple[int, ...], found: int) -> None:
    """Raise a DataError unless ``found`` data bytes are exactly what the header promises."""
    expected = math.prod(shape) * dtype.itemsize
    if found != expected:
        raise DataError(path, f"header promises {expected} data bytes ({dtype}, shape {shape}), found {found}")
