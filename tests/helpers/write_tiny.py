"""Re-exports :mod:`common.fixtures.write_tiny`, and the decoder of the index its synthetic images carry."""

from __future__ import annotations

import numpy as np

from common.fixtures.write_tiny import synthetic_tiny_images, write_index_file, write_tiny_300k, write_tiny_binary

__all__ = ["decode_tiny_index", "synthetic_tiny_images", "write_index_file", "write_tiny_300k", "write_tiny_binary"]


def decode_tiny_index(image_hwc: np.ndarray) -> int:
    """The index written into pixel (0, 0) of a :func:`synthetic_tiny_images` image (32, 32, 3)."""
    low, middle, high = (int(value) for value in image_hwc[0, 0])
    return low + (middle << 8) + (high << 16)
