"""TinyImageNet-200 (Stanford CS231n) read from the folder its zip unpacks to, split as InvGlow's original code does.

Layout under ``folder`` = ``<data root>/tinyimagenet/`` (``tiny-imagenet-200.zip`` extracted)::

    tiny-imagenet-200/wnids.txt                     the 200 class ids (WordNet ids), one a line
    tiny-imagenet-200/train/<wnid>/images/*.JPEG    500 per class (plus <wnid>_boxes.txt, not read)
    tiny-imagenet-200/val/images/*.JPEG             10,000, labelled by val/val_annotations.txt
    tiny-imagenet-200/val/val_annotations.txt       <file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1> per line
    tiny-imagenet-200/test/images/*.JPEG            10,000, unlabelled

Splits follow InvGlow's ``TinyImageNet`` dataset (``invglow/datasets.py``): "train" is the train and val folders
together (110,000 images), "test" the test folder (10,000). Labels are the index of the image's wnid in sorted
``wnids.txt`` (val images take theirs from ``val_annotations.txt``) and -1 for the unlabelled test images; the
original returned a constant dummy target instead. Files are taken in sorted order (train by ``<wnid>/<file>``,
then val by file name), where the original concatenated unsorted globs, whose order depends on the file system;
``limit`` keeps the first ``limit`` of them, like the original's ``first_n``.

All images are 64×64 RGB; the few grey JPEGs are read as three equal channels. InvGlow resizes them with
torchvision ``Resize((32, 32))`` (PIL bilinear, which antialiases: 64 → 32 weighs four source pixels 1:3:3:1). We use
:func:`resize_antialiased`, i.e. ``cv2.INTER_AREA`` (the mean of each 2×2 block), the closest antialiased OpenCV
filter; values differ from PIL's by a few grey levels on textured images. Decoding the 110,000 JPEGs takes about
ten seconds on one core; like CelebA they are read in one pass, without a cache.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import torch

from common.datasets import ImageSet
from common.datasets.image_folders import (
    DEFAULT_SIZE,
    check_positive,
    image_directory,
    list_image_files,
    ood_labels,
    read_images,
    resize_antialiased,
)
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError

TINYIMAGENET_FOLDER = "tiny-imagenet-200"  # what tiny-imagenet-200.zip unpacks to
SPLITS = ("train", "test")


def read_tinyimagenet(folder: Path, split: str, size: int = DEFAULT_SIZE, limit: int | None = None) -> ImageSet:
    """TinyImageNet-200 split ``split``, resized to ``size × size`` (area averaging when shrinking).

    Args:
        folder: ``<data root>/tinyimagenet``, holding ``tiny-imagenet-200/``.
        split: ``"train"`` (train and val folders, labelled 0-199) or ``"test"`` (test folder, labels -1).
        size: side of the square output images.
        limit: keep only the first ``limit`` images.

    Returns:
        uint8 images (N, 3, size, size) and int64 labels (N,).

    Raises:
        ValueError: unknown ``split``, or ``size`` / ``limit`` not positive.
        MissingDataError: ``tiny-imagenet-200/``, ``wnids.txt`` or ``val/val_annotations.txt`` is missing.
        DataError: a folder holds no images, a list file is malformed, an image's class is not in ``wnids.txt``,
            a val image has no annotation, or an image cannot be decoded (the message names the file).
    """
    if split not in SPLITS:
        raise ValueError(f"TinyImageNet has no split {split!r}; splits: {', '.join(SPLITS)}")
    check_positive(size=size, limit=limit)
    hint = how_to_get("tinyimagenet", folder)
    directory = image_directory(folder / TINYIMAGENET_FOLDER, hint)
    if split == "test":
        paths = list_image_files(directory / "test" / "images", limit=limit)
        labels = ood_labels(len(paths))
    else:
        labelled = _train_and_val_files(directory, hint)[:limit]
        paths = [path for path, _ in labelled]
        labels = torch.tensor([label for _, label in labelled], dtype=torch.int64)
    transform = functools.partial(resize_antialiased, height=size, width=size)
    return ImageSet(read_images(paths, transform, directory), labels)


def _class_indices(wnids_file: Path, hint: str) -> dict[str, int]:
    """Each wnid of ``wnids.txt`` mapped to its index in sorted order (the class label)."""
    if not wnids_file.is_file():
        raise MissingDataError(wnids_file, hint)
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    if not wnids:
        raise DataError(wnids_file, "lists no class id")
    repeated = sorted(wnid for wnid, count in Counter(wnids).items() if count > 1)
    if repeated:
        raise DataError(wnids_file, f"lists class ids more than once: {', '.join(repeated)}")
    return {wnid: index for index, wnid in enumerate(sorted(wnids))}


def _val_labels(annotations_file: Path, classes: dict[str, int], hint: str) -> dict[str, int]:
    """Label of each val image file name, from ``val_annotations.txt`` (tab-separated: file, wnid, box)."""
    if not annotations_file.is_file():
        raise MissingDataError(annotations_file, hint)
    labels: dict[str, int] = {}
    for number, line in enumerate(annotations_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(annotations_file, f"line {number}: expected '<file>\\t<wnid>\\t<box>', got {line!r}")
        if fields[1] not in classes:
            raise DataError(annotations_file, f"line {number}: class {fields[1]!r} is not listed in wnids.txt")
        labels[fields[0]] = classes[fields[1]]
    return labels


def _train_and_val_files(directory: Path, hint: str) -> list[tuple[Path, int]]:
    """(image file, label) of the train folder, sorted by ``<wnid>/<file>``, then of the val folder, by file name."""
    classes = _class_indices(directory / "wnids.txt", hint)
    labelled: list[tuple[Path, int]] = []
    for path in list_image_files(directory / "train", "*/images/*"):
        wnid = path.parent.parent.name
        if wnid not in classes:
            raise DataError(path.parent.parent, f"class folder {wnid!r} is not listed in wnids.txt")
        labelled.append((path, classes[wnid]))
    annotations_file = directory / "val" / "val_annotations.txt"
    labels = _val_labels(annotations_file, classes, hint)
    for path in list_image_files(directory / "val" / "images"):
        if path.name not in labels:
            raise DataError(annotations_file, f"has no line for the val image {path.name}")
        labelled.append((path, labels[path.name]))
    return labelled
