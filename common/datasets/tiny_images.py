"""80 Million Tiny Images (Torralba, Fergus & Freeman, 2008) and the two sets cut from it, memory-mapped.

Readers registered in :mod:`common.datasets` (all three sets are out-of-distribution only, label -1):

- :func:`read_tiny_images`: the raw binary ``tiny_images.bin`` (InvGlow's general distribution, MCHAD's outliers).
- :func:`read_tiny_subset`: the chunked random subset written by :mod:`common.tiny_builder`
  (``python invglow/create_tiny.py``); its file format is documented there.
- :func:`read_tiny_300k`: ``300K_random_images.npy`` from Hendrycks et al.'s outlier-exposure code, an
  (N, 32, 32, 3) uint8 array (MCHAD's G-MCHAD outliers).

Binary format: 79,302,017 images of 3072 bytes each, no header. Every image is MATLAB's column-major
(32, 32, 3) array, so byte ``row + 32 * col + 1024 * channel`` holds pixel (row, col, channel). A C-order view of
shape (N, 3, 32, 32) is therefore indexed [n, channel, col, row], and swapping its last two axes gives
(N, C, H, W) without copying anything.

Labels are returned as one -1 expanded (stride 0) to N rows: materialising 79M int64 would take 634 MB.
Indexing such a tensor gives an ordinary one; call ``.clone()`` before writing to it in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from common.datasets import ImageSet, plain_name_problem
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError

IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32
TINY_IMAGES_COUNT = 79_302_017
BINARY_NAME = "tiny_images.bin"
TINY_300K_NAME = "300K_random_images.npy"
SUBSET_NAME = "tiny_subset"


class SubsetFiles(NamedTuple):
    """The three files of a subset written by :mod:`common.tiny_builder`, named after the subset."""

    images: Path
    indices: Path
    manifest: Path


def subset_files(folder: Path, name: str) -> SubsetFiles:
    """Paths of subset ``name`` in ``folder``: ``<name>.npy``, ``<name>_indices.npy`` and ``<name>.json``.

    Raises:
        ValueError: ``name`` is not a plain file name (it would put the files outside ``folder``).
    """
    problem = plain_name_problem(name)
    if problem is not None:
        raise ValueError(f"subset name {name!r}: {problem}")
    return SubsetFiles(folder / f"{name}.npy", folder / f"{name}_indices.npy", folder / f"{name}.json")


def binary_image_count(path: Path, expected_count: int | None = TINY_IMAGES_COUNT) -> int:
    """Number of images in the Tiny Images binary ``path``, after checking its size.

    Args:
        path: the binary (``tiny_images.bin`` or a file in the same format).
        expected_count: number of images it must hold; None accepts any whole number of images.

    Raises:
        MissingDataError: the file does not exist.
        DataError: its size is not a whole number of images, is zero, or differs from ``expected_count``.
    """
    if not path.is_file():
        raise MissingDataError(path, how_to_get("tiny-images", path.parent))
    size = path.stat().st_size
    expected = "" if expected_count is None else f"; expected {expected_count * IMAGE_BYTES:,} bytes"
    if size % IMAGE_BYTES or size == 0:
        raise DataError(path, f"{size:,} bytes is not a whole, non-zero number of {IMAGE_BYTES}-byte images{expected}")
    count = size // IMAGE_BYTES
    if expected_count is not None and count != expected_count:
        raise DataError(path, f"holds {count:,} images ({size:,} bytes){expected} ({expected_count:,} images)")
    return count


def column_major_to_nchw(raw: np.ndarray) -> np.ndarray:
    """View raw binary records (n, 3072) uint8 as images (n, 3, 32, 32), without copying."""
    return raw.reshape(-1, *IMAGE_SHAPE).transpose(0, 1, 3, 2)


def read_tiny_images(folder: Path, split: str, expected_count: int | None = TINY_IMAGES_COUNT) -> ImageSet:
    """Memory-map ``<folder>/tiny_images.bin`` as uint8 images (N, 3, 32, 32) and labels -1.

    Nothing is read until images are indexed: the tensor is a strided view of a copy-on-write mapping of the file.

    Args:
        folder: folder holding the binary.
        split: ``"all"`` (the binary has no splits).
        expected_count: number of images the binary must hold (79,302,017); None accepts any.
    """
    path = folder / BINARY_NAME
    count = binary_image_count(path, expected_count)
    raw = np.memmap(path, dtype=np.uint8, mode="c", shape=(count, IMAGE_BYTES))
    return ImageSet(torch.from_numpy(column_major_to_nchw(raw)), _ood_labels(count))


def read_tiny_subset(folder: Path, split: str, name: str = SUBSET_NAME) -> ImageSet:
    """Memory-map subset ``name`` written by :func:`common.tiny_builder.build_tiny_subset` in ``folder``.

    Args:
        folder: the builder's output folder.
        split: ``"train"``; a train/test split by chunk is the caller's choice (chunk k is rows
            ``[k * chunk_size, (k + 1) * chunk_size)``, ``chunk_size`` in the manifest).
        name: the subset's name (``tiny_subset``, or ``tiny_subset_exclude_cifar`` for the CIFAR-free variant).
    """
    files = subset_files(folder, name)
    if not files.manifest.is_file():
        raise MissingDataError(files.manifest, how_to_get("tiny-images-subset", folder))
    count = read_manifest(files.manifest)["count"]
    records = _load_images_npy(files.images, (IMAGE_BYTES,), "tiny-images-subset")
    if len(records) != count:
        raise DataError(files.images, f"holds {len(records):,} images; its manifest says {count:,}")
    return ImageSet(torch.from_numpy(column_major_to_nchw(records)), _ood_labels(count))


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest ``<name>.json`` of a subset, checked to be a JSON object whose ``count`` is a whole number.

    Raises:
        DataError: the file is not JSON (e.g. cut short), or has no non-negative integer ``count``.
    """
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(path, f"is not a readable JSON manifest ({error}); rebuild the subset") from error
    count = manifest.get("count") if isinstance(manifest, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise DataError(
            path, f"expected a JSON object with an image count (\"count\": N, N >= 0), found {_abridged(manifest)}"
        )
    return manifest


def _abridged(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_tiny_300k(folder: Path, split: str) -> ImageSet:
    """Memory-map ``<folder>/300K_random_images.npy`` (N, 32, 32, 3) uint8 as images (N, 3, 32, 32), labels -1.

    Args:
        folder: folder holding the file.
        split: ``"train"`` (the file has no splits).
    """
    images = _load_images_npy(folder / TINY_300K_NAME, (32, 32, 3), "tiny-images-300k")
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2), _ood_labels(len(images)))


def _load_images_npy(path: Path, image_shape: tuple[int, ...], dataset: str) -> np.ndarray:
    """Memory-map (copy-on-write) the .npy file ``path`` of ``dataset``, checking it is uint8 (N, *image_shape)."""
    if not path.is_file():
        raise MissingDataError(path, how_to_get(dataset, path.parent))
    try:
        array = np.load(path, mmap_mode="c")
    except (ValueError, OSError) as error:
        raise DataError(path, f"is not a readable .npy file ({error})") from error
    if array.dtype != np.uint8 or array.shape[1:] != image_shape:
        expected = ", ".join(map(str, image_shape))
        raise DataError(path, f"holds {array.dtype} {array.shape}; expected uint8 (N, {expected})")
    return array


def _ood_labels(count: int) -> torch.Tensor:
    """Labels -1 for ``count`` out-of-distribution images: one int64 expanded to (count,), stride 0."""
    return torch.full((1,), -1, dtype=torch.int64).expand(count)
