"""Folders of image files used as out-of-distribution sets (ODIN LSUN/TinyImageNet, iSUN, DTD, CelebA).

Every reader has the registry signature ``(folder, split, **options) -> ImageSet`` with ``folder`` =
``<data root>/<name>/`` holding the archive extracted as its owners distribute it:

- ``lsun-crop``: ODIN ``LSUN.tar.gz`` → ``LSUN/test/*.jpg``;
- ``lsun-resize``: ODIN ``LSUN_resize.tar.gz`` → ``LSUN_resize/*.jpg``;
- ``tinyimagenet-crop``: ODIN ``Imagenet.tar.gz`` → ``Imagenet/test/*.jpg``;
- ``tinyimagenet-resize``: ODIN ``Imagenet_resize.tar.gz`` → ``Imagenet_resize/*.jpg``;
- ``isun``: ODIN ``iSUN.tar.gz`` → ``iSUN/iSUN_patches/*.jpeg``;
- ``textures``: DTD ``dtd-r1.0.1.tar.gz`` → ``dtd/images/<class>/*.jpg``;
- ``celeba``: ``img_align_celeba.zip`` → ``img_align_celeba/*.jpg``, plus ``list_eval_partition.txt``.

One extra nesting level is accepted: if the listed folder's only entry is a folder of the same name (as in
``LSUN_resize/LSUN_resize/``, the layout pytorch-ood expects), the images are read from there.

Preprocessing follows the papers that use each set (see ``../shared/reference``):

- ODIN sets and Textures, used by MCHAD: its test transform is ``ToTensor(); Resize((32, 32))`` on the float tensor
  (torchvision 0.12: bilinear, half-pixel centres, *no* antialiasing), so every image is stretched to
  ``size × size`` without cropping and without keeping the aspect ratio. We use ``cv2.INTER_LINEAR``, the same
  sampling, on the uint8 image; results agree with torch's float resize to within one grey level (we must return
  uint8, the original fed floats). Images already ``size × size`` are left untouched.
- CelebA, used by InvGlow as an OOD set: the original used pre-made 32×32 PNGs whose script is missing. We take the
  central square (side = shorter image side, or ``crop``) and shrink it with ``cv2.INTER_AREA`` (antialiased, close
  to PIL's bilinear downscaling; PIL and OpenCV results differ by a few grey levels).

Images are read with OpenCV (``IMREAD_COLOR``: grey files become three equal channels) and converted BGR → RGB.
Files are taken in sorted order of their path below the image folder, so results are deterministic; ``limit``
keeps the first ``limit`` of them. All labels are -1 (out-of-distribution only).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from common.datasets import ImageSet, plain_name_problem
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_SIZE = 32  # MCHAD's Resize((32, 32)) test transform (mchad.md §2.2); InvGlow's 32×32 CelebA
CELEBA_PARTITIONS = {"train": 0, "valid": 1, "test": 2}  # list_eval_partition.txt codes

Transform = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------------- shared pieces
def image_directory(directory: Path, how_to_get_it: str) -> Path:
    """``directory``, or ``directory / directory.name`` if that folder is its only entry (one extra nesting level).

    Raises:
        MissingDataError: ``directory`` does not exist; ``how_to_get_it`` is the hint in the message.
    """
    if not directory.is_dir():
        raise MissingDataError(directory, how_to_get_it)
    entries = [entry for entry in directory.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name == directory.name:
        return entries[0]
    return directory


def list_image_files(directory: Path, pattern: str = "*", limit: int | None = None) -> list[Path]:
    """Image files matching ``pattern`` below ``directory`` (e.g. ``"*/*"`` for class folders), sorted by path.

    Hidden files and files without an image suffix (.jpg, .jpeg, .png, any case) are skipped.

    Raises:
        DataError: no image file matches, or one is a symbolic link to nothing (named in the message).
        ValueError: ``limit`` is not positive.
    """
    check_positive(limit=limit)
    candidates = [
        path
        for path in directory.glob(pattern)
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
    for path in candidates:
        _refuse_dangling_link(path)
    files = sorted(path for path in candidates if path.is_file())
    if not files:
        suffixes = ", ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
        raise DataError(directory, f"no image files ({suffixes}) matching {pattern!r}")
    return files[:limit]


def check_positive(**options: int | None) -> None:
    """Raise ValueError naming the first option (a size or count) that is given but not a positive integer."""
    for name, value in options.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def read_rgb(path: Path) -> np.ndarray:
    """One image file as uint8 RGB (H, W, 3); grey files get three equal channels.

    Raises:
        MissingDataError: the file does not exist.
        DataError: OpenCV cannot decode it.
    """
    return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_grey(path: Path) -> np.ndarray:
    """One image file as uint8 grey (H, W) (used for masks).

    Raises:
        MissingDataError: the file does not exist.
        DataError: OpenCV cannot decode it.
    """
    return _imread(path, cv2.IMREAD_GRAYSCALE)


def _imread(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        _refuse_dangling_link(path)
        raise MissingDataError(path)
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DataError(path, "cannot be decoded as an image (truncated, corrupt or not an image file)")
    return image


def _refuse_dangling_link(path: Path) -> None:
    """A DataError if ``path`` is a symbolic link whose target does not exist (an image a reader must not skip)."""
    if path.is_symlink() and not path.exists():
        raise DataError(path, f"is a symbolic link to {os.readlink(path)!r}, which does not exist (a missing image)")


def resize(image: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) resized to (height, width) with an OpenCV interpolation flag.

    ``cv2.INTER_LINEAR`` samples like torch's bilinear resize without antialiasing (half-pixel centres);
    ``cv2.INTER_AREA`` averages the covered source pixels (antialiased downscaling); ``cv2.INTER_NEAREST`` takes
    the source pixel ``floor(i · H / height)`` (what albumentations does for masks). Returns ``image`` itself if
    the size already matches.
    """
    if image.shape[:2] == (height, width):
        return image
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return resized.reshape(height, width, *image.shape[2:])


