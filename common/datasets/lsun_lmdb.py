"""LSUN scene-classification validation sets read from the release's LMDB files, as InvGlow evaluates on them (OOD).

Layout under ``folder`` = ``<data root>/lsun/``: one LMDB environment per scene category,
``<category>_val_lmdb/{data.mdb,lock.mdb}``, exactly as ``http://dl.yf.io/lsun/scenes/<category>_val_lmdb.zip``
unpacks (300 images per category, 3,000 for the ten). Each key is an image id (bytes), each value the encoded
image (WebP in the release; anything ``cv2.imdecode`` reads is accepted, grey images become three equal channels).
Reading needs the ``lmdb`` package (py-lmdb), imported only when a set is read.

Preprocessing follows InvGlow's ``invglow/load_data.py`` (invglow.md §5 "Transforms"): torchvision ``Resize(32)``
then ``CenterCrop(32)``. We compute torchvision's sizes and offsets exactly: the shorter side becomes ``size``, the
longer ``int(size · long / short)`` (truncated; nothing happens if the shorter side already is ``size``), and the
crop starts ``round(excess / 2)`` pixels in (Python's rounding, halves to even, so an excess of 3 starts at 2, not
1). The resampling differs: PIL's bilinear filter is replaced by :func:`resize_antialiased` (``cv2.INTER_AREA``
when shrinking, a box instead of PIL's triangle filter, so values differ from the original's by a few grey levels;
``cv2.INTER_LINEAR`` when enlarging). The original's ``(t · 255/256) - 0.5`` scaling belongs to the model's
preprocessing, not to the reader.

Images come in the order of ``categories``, then key order (LMDB's sorted byte order, as torchvision's
``LSUNClass`` iterates). Labels are -1, the suite's label of out-of-distribution sets (the original's category
index is used by no score).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from common.datasets import ImageSet
from common.datasets.image_folders import (
    DEFAULT_SIZE,
    check_positive,
    image_directory,
    ood_labels,
    resize_antialiased,
    stack_nchw,
)
from common.datasets.sources import how_to_get
from common.errors import DataError, MissingDataError

LSUN_CATEGORIES = (
    "bedroom",
    "bridge",
    "church_outdoor",
    "classroom",
    "conference_room",
    "dining_room",
    "kitchen",
    "living_room",
    "restaurant",
    "tower",
)  # the ten scene categories, in the order of InvGlow's load_data.py


def read_lsun(
    folder: Path,
    split: str,
    categories: Sequence[str] | str = LSUN_CATEGORIES,
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
) -> ImageSet:
    """LSUN's validation images of ``categories``, each resized on its shorter side and centre-cropped to ``size``.

    Args:
        folder: ``<data root>/lsun``, holding ``<category>_val_lmdb/`` folders.
        split: ``"test"``, the only split: the validation LMDBs, which InvGlow evaluates on.
        categories: scene categories to read, in this order; one name or several of ``LSUN_CATEGORIES``.
        size: side of the square output images.
        limit: keep only the first ``limit`` images.

    Returns:
        uint8 images (N, 3, size, size) and labels (N,) all -1.

    Raises:
        ValueError: ``split`` is not "test", a category is unknown, or ``size`` / ``limit`` is not positive.
        ImportError: the ``lmdb`` package is not installed.
        MissingDataError: a category's folder or its ``data.mdb`` is missing.
        DataError: an LMDB environment cannot be read, is truncated or holds no images, or a value is not a
            decodable image.
    """
    if split != "test":
        raise ValueError(f"LSUN has only the split 'test' (its validation LMDBs), got {split!r}")
    check_positive(size=size, limit=limit)
    chosen = checked_categories(categories)
    lmdb = _import_lmdb()
    hint = how_to_get("lsun", folder)
    decoded = itertools.chain.from_iterable(
        _decoded_images(lmdb, image_directory(folder / f"{category}_val_lmdb", hint), hint) for category in chosen
    )
    images = [shorter_side_then_center_crop(image, size) for image in itertools.islice(decoded, limit)]
    return ImageSet(stack_nchw(images, len(images), folder), ood_labels(len(images)))


def checked_categories(categories: Sequence[str] | str) -> tuple[str, ...]:
    """``categories`` as a tuple (one name or several), after checking each is an LSUN scene category.

    Raises:
        ValueError: no category is given or one is not in ``LSUN_CATEGORIES`` (the message lists them).
    """
    chosen = (categories,) if isinstance(categories, str) else tuple(categories)
    unknown = [category for category in chosen if category not in LSUN_CATEGORIES]
    if unknown or not chosen:
        problem = f"unknown LSUN categories {unknown}" if unknown else "no LSUN category given"
        raise ValueError(f"{problem}; choose from {', '.join(LSUN_CATEGORIES)}")
    return chosen


def shorter_side_then_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's ``Resize(size)`` then ``CenterCrop(size)`` on an (H, W, C) uint8 image, resampled by OpenCV.

    The shorter side becomes ``size`` and the longer ``int(size · long / short)``; the crop offset along the longer
    side is ``round(excess / 2)`` (halves to even), as torchvision computes them.
    """
    height, width = image.shape[:2]
    if height <= width:
        new_height, new_width = size, int(size * width / height)
    else:
        new_height, new_width = int(size * height / width), size
    resized = resize_antialiased(image, new_height, new_width)
    top, left = round((new_height - size) / 2), round((new_width - size) / 2)
    return resized[top : top + size, left : left + size]


