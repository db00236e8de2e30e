"""Data of one run: in-distribution training batches (+ outliers for the G-variants) and the test sets.

Preprocessing as the original (reference mchad.md §2.2): training images get a random crop with padding and a
horizontal flip, then ``ToTensor`` scaling and per-channel normalisation; test images and training outliers only
the scaling and normalisation (the original gives outliers the test transform). Random augmentations draw from
torch's default generator, so an interrupted run resumes with the same crops (``common.run.RandomStates``).

Evaluation data: the ID test set followed by each OOD set; OOD set k carries the label −(k + 1), so one pass
gives the scores of every test case (ID test ∪ OOD set k) and labels < 0 still mean OOD. Under several processes
each rank evaluates a contiguous block of that sequence (``common.loaders.evaluation_loaders``).

Training batches are global (``train.batch_size`` ID and ``train.outlier_batch_size`` outlier images over all
ranks, each rank taking its block, ``common.loaders.TensorBatchLoader``).

An :data:`ImageCache` (one dict per dataset, kept by :mod:`mchad.experiments` for the cells a process runs) lets the
methods and seeds of a dataset share the ID splits and the file-backed OOD sets instead of reading them again;
generated noise and the seeded outlier split are not kept. The images are the same with or without it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch

from common.datasets import ImageSet, load
from common.loaders import ChainedBatches, PairedLoader, TensorBatchLoader, evaluation_loaders
from common.transforms import BatchPipeline, normalize, random_crop, random_horizontal_flip, resize, to_float
from mchad.config import HELD_OUT_DIGITS, DatasetConfig, TrainConfig

T = TypeVar("T")
ImageCache = dict[tuple[object, ...], Any]
"""Images shared by the trainings of one dataset, keyed by what was read (see :func:`build_run_data`)."""


class LimitedLoader:
    """The first ``max_batches`` batches of every epoch of ``loader`` (PL's ``limit_train_batches``).

    Passes ``set_epoch`` and ``skip_batches`` through, so ``common.run.make_reproducible`` resumes it exactly.
    """

    def __init__(self, loader: TensorBatchLoader | PairedLoader, max_batches: int) -> None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        self.loader, self.max_batches = loader, max_batches
        self._skip = 0

    def __len__(self) -> int:
        return min(len(self.loader), self.max_batches)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        self.loader.skip_batches(count)
        self._skip = count

    def __iter__(self) -> Iterator:
        remaining, self._skip = len(self) - self._skip, 0
        return itertools.islice(iter(self.loader), remaining)


@dataclass(frozen=True)
class RunData:
    """Loaders of one run and the names of its OOD test sets (in the order of their labels −1, −2, ...)."""

    train: TensorBatchLoader | PairedLoader | LimitedLoader
    evaluation: ChainedBatches
    ood_names: tuple[str, ...]


def fit_images(images: torch.Tensor, size: int, channels: int, name: str) -> torch.Tensor:
    """uint8 images resized to ``size × size`` (bilinear) with ``channels`` channels (grey is repeated to RGB).

    Raises:
        ValueError: RGB images where grey ones are expected (no silent colour conversion).
    """
    if images.shape[1] != channels:
        if images.shape[1] != 1:
            raise ValueError(f"{name}: expected {channels}-channel images, got {images.shape[1]} channels")
        images = images.expand(-1, channels, -1, -1)
    if images.shape[-2:] != (size, size):
        images = resize(images, size, antialias=False)
    return images.contiguous()


def check_ood_labels(labels: torch.Tensor, name: str) -> None:
    """OOD data must carry negative labels (pytorch-ood's convention); a labelled set here is a mistake."""
    if labels.numel() and int(labels.max()) >= 0:
        raise ValueError(
            f"{name}: OOD / outlier images must have negative labels, got labels up to {int(labels.max())} "
            "(an in-distribution set passed as OOD?)"
        )


def _cached(cache: ImageCache | None, key: tuple[object, ...], read: Callable[[], T]) -> T:
    """``read()``, kept in ``cache`` under ``key`` (always read afresh without a cache)."""
    if cache is None:
        return read()
    if key not in cache:
        cache[key] = read()
    return cache[key]


def in_distribution(dataset: DatasetConfig, split: str, cache: ImageCache | None = None) -> ImageSet:
    """The ID split restricted to classes 0..n_classes−1, fitted to the network input."""

    def read() -> ImageSet:
        images, labels = load(dataset.source, split, **dict(dataset.source_options))
        keep = labels < dataset.n_classes
        fitted = fit_images(images[keep], dataset.image_size, dataset.in_channels, dataset.name)
        return ImageSet(fitted, labels[keep])

    return _cached(cache, ("in-distribution", dataset, split), read)


def ood_set(
    dataset: DatasetConfig, source: str, train: TrainConfig, seed: int, cache: ImageCache | None = None
) -> torch.Tensor:
    """Images of one OOD test set, fitted to the network input; the noise sets are drawn with ``seed``."""
    if source.endswith("-noise"):
        # Deviation: drawn once per seed; the original redraws the noise on every access.
        options = {"n": train.noise_count, "seed": seed, "size": dataset.image_size, "channels": dataset.in_channels}
        return fit_images(load(source, "test", **options).images, dataset.image_size, dataset.in_channels, source)

    def read() -> torch.Tensor:
        if source == HELD_OUT_DIGITS:  # demo: every digit image of the classes not trained on
            parts = [load("digits", split, **dict(dataset.source_options)) for split in ("train", "test")]
            images = torch.cat([part.images[part.labels >= dataset.n_classes] for part in parts])
        else:
            images, labels = load(source, "test")
            check_ood_labels(labels, source)
        return fit_images(images, dataset.image_size, dataset.in_channels, source)

    return _cached(cache, ("ood", dataset, source), read)


def training_outliers(dataset: DatasetConfig, train: TrainConfig, seed: int) -> torch.Tensor:
    """The outliers of the G-variants: a seeded ``outlier_train_fraction`` share of the outlier set (§2.2)."""
    if train.outlier_source == "shapes":
        options = {"size": dataset.image_size, "channels": dataset.in_channels, "n": train.outlier_count}
        images, labels = load("shapes", "train", seed=seed, **options)
        labels = torch.full_like(labels, -1)  # generated shapes stand in for TinyImages: unlabelled outliers
    else:
        images, labels = load(train.outlier_source, "train")
    check_ood_labels(labels, train.outlier_source)
    count = round(len(images) * train.outlier_train_fraction)
    # Deviation: a seeded permutation instead of random_split under the global RNG (same kind of 90/10 split).
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return fit_images(images.index_select(0, keep), dataset.image_size, dataset.in_channels, train.outlier_source)


def pipelines(dataset: DatasetConfig) -> tuple[BatchPipeline, BatchPipeline]:
    """(training transform, test transform) of ``dataset``."""
    generator = torch.default_generator  # checkpointed by common.run.RandomStates: exact resume
    finish = [to_float, partial(normalize, mean=dataset.mean, std=dataset.std, inplace=True)]
    augment = []
    if dataset.crop_padding:
        augment.append(partial(random_crop, size=dataset.image_size, padding=dataset.crop_padding, generator=generator))
    if dataset.flip:
        augment.append(partial(random_horizontal_flip, generator=generator))
    return BatchPipeline([*augment, *finish]), BatchPipeline(finish)


def build_run_data(
    dataset: DatasetConfig,
    train: TrainConfig,
    *,
    outliers: bool,
    seed: int,
    device: torch.device,
    cache: ImageCache | None = None,
) -> RunData:
    """Loaders for one run of ``dataset`` (with outlier batches when ``outliers``); ``cache`` shares images."""
    train_transform, test_transform = pipelines(dataset)
    images, labels = in_distribution(dataset, "train", cache)
    loader_options = {"device": device, "seed": seed}
    loader: TensorBatchLoader | PairedLoader | LimitedLoader = TensorBatchLoader(
        images, labels, train.batch_size, shuffle=True, transform=train_transform, **loader_options
    )
    if outliers:
        outlier_images = training_outliers(dataset, train, seed)
        outlier_labels = torch.full((len(outlier_images),), -1, dtype=torch.int64)
        outlier_loader = TensorBatchLoader(
            outlier_images,
            outlier_labels,
            train.outlier_batch_size,
            shuffle=True,
            drop_last=True,
            transform=test_transform,
            **loader_options,
        )
        loader = PairedLoader(loader, outlier_loader)
    if dataset.max_batches is not None and dataset.max_batches < len(loader):
        loader = LimitedLoader(loader, dataset.max_batches)
    sets = [in_distribution(dataset, "test", cache)]
    for k, (_, source) in enumerate(dataset.ood_sets):
        ood_images = ood_set(dataset, source, train, seed, cache)
        sets.append((ood_images, torch.full((len(ood_images),), -(k + 1), dtype=torch.int64)))
    evaluation = evaluation_loaders(sets, train.eval_batch_size, transform=test_transform, device=device)
    return RunData(loader, ChainedBatches(evaluation), tuple(name for name, _ in dataset.ood_sets))
