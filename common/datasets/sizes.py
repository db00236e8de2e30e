"""How many images each split of each dataset holds, without reading it: to count what a cell costs.

File-backed sets have the sizes their owners publish (the counts :func:`common.datasets.load` returns for the files
as distributed); generated sets (digits, noise, shapes) have the sizes their readers make for the same options,
the digits split computed as :func:`common.datasets.synthetic.read_digits` computes it. Options that do not change
the count (``size``, ``channels``, ``seed`` of the noise, ...) are accepted and ignored; ``limit`` caps it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from common.datasets.lsun_lmdb import LSUN_CATEGORIES
from common.datasets.mvtec import MVTEC_CATEGORIES

LSUN_PER_CATEGORY = 300  # images in each scene category's validation LMDB
PUBLISHED: dict[tuple[str, str], int] = {
    ("svhn", "train"): 73_257,
    ("svhn", "test"): 26_032,
    ("svhn", "extra"): 531_131,
    ("lsun-crop", "test"): 10_000,
    ("lsun-resize", "test"): 10_000,
    ("tinyimagenet", "train"): 110_000,  # 100,000 train + 10,000 val images (the reader joins them)
    ("tinyimagenet", "test"): 10_000,
    ("tinyimagenet-crop", "test"): 10_000,
    ("tinyimagenet-resize", "test"): 10_000,
    ("isun", "test"): 8_925,
    ("textures", "test"): 5_640,  # DTD r1.0.1: 47 classes × 120 images
    ("celeba", "train"): 162_770,  # list_eval_partition.txt
    ("celeba", "valid"): 19_867,
    ("celeba", "test"): 19_962,
    ("tiny-images", "all"): 79_302_017,
    ("tiny-images-300k", "train"): 300_000,
}
"""Images per (dataset, split) of the sets whose per-class counts are not needed here."""
CLASS_COUNTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("mnist", "train"): (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    ("mnist", "test"): (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    ("fashion-mnist", "train"): (6000,) * 10,
    ("fashion-mnist", "test"): (1000,) * 10,
    ("cifar10", "train"): (5000,) * 10,
    ("cifar10", "test"): (1000,) * 10,
    ("cifar100", "train"): (500,) * 100,  # fine labels; the 20 coarse ones have 2,500 / 500 each
    ("cifar100", "test"): (100,) * 100,
}
"""Images per class (label 0, 1, ...) of the labelled sets whose classes are trained on one by one."""
LABELS = {"svhn": 10, "tinyimagenet": 200}
"""Classes of the labelled sets without per-class counts here (their counts are only needed in full)."""
MVTEC_COUNTS: dict[str, tuple[int, int]] = dict(
    zip(
        MVTEC_CATEGORIES,
        [
            (209, 83),  # bottle
            (224, 150),  # cable
            (219, 132),  # capsule
            (280, 117),  # carpet
            (264, 78),  # grid
            (391, 110),  # hazelnut
            (245, 124),  # leather
            (220, 115),  # metal_nut
            (267, 167),  # pill
            (320, 160),  # screw
            (230, 117),  # tile
            (60, 42),  # toothbrush
            (213, 100),  # transistor
            (247, 79),  # wood
            (240, 151),  # zipper
        ],
        strict=True,
    )
)
"""MVTec AD images per category: (train, all good and defective test images); 3,629 and 1,725 in all."""


def size(name: str, split: str, **options: Any) -> int:
    """Images that ``common.datasets.load(name, split, **options)`` returns.

    Raises:
        KeyError: a dataset or split whose size is not known here.
    """
    limit = options.get("limit")
    count = _size(name, split, options)
    return count if limit is None else min(count, limit)


def class_counts(name: str, split: str, **options: Any) -> tuple[int, ...]:
    """Images of each class (label 0, 1, ...) of a labelled split.

    Raises:
        KeyError: a dataset whose per-class counts are not known here.
    """
    if name == "digits":
        return _digits_counts(split, options.get("seed", 0), options.get("test_fraction", 0.25))
    if name == "cifar100" and options.get("label_kind", "fine") == "coarse":
        return (2500 if split == "train" else 500,) * 20
    if name == "shapes":
        from common.datasets.synthetic import SHAPE_CLASSES

        count = size(name, split, **options)
        return tuple(len(range(label, count, len(SHAPE_CLASSES))) for label in range(len(SHAPE_CLASSES)))
    return CLASS_COUNTS[(name, split)]


def images_of_classes(name: str, split: str, n_classes: int, **options: Any) -> int:
    """Images of labels 0 .. ``n_classes`` − 1 of a split (its size when that is every class it has)."""
    if n_classes >= LABELS.get(name, n_classes + 1):
        return size(name, split, **options)
    return sum(class_counts(name, split, **options)[:n_classes])


def _size(name: str, split: str, options: dict[str, Any]) -> int:
    if name in ("uniform-noise", "gaussian-noise"):
        from common.datasets.synthetic import NOISE_COUNT

        return options.get("n", NOISE_COUNT)
    if name == "shapes":
        from common.datasets.synthetic import SHAPE_COUNTS

        return SHAPE_COUNTS[split] if options.get("n") is None else options["n"]
    if name == "mvtec":
        return MVTEC_COUNTS[options["category"]][("train", "test").index(split)]
    if name == "lsun":
        categories = options.get("categories", LSUN_CATEGORIES)
        return LSUN_PER_CATEGORY * (1 if isinstance(categories, str) else len(categories))
    if name == "tiny-images-subset":
        from common.tiny_builder import CHUNK_SIZE, N_CHUNKS

        return N_CHUNKS * CHUNK_SIZE  # with or without the CIFAR exclusion: the first 24,415 surviving chunks
    if (name, split) in PUBLISHED:
        return PUBLISHED[(name, split)]
    return sum(class_counts(name, split, **options))


@cache
def _digits_counts(split: str, seed: int, test_fraction: float) -> tuple[int, ...]:
    """Per-class images of ``split`` of scikit-learn's digits, from the reader itself (its seeded stratified split)."""
    from common.datasets import load

    labels = load("digits", split, seed=seed, test_fraction=test_fraction).labels
    return tuple(labels.bincount(minlength=10).tolist())
