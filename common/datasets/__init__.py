"""Datasets in their original file formats, read into uint8 image tensors (N, C, H, W) and int64 labels.

``load(name, split)`` is the one entry point; ``DATASETS`` lists every name with its splits and reader.
Files live under ``<data root>/<name>/`` exactly as their owners distribute them (see ``folder_locations``);
``root`` overrides the data root. Readers are imported on first use, so ``import common.datasets`` is cheap.
Labels of sets used only as out-of-distribution data are -1.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

import folder_locations


class ImageSet(NamedTuple):
    """Images as uint8 (N, C, H, W), possibly memory-mapped, and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset: its splits and the ``module:function`` reading it from its folder."""

    name: str
    splits: tuple[str, ...]
    reader: str
    description: str

    def read(self, folder: Path, split: str, **options: Any) -> ImageSet:
        """Call the reader; a missing or unknown option is a ValueError naming it (not the reader's TypeError)."""
        module_name, function_name = self.reader.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        try:
            inspect.signature(function).bind(folder, split, **options)
        except TypeError as error:
            accepted = [name for name in inspect.signature(function).parameters][2:]
            raise ValueError(
                f"dataset {self.name!r}: {error} (options: {', '.join(accepted) or 'none'}; {self.description})"
            ) from None
        return function(folder, split, **options)


_TRAIN_TEST = ("train", "test")
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("mnist", _TRAIN_TEST, "common.datasets.idx:read_idx_dataset", "MNIST, IDX files, 28×28 grey"),
        DatasetSpec(
            "fashion-mnist", _TRAIN_TEST, "common.datasets.idx:read_idx_dataset", "Fashion-MNIST, IDX, 28×28 grey"
        ),
        DatasetSpec("cifar10", _TRAIN_TEST, "common.datasets.cifar:read_cifar10", "CIFAR-10 python pickles"),
        DatasetSpec(
            "cifar100",
            _TRAIN_TEST,
            "common.datasets.cifar:read_cifar100",
            "CIFAR-100 python pickles; option label_kind='fine'|'coarse'",
        ),
        DatasetSpec("svhn", (*_TRAIN_TEST, "extra"), "common.datasets.svhn:read_svhn", "SVHN cropped digits .mat"),
        DatasetSpec(
            "lsun",
            ("test",),
            "common.datasets.lsun_lmdb:read_lsun",
            "LSUN scene val LMDBs (10 × 300 images), OOD; option categories=...; needs lmdb",
        ),
        DatasetSpec("lsun-crop", ("test",), "common.datasets.image_folders:read_lsun_crop", "ODIN LSUN crop, OOD"),
        DatasetSpec(
            "lsun-resize", ("test",), "common.datasets.image_folders:read_lsun_resize", "ODIN LSUN resize, OOD"
        ),
        DatasetSpec(
            "tinyimagenet",
            _TRAIN_TEST,
            "common.datasets.tinyimagenet:read_tinyimagenet",
            "TinyImageNet-200; train = train + val (200 classes), test unlabelled",
        ),
        DatasetSpec(
            "tinyimagenet-crop",
            ("test",),
            "common.datasets.image_folders:read_tinyimagenet_crop",
            "ODIN TinyImageNet crop, OOD",
        ),
        DatasetSpec(
            "tinyimagenet-resize",
            ("test",),
            "common.datasets.image_folders:read_tinyimagenet_resize",
            "ODIN TinyImageNet resize, OOD",
        ),
        DatasetSpec("isun", ("test",), "common.datasets.image_folders:read_isun", "iSUN patches, OOD"),
        DatasetSpec(
            "textures", ("test",), "common.datasets.image_folders:read_textures", "Describable Textures (DTD), OOD"
        ),
        DatasetSpec(
            "celeba", ("train", "valid", "test"), "common.datasets.image_folders:read_celeba", "CelebA aligned faces"
        ),
        DatasetSpec(
            "mvtec",
            _TRAIN_TEST,
            "common.datasets.mvtec:read_mvtec_images",
            "MVTec AD; option category=...; label 0 good, 1 defective",
        ),
        DatasetSpec(
            "tiny-images",
            ("all",),
            "common.datasets.tiny_images:read_tiny_images",
            "80M Tiny Images binary, memory-mapped, OOD",
        ),
        DatasetSpec(
            "tiny-images-subset",
            ("train",),
            "common.datasets.tiny_images:read_tiny_subset",
            "chunked Tiny Images subset written by invglow/create_tiny.py, OOD",
        ),
        DatasetSpec(
            "tiny-images-300k",
            ("train",),
            "common.datasets.tiny_images:read_tiny_300k",
            "300K_random_images.npy (outlier exposure), OOD",
        ),
        DatasetSpec("digits", _TRAIN_TEST, "common.datasets.synthetic:read_digits", "scikit-learn digits, 8×8 grey"),
        DatasetSpec(
            "uniform-noise", ("test",), "common.datasets.synthetic:read_uniform_noise", "generated uniform noise, OOD"
        ),
        DatasetSpec(
            "gaussian-noise",
            ("test",),
            "common.datasets.synthetic:read_gaussian_noise",
            "generated Gaussian noise, OOD",
        ),
        DatasetSpec(
            "shapes", _TRAIN_TEST, "common.datasets.synthetic:read_shapes", "procedurally drawn shapes, 10 classes"
        ),
    ]
}


def load(name: str, split: str, root: str | Path | None = None, **options: Any) -> ImageSet:
    """Read split ``split`` of dataset ``name`` from ``<root or data root>/<name>/``.

    Returns an :class:`ImageSet` of uint8 images (N, C, H, W) and int64 labels (N,). Reader-specific
    ``options`` (e.g. ``category`` for MVTec, ``label_kind`` for CIFAR-100) are passed through.
    """
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise KeyError(f"unknown dataset {name!r}; known datasets: {known}")
    spec = DATASETS[name]
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(spec.splits)}")
    return spec.read(dataset_folder(name, root), split, **options)


def plain_name_problem(name: str) -> str | None:
    """Why ``name``, read from a file or given as an option, is not a plain file name; None if it is one.

    A plain name joined to a folder stays inside it: no folder part (``/`` or ``\\``), not empty, ``.`` or ``..``.
    """
    if not isinstance(name, str) or name in ("", ".", "..") or any(char in name for char in "/\\\0"):
        return "expected a plain file name (no folder part, not empty, '.' or '..'), so that it stays in its folder"
    return None


def dataset_folder(name: str, root: str | Path | None = None) -> Path:
    """The folder holding dataset ``name``'s files: ``<root>/<name>``, or the configured default.

    The three Tiny Images sets share one folder, ``folder_locations.tiny_images_root()`` by default.
    """
    if name.startswith("tiny-images"):
        return Path(root).expanduser() / "tiny-images" if root is not None else folder_locations.tiny_images_root()
    return (Path(root).expanduser() if root is not None else folder_locations.data_root()) / name


__all__ = ["DATASETS", "DatasetSpec", "ImageSet", "dataset_folder", "load", "plain_name_problem"]
