"""Re-exports :mod:`common.fixtures.write_images`, and a writer of unreadable image files for the fault tests."""

from __future__ import annotations

from pathlib import Path

from common.fixtures.write_images import (
    ODIN_FOLDERS,
    ODIN_SUFFIXES,
    MVTecImage,
    smooth_images,
    write_celeba,
    write_image,
    write_image_folder,
    write_mvtec_category,
    write_odin_set,
    write_textures,
)

__all__ = [
    "ODIN_FOLDERS",
    "ODIN_SUFFIXES",
    "MVTecImage",
    "smooth_images",
    "write_celeba",
    "write_garbage",
    "write_image",
    "write_image_folder",
    "write_mvtec_category",
    "write_odin_set",
    "write_textures",
]


def write_garbage(path: Path) -> Path:
    """Write bytes that no image decoder accepts to ``path`` (an "unreadable image"); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image file\x00\x01\x02")
    return path