def _import_lmdb() -> ModuleType:
    try:
        import lmdb
    except ImportError as error:
        raise ImportError(
            "reading LSUN's LMDB files needs the lmdb package (py-lmdb): run `pip install 'lmdb>=1.4'`"
        ) from error
    return lmdb


def _decoded_images(lmdb: ModuleType, directory: Path, hint: str) -> Iterator[np.ndarray]:
    """Every value of the LMDB environment ``directory``, in key order, decoded to uint8 RGB (H, W, 3)."""
    data_file = directory / "data.mdb"
    if not data_file.is_file():
        raise MissingDataError(data_file, hint)
    check_lmdb_size(data_file)
    try:
        environment = lmdb.open(
            str(directory), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1
        )
        with environment, environment.begin() as transaction:
            if transaction.stat()["entries"] == 0:
                raise DataError(directory, "the LMDB environment holds no images")
            for key, value in transaction.cursor():
                image = cv2.imdecode(np.frombuffer(value, dtype=np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise DataError(directory, f"the value of key {key!r} cannot be decoded as an image")
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    except lmdb.Error as error:
        raise DataError(directory, f"is not a readable LMDB environment ({error})") from error


# LMDB's on-disk header (lmdb's mdb.c, 64-bit builds, which py-lmdb is): pages 0 and 1 are meta pages, each a
# 16-byte page header followed by MDB_meta: magic, version (uint32 each), address, map size (uint64 each), two
# 48-byte MDB_db records (the first one's leading uint32 holds the page size), last page number, transaction id.
_LMDB_MAGIC = 0xBEEFC0DE
_LMDB_META = struct.Struct("<IIQQI92xQQ")  # magic, version, address, map size, page size, (dbs), last page, txn
_LMDB_META_OFFSET = 16


def check_lmdb_size(data_file: Path) -> None:
    """Check that LMDB file ``data_file`` holds every page its newest meta page says it has, before it is mapped.

    LMDB maps the file into memory and reads its pages directly, so a truncated file (an interrupted copy or
    extraction) kills the process with SIGBUS the moment a missing page is touched; the header is read here with
    ordinary file reads instead.

    Raises:
        DataError: the file is not an LMDB data file (named after its folder, the environment), or is shorter than
            (last page + 1) × page size (named after itself).
    """
    size = data_file.stat().st_size
    with data_file.open("rb") as file:
        first = file.read(_LMDB_META_OFFSET + _LMDB_META.size)
        if len(first) < _LMDB_META_OFFSET + _LMDB_META.size:
            raise DataError(
                data_file.parent, f"is not a readable LMDB environment ({data_file.name} has only {size:,} bytes)"
            )
        metas = [_LMDB_META.unpack_from(first, _LMDB_META_OFFSET)]
        page_size = metas[0][4]
        if metas[0][0] != _LMDB_MAGIC or page_size < 512 or page_size & (page_size - 1):
            raise DataError(
                data_file.parent, f"is not a readable LMDB environment ({data_file.name} has no LMDB meta page)"
            )
        file.seek(page_size + _LMDB_META_OFFSET)
        second = file.read(_LMDB_META.size)
    if len(second) == _LMDB_META.size:
        metas.append(_LMDB_META.unpack(second))
    valid = [meta for meta in metas if meta[0] == _LMDB_MAGIC]
    if len(metas) < 2:
        raise DataError(data_file, f"is truncated: {size:,} bytes, less than LMDB's two meta pages of {page_size:,}")
    last_page = max(valid, key=lambda meta: meta[6])[5]
    needed = (last_page + 1) * page_size
    if size < needed:
        raise DataError(
            data_file,
            f"is truncated: {size:,} bytes, but its LMDB header says {last_page + 1:,} pages of {page_size:,} "
            f"bytes ({needed:,} bytes); copy or extract it again",
        )
