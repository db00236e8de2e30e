"""Write a small TinyImageNet-200 tree as ``tiny-imagenet-200.zip`` unpacks, below ``<root>/tinyimagenet/``.

The tree has ``wnids.txt`` (in the given, unsorted order), ``words.txt``, ``train/<wnid>/images/<wnid>_<i>.JPEG``
with ``train/<wnid>/<wnid>_boxes.txt``, ``val/images/val_<i>.JPEG`` with ``val/val_annotations.txt`` (tab-separated
file, wnid, box) and ``test/images/test_<i>.JPEG``. Images are smooth 64×64 RGB JPEGs; the first val image is a
single-channel (grey) JPEG, as a few real ones are. ``lossless`` writes PNG bytes into the ``.JPEG`` files instead
(OpenCV decodes by content, not by name) so that tests can check pixels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tests.helpers.write_images import smooth_images

BOX = "\t8\t8\t55\t55"  # every image's bounding box, as in the real list files (x0, y0, x1, y1)


@dataclass(frozen=True)
class WrittenImage:
    """One written TinyImageNet image.

    Attributes:
        path: the file.
        image: uint8 RGB (H, W, 3) as encoded (a grey file's value in all three channels).
        wnid: its class id, "" for test images.
        grey: written as a single-channel JPEG.
    """

    path: Path
    image: np.ndarray
    wnid: str
    grey: bool = False


def write_tinyimagenet(
    root: Path,
    wnids: Sequence[str] = ("n09999999", "n01443537", "n04067472"),
    train_per_class: int = 2,
    val_per_class: int = 2,
    test: int = 3,
    images: np.ndarray | None = None,
    lossless: bool = False,
    seed: int = 0,
) -> dict[str, list[WrittenImage]]:
    """Write the tree; val image ``i`` belongs to class ``wnids[i % len(wnids)]``.

    Args:
        root: the data root.
        wnids: class ids, written to ``wnids.txt`` in this order.
        train_per_class: images per class in ``train/<wnid>/images``.
        val_per_class: images per class in ``val/images``.
        test: images in ``test/images``.
        images: uint8 (N, H, W, 3) pixels to use in writing order (train by class, val, test); default smooth
            random 64×64 images.
        lossless: store PNG bytes under the ``.JPEG`` names.
        seed: random seed of the default images.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` in writing order.
    """
    n_val = val_per_class * len(wnids)
    count = train_per_class * len(wnids) + n_val + test
    pixels = smooth_images(count, 64, 64, seed=seed) if images is None else images
    if len(pixels) != count:
        raise ValueError(f"{len(pixels)} images given, {count} needed")
    folder = root / "tinyimagenet" / "tiny-imagenet-200"
    next_image = iter(pixels)
    written: dict[str, list[WrittenImage]] = {"train": [], "val": [], "test": []}
    for wnid in wnids:
        names = [f"{wnid}_{index}.JPEG" for index in range(train_per_class)]
        for name in names:
            written["train"].append(_write(folder / "train" / wnid / "images" / name, next(next_image), wnid, lossless))
        _write_lines(folder / "train" / wnid / f"{wnid}_boxes.txt", [name + BOX for name in names])
    for index in range(n_val):
        wnid = wnids[index % len(wnids)]
        path = folder / "val" / "images" / f"val_{index}.JPEG"
        written["val"].append(_write(path, next(next_image), wnid, lossless, grey=index == 0))
    _write_lines(folder / "val" / "val_annotations.txt", [f"{w.path.name}\t{w.wnid}{BOX}" for w in written["val"]])
    for index in range(test):
        written["test"].append(
            _write(folder / "test" / "images" / f"test_{index}.JPEG", next(next_image), "", lossless)
        )
    _write_lines(folder / "wnids.txt", list(wnids))
    _write_lines(folder / "words.txt", [f"{wnid}\tthing number {index}" for index, wnid in enumerate(wnids)])
    return written


def _write(path: Path, image: np.ndarray, wnid: str, lossless: bool, grey: bool = False) -> WrittenImage:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if grey else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png" if lossless else ".jpg", pixels)
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    path.write_bytes(encoded.tobytes())
    rgb = np.repeat(pixels[:, :, None], 3, axis=2) if grey else image
    return WrittenImage(path, rgb, wnid, grey)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