def resize_antialiased(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` resized to (height, width) the closest OpenCV way to PIL's bilinear resize (torchvision ``Resize``).

    PIL antialiases when it shrinks (a triangle filter stretched to the scale) and samples plain bilinearly when it
    enlarges, one axis at a time. We shrink with ``cv2.INTER_AREA`` (averages the covered source pixels: a box
    filter, so values differ from PIL's by a few grey levels on textured images) and enlarge with
    ``cv2.INTER_LINEAR`` (the same half-pixel bilinear sampling as PIL); an image shrunk along one axis and
    enlarged along the other is resized one axis at a time, width first, as PIL does. Returns ``image`` itself if
    the size already matches.
    """
    image_height, image_width = image.shape[:2]
    shrinks = height < image_height or width < image_width
    enlarges = height > image_height or width > image_width
    if shrinks and enlarges:
        return resize_antialiased(resize_antialiased(image, image_height, width), height, width)
    return resize(image, height, width, cv2.INTER_LINEAR if enlarges else cv2.INTER_AREA)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The central (height, width) window of ``image``; offsets ``(H - height) // 2``, ``(W - width) // 2``.

    Raises:
        ValueError: the image is smaller than the window.
    """
    image_height, image_width = image.shape[:2]
    if height > image_height or width > image_width:
        raise ValueError(f"cannot crop {height}×{width} from an image of {image_height}×{image_width}")
    top, left = (image_height - height) // 2, (image_width - width) // 2
    return image[top : top + height, left : left + width]


def stack_nchw(images: Iterable[np.ndarray], count: int, source: Path) -> torch.Tensor:
    """Stack ``count`` uint8 arrays (H, W) or (H, W, C) of one size into a uint8 tensor (N, C, H, W).

    Raises:
        DataError: the arrays differ in shape (named after ``source``).
    """
    stacked: np.ndarray | None = None
    for index, image in enumerate(images):
        channels_last = image if image.ndim == 3 else image[:, :, None]
        if stacked is None:
            height, width, channels = channels_last.shape
            stacked = np.empty((count, channels, height, width), dtype=np.uint8)
        if channels_last.shape != (stacked.shape[2], stacked.shape[3], stacked.shape[1]):
            raise DataError(
                source,
                f"image {index} has shape {channels_last.shape} (H, W, C) but image 0 has "
                f"{(stacked.shape[2], stacked.shape[3], stacked.shape[1])}; pass size=... to resize them to one size",
            )
        stacked[index] = channels_last.transpose(2, 0, 1)
    if stacked is None:
        raise DataError(source, "no images to stack")
    return torch.from_numpy(stacked)


def read_images(paths: Sequence[Path], transform: Transform, source: Path) -> torch.Tensor:
    """Read ``paths`` as RGB, apply ``transform`` to each and stack them into uint8 (N, 3, H, W).

    Raises:
        DataError: a file cannot be read or ``transform`` rejects it (the message names the file).
    """

    def transformed() -> Iterable[np.ndarray]:
        for path in paths:
            try:
                yield transform(read_rgb(path))
            except ValueError as error:
                if isinstance(error, DataError):
                    raise
                raise DataError(path, str(error)) from error

    return stack_nchw(transformed(), len(paths), source)


def ood_labels(count: int) -> torch.Tensor:
    """int64 labels (count,) all -1: the out-of-distribution label of the suite."""
    return torch.full((count,), -1, dtype=torch.int64)


def stretch_to(size: int) -> Transform:
    """MCHAD's test rule: resize to ``size × size`` (bilinear, no antialiasing, aspect ratio not kept)."""
    return functools.partial(resize, height=size, width=size, interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------------------------- readers
def _read_ood_folder(folder: Path, relative: str, dataset: str, pattern: str, size: int, limit: int | None) -> ImageSet:
    check_positive(size=size)
    directory = image_directory(folder / relative, how_to_get(dataset, folder))
    paths = list_image_files(directory, pattern, limit)
    return ImageSet(read_images(paths, stretch_to(size), directory), ood_labels(len(paths)))


def read_lsun_crop(folder: Path, split: str, size: int = DEFAULT_SIZE, limit: int | None = None) -> ImageSet:
    """ODIN's LSUN (crop) test set, ``LSUN/test/*.jpg``, stretched to ``size × size``; labels -1."""
    return _read_ood_folder(folder, "LSUN/test", "lsun-crop", "*", size, limit)


def read_lsun_resize(folder: Path, split: str, size: int = DEFAULT_SIZE, limit: int | None = None) -> ImageSet:
    """ODIN's LSUN (resize) test set, ``LSUN_resize/*.jpg``, stretched to ``size × size``; labels -1."""
    return _read_ood_folder(folder, "LSUN_resize", "lsun-resize", "*", size, limit)


def read_tinyimagenet_crop(folder: Path, split: str, size: int = DEFAULT_SIZE, limit: int | None = None) -> ImageSet:
    """ODIN's TinyImageNet (crop) test set, ``Imagenet/test/*.jpg``, stretched to ``size × size``; labels -1."""
    return _read_ood_folder(folder, "Imagenet/test", "tinyimagenet-crop", "*", size, limit)


def read_tinyimagenet_resize(folder: Path, split: str, size: int = DEFAULT_SIZE, limit: int | None = None) -> ImageSet:
    """ODIN's TinyImageNet (resize) test set, ``Imagenet_resize/*.jpg``, stretched to ``size × size``; labels -1."""
    return _read_ood_folder(folder, "Imagenet_resize", "tinyimagenet-resize", "*", size, limit)


def read_isun(folder: Path, split: str, size: int = DEFAULT_SIZE, limit: int | None = None) -> ImageSet:
    """ODIN's iSUN patches, ``iSUN/iSUN_patches/*.jpeg``, stretched to ``size × size``; labels -1."""
    return _read_ood_folder(folder, "iSUN/iSUN_patches", "isun", "*", size, limit)


def read_textures(folder: Path, split: str, size: int = DEFAULT_SIZE, limit: int | None = None) -> ImageSet:
    """Describable Textures (DTD r1.0.1), all of ``dtd/images/<class>/*.jpg``, stretched to ``size × size``.

    Files are sorted by ``<class>/<file name>``; labels -1.
    """
    return _read_ood_folder(folder, "dtd/images", "textures", "*/*", size, limit)


def read_celeba(
    folder: Path, split: str, size: int = DEFAULT_SIZE, crop: int | None = None, limit: int | None = None
) -> ImageSet:
    """Aligned CelebA faces of one split of ``list_eval_partition.txt`` (train 0, valid 1, test 2).

    Each image's central ``crop × crop`` square (default: the shorter side, 178 for the 178×218 aligned faces) is
    shrunk to ``size × size`` with area averaging. Labels are -1: the papers use CelebA only as OOD data.

    Raises:
        MissingDataError: the partition file, the image folder or a listed image is missing.
        DataError: a line of the partition file is malformed or an image cannot be decoded.
    """
    if split not in CELEBA_PARTITIONS:
        raise ValueError(f"CelebA has no split {split!r}; splits: {', '.join(CELEBA_PARTITIONS)}")
    check_positive(size=size, crop=crop, limit=limit)
    directory = image_directory(folder / "img_align_celeba", how_to_get("celeba", folder))
    names = _celeba_partition(folder / "list_eval_partition.txt")[CELEBA_PARTITIONS[split]]
    paths = [directory / name for name in sorted(names)[:limit]]
    if not paths:
        raise DataError(folder / "list_eval_partition.txt", f"lists no image of split {split!r}")

    def crop_square_then_shrink(image: np.ndarray) -> np.ndarray:
        side = crop if crop is not None else min(image.shape[:2])
        return resize(center_crop(image, side, side), size, size, cv2.INTER_AREA)

    return ImageSet(read_images(paths, crop_square_then_shrink, directory), ood_labels(len(paths)))


def _celeba_partition(path: Path) -> dict[int, list[str]]:
    """File names per partition code (0, 1, 2) from ``list_eval_partition.txt`` (``<file> <code>`` per line)."""
    if not path.is_file():
        raise MissingDataError(path, how_to_get("celeba", path.parent))
    partition: dict[int, list[str]] = {code: [] for code in CELEBA_PARTITIONS.values()}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in {"0", "1", "2"}:
            raise DataError(path, f"line {number}: expected '<image file> <0|1|2>', got {line!r}")
        problem = plain_name_problem(fields[0])
        if problem is not None:
            raise DataError(path, f"line {number}: image {fields[0]!r}: {problem} (img_align_celeba)")
        partition[int(fields[1])].append(fields[0])
    return partition
