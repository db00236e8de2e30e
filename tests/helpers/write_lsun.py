"""Write LSUN scene validation sets as the release unpacks them: ``<root>/lsun/<category>_val_lmdb/`` LMDB files.

Each environment is written with the ``lmdb`` package (``data.mdb`` + ``lock.mdb``); keys are image ids (40 hex
digits, like the release's), values encoded images, WebP as in the release. WebP is written lossless by default
(OpenCV: quality above 100), so a reader must give back the exact pixels; ``quality`` ≤ 100 writes lossy WebP.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import lmdb
import numpy as np

LOSSLESS = 101  # OpenCV writes lossless WebP for a quality above 100


def lsun_folder(root: Path, category: str) -> Path:
    """``root/lsun/<category>_val_lmdb``: where the reader looks for a category."""
    return root / "lsun" / f"{category}_val_lmdb"


def image_key(category: str, index: int) -> bytes:
    """A release-like key: 40 hex digits (sha1 of the category and index), so write order is not key order."""
    return hashlib.sha1(f"{category}/{index}".encode()).hexdigest().encode()


def encode(image: np.ndarray, suffix: str = ".webp", quality: int = LOSSLESS) -> bytes:
    """uint8 RGB (H, W, 3) or grey (H, W) ``image`` encoded as ``suffix`` (WebP at ``quality``, or PNG/JPEG)."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    parameters = [cv2.IMWRITE_WEBP_QUALITY, quality] if suffix == ".webp" else []
    ok, encoded = cv2.imencode(suffix, pixels, parameters)
    if not ok:
        raise OSError(f"OpenCV could not encode an image as {suffix}")
    return encoded.tobytes()


def write_lsun_values(root: Path, category: str, values: Mapping[bytes, bytes]) -> Path:
    """Write the LMDB environment of ``category`` holding ``values`` (key → raw value); returns its folder."""
    folder = lsun_folder(root, category)
    folder.mkdir(parents=True, exist_ok=True)
    environment = lmdb.open(str(folder), map_size=1 << 26)
    with environment, environment.begin(write=True) as transaction:
        for key, value in values.items():
            transaction.put(key, value)
    return folder


def write_lsun_category(
    root: Path, category: str, images: Sequence[np.ndarray], quality: int = LOSSLESS
) -> list[np.ndarray]:
    """Write ``images`` as WebP values of ``category`` under release-like keys.

    Returns:
        The images in key order, the order a reader returns them.
    """
    keyed = {image_key(category, index): image for index, image in enumerate(images)}
    write_lsun_values(root, category, {key: encode(image, quality=quality) for key, image in keyed.items()})
    return [keyed[key] for key in sorted(keyed)]
