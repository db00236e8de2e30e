"""Writers of small Tiny Images files in the real formats: the raw binary, CIFAR index lists, the 300K .npy."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def synthetic_tiny_images(indices: Iterable[int]) -> np.ndarray:
    """Images (n, 32, 32, 3) uint8 HWC that encode their own index.

    Pixel (row, col, channel) holds ``(5 * row + 11 * col + 101 * channel) % 256`` (so any transposition shows),
    except pixel (0, 0), whose three channels hold the index's bytes, least significant first.
    """
    indices = np.asarray(list(indices), dtype=np.int64)
    row, col, channel = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    pattern = ((5 * row + 11 * col + 101 * channel) % 256).astype(np.uint8)
    images = np.repeat(pattern[None], len(indices), axis=0)
    images[:, 0, 0, :] = (indices[:, None] >> np.array([0, 8, 16])) & 255
    return images


def decode_tiny_index(image_hwc: np.ndarray) -> int:
    """The index written into pixel (0, 0) of a :func:`synthetic_tiny_images` image (32, 32, 3)."""
    low, middle, high = (int(value) for value in image_hwc[0, 0])
    return low + (middle << 8) + (high << 16)


def write_tiny_binary(path: Path, n_images: int) -> Path:
    """Write ``n_images`` synthetic images as ``tiny_images.bin`` does: 3072 bytes each, MATLAB column-major."""
    with open(path, "wb") as handle:
        for image in synthetic_tiny_images(range(n_images)):
            handle.write(image.tobytes(order="F"))
    return path


def write_index_file(path: Path, one_based_indices: Iterable[int]) -> Path:
    """Write a CIFAR index list like ``80mn_cifar_idxs.txt``: one 1-based index per line, 0 = not found."""
    path.write_text("".join(f"{index}\n" for index in one_based_indices))
    return path


def write_tiny_300k(path: Path, images_hwc: np.ndarray) -> Path:
    """Write images (N, 32, 32, 3) uint8 as ``300K_random_images.npy``."""
    np.save(path, images_hwc)
    return path
