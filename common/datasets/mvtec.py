"""MVTec AD (Bergmann et al., CVPR 2019) read from its distributed folder tree, as Gaussian AD (Rippel et al.) uses it.

Layout under ``folder`` = ``<data root>/mvtec/`` (``mvtec_anomaly_detection.tar.xz`` extracted)::

    <category>/train/good/*.png
    <category>/test/<good | defect type>/*.png
    <category>/ground_truth/<defect type>/<image stem>_mask.png

Like the original code (ORippler/gaussian-ad-mvtec, gaussian_ad.md §1.4 and §2.3): images are read with OpenCV as
3-channel (so the grey categories grid, screw and zipper get three equal channels) and converted to RGB; defect-type
folders and file names are sorted; label 0 = "good", 1 = any defect; each defective image's mask is found by its
stem (anomalib instead pairs sorted lists by position); good images get all-zero masks. With ``size`` the images
are resized to ``size × size`` with bilinear interpolation (``cv2.INTER_LINEAR``, what albumentations' ``Resize``
calls), aspect ratio not kept and no crop (Gaussian AD uses the EfficientNet's native resolution, e.g. 380 for
B4), and masks with nearest neighbour. Masks are binarised to 0/1.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from common.datasets import ImageSet
from common.datasets.image_folders import (
    check_positive,
    image_directory,
    list_image_files,
    read_grey,
    read_images,
    resize,
    stack_nchw,
)
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
GOOD = "good"
SPLITS = ("train", "test")


class MVTecSplit(NamedTuple):
    """One split of one MVTec AD category, in sorted file order.

    Attributes:
        images: uint8 RGB (N, 3, H, W).
        labels: int64 (N,): 0 good, 1 defective.
        masks: uint8 (N, 1, H, W): 1 on the defect, 0 elsewhere (all 0 for good images).
        defect_types: per image, its folder name ("good" or the defect type).
        paths: per image, its file.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    defect_types: list[str]
    paths: list[Path]


def read_mvtec(folder: Path, category: str, split: str, size: int | None = None) -> MVTecSplit:
    """Read split ``"train"`` (good images only) or ``"test"`` of MVTec AD ``category`` below ``folder``.

    Args:
        folder: the extracted MVTec AD folder, holding one sub-folder per category.
        category: one of :data:`MVTEC_CATEGORIES`.
        split: ``"train"`` or ``"test"``.
        size: resize images (bilinear) and masks (nearest) to ``size × size``; None keeps the native size.

    Raises:
        ValueError: unknown category or split, or a size that is not positive.
        MissingDataError: the category or split folder, or a defective image's mask, is missing.
        DataError: an image or mask cannot be decoded, a folder holds no image, or a mask's size differs from
            its image's.
    """
    paths, defect_types = _image_files(folder, category, split)
    check_positive(size=size)
    images = _read_images(paths, size, folder / category / split)
    shape = (images.shape[2], images.shape[3])
    masks = (
        _mask(folder / category, path, defect_type, shape, resized=size is not None)
        for path, defect_type in zip(paths, defect_types, strict=True)
    )
    return MVTecSplit(
        images,
        _labels(defect_types),
        stack_nchw(masks, len(paths), folder / category / "ground_truth"),
        defect_types,
        paths,
    )


def read_mvtec_images(folder: Path, split: str, category: str, size: int | None = None) -> ImageSet:
    """Registry reader: the images and labels (0 good, 1 defective) of :func:`read_mvtec`, without the masks."""
    paths, defect_types = _image_files(folder, category, split)
    check_positive(size=size)
    return ImageSet(_read_images(paths, size, folder / category / split), _labels(defect_types))


def _image_files(folder: Path, category: str, split: str) -> tuple[list[Path], list[str]]:
    """The sorted image files of one split and each one's defect-type folder name."""
    if category not in MVTEC_CATEGORIES:
        raise ValueError(f"unknown MVTec AD category {category!r}; categories: {', '.join(MVTEC_CATEGORIES)}")
    if split not in SPLITS:
        raise ValueError(f"MVTec AD has no split {split!r}; splits: {', '.join(SPLITS)}")
    split_directory = image_directory(folder / category / split, how_to_get("mvtec", folder))
    folders = [GOOD] if split == "train" else sorted(p.name for p in split_directory.iterdir() if p.is_dir())
    if not folders:
        raise DataError(split_directory, "holds no defect-type folder")
    paths: list[Path] = []
    defect_types: list[str] = []
    for defect_type in folders:
        files = list_image_files(image_directory(split_directory / defect_type, how_to_get("mvtec", folder)))
        paths += files
        defect_types += [defect_type] * len(files)
    return paths, defect_types


def _read_images(paths: list[Path], size: int | None, source: Path) -> torch.Tensor:
    def shrink(image: np.ndarray) -> np.ndarray:
        return image if size is None else resize(image, size, size, cv2.INTER_LINEAR)

    return read_images(paths, shrink, source)


def _labels(defect_types: list[str]) -> torch.Tensor:
    return torch.tensor([int(defect_type != GOOD) for defect_type in defect_types], dtype=torch.int64)


def _mask(
    category_folder: Path, image_path: Path, defect_type: str, shape: tuple[int, int], resized: bool
) -> np.ndarray:
    """The 0/1 mask of one image with the (H, W) ``shape`` of the images: zeros for good images, else its file.

    A mask file of another size is an error for native-size images and resized (nearest) when ``resized``.
    """
    if defect_type == GOOD:
        return np.zeros(shape, dtype=np.uint8)
    mask_path = category_folder / "ground_truth" / defect_type / f"{image_path.stem}_mask.png"
    if not mask_path.is_file():
        raise MissingDataError(mask_path, f"It is the mask of defective image {image_path}.")
    mask = read_grey(mask_path)
    if mask.shape != shape and not resized:
        raise DataError(mask_path, f"mask is {mask.shape[0]}×{mask.shape[1]} but its image is {shape[0]}×{shape[1]}")
    return (resize(mask, *shape, cv2.INTER_NEAREST) > 0).astype(np.uint8)
