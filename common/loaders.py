"""Batch loaders over images held in one (possibly memory-mapped) uint8 tensor, for Ignite ``Engine.run``.

A batch is one ``index_select`` from the whole tensor, moved to the device and transformed there with the batch
transforms of :mod:`common.transforms`, instead of a Python call per sample as in ``torch.utils.data``.
:class:`PairedLoader` draws an outlier batch beside every in-distribution batch for outlier exposure
(MCHAD's G-variants: 128 CIFAR + 256 TinyImages300k images per step; InvGlow's outlier loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Protocol

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events

Batch = tuple[torch.Tensor, torch.Tensor]


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit torch seed unique to (seed, epoch), unlike ``seed + epoch``, which repeats across seeds."""
    return int(np.random.SeedSequence((seed, epoch)).generate_state(1, dtype=np.uint64)[0])


class TensorBatchLoader:
    """Iterate ``(images, labels)`` batches of in-memory tensors, sharded over distributed ranks.

    Every epoch has its own order, a permutation drawn from ``(seed, epoch)``; each ``iter()`` uses the current
    epoch and then advances it, and :meth:`set_epoch` (or :func:`sync_epoch`) sets it, as for a
    ``DistributedSampler``. Ranks share the permutation and take every ``world_size``-th index from position
    ``rank``, so all ranks see the same number of batches: without ``drop_last`` the permutation wraps around to
    fill the last round (up to ``world_size − 1`` samples are seen twice), with ``drop_last`` it is cut to a
    multiple of ``world_size`` and the last incomplete batch is dropped.

    Each batch's indices are sorted before the gather (sequential reads from a memory map); the order within a
    batch therefore follows the index, and labels stay aligned with images. The uint8 gather happens on the CPU
    (into pinned memory for CUDA), the copy is ``non_blocking`` and ``transform`` runs on ``device``.

    Args:
        images: (N, ...) CPU tensor, usually uint8 (N, C, H, W); may be memory-mapped.
        labels: (N,) CPU labels, aligned with ``images``.
        batch_size: samples per batch on each rank.
        shuffle: draw a new permutation every epoch; otherwise visit samples in index order.
        drop_last: drop the last incomplete batch (and the samples that do not fill a round over ranks).
        transform: batch transform applied to the images on ``device`` (labels are left as they are).
        device: where batches are delivered.
        seed: seed of the epoch permutations; must be the same on every rank.
        rank: this process's rank; default ``idist.get_rank()``.
        world_size: number of ranks; default ``idist.get_world_size()``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.rank = idist.get_rank() if rank is None else rank
        self.world_size = idist.get_world_size() if world_size is None else world_size
        if images.device.type != "cpu" or labels.device.type != "cpu":
            raise ValueError(f"images, labels: expected CPU tensors, got {images.device} and {labels.device}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels: expected shape ({len(images)},) to match images, got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed: expected >= 0, got {seed}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size = {self.world_size}, got {self.rank}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.device = torch.device(device)
        self.seed = seed
        self.epoch = 0
        rounding = math.floor if drop_last else math.ceil
        self.samples_per_rank = rounding(len(images) / self.world_size)
        self.num_batches = rounding(self.samples_per_rank / batch_size)
        if self.num_batches == 0:
            raise ValueError(
                f"batch_size: {batch_size} exceeds the {self.samples_per_rank} samples per rank and drop_last "
                f"is set, so there would be no batch ({len(images)} samples, {self.world_size} ranks)"
            )

    def __len__(self) -> int:
        """Number of batches per epoch on this rank."""
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` at the next ``iter()``."""
        self.epoch = epoch

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, in visiting order (before the per-batch sort)."""
        count = len(self.images)
        if self.shuffle:
            generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            order = torch.randperm(count, generator=generator)
        else:
            order = torch.arange(count)
        order = order[torch.arange(self.samples_per_rank * self.world_size) % count]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Batch]:
        """Batches of the current epoch; the epoch then advances by one."""
        indices = self.indices(self.epoch)
        self.epoch += 1
        return self._batches(indices)

    def _batches(self, indices: torch.Tensor) -> Iterator[Batch]:
        for start in range(0, self.num_batches * self.batch_size, self.batch_size):
            yield self.gather(indices[start : start + self.batch_size].sort().values)

    def gather(self, indices: torch.Tensor) -> Batch:
        """The batch of samples ``indices`` ((k,) int64) on ``device``, images transformed."""
        pin = self.device.type == "cuda"
        images = torch.empty((len(indices), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=pin)
        labels = torch.empty(len(indices), dtype=self.labels.dtype, pin_memory=pin)
        torch.index_select(self.images, 0, indices, out=images)
        torch.index_select(self.labels, 0, indices, out=labels)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.transform is not None:
            images = self.transform(images)
        return images, labels


class PairedLoader:
    """Pair every in-distribution batch with the next outlier batch, cycling the outlier loader.

    An epoch is one pass over ``in_distribution``. The outlier loader keeps its place across epochs and starts
    its next epoch (a new permutation) whenever it runs out, so every outlier is used before any repeats.

    Args:
        in_distribution: loader of the in-distribution batches.
        outliers: loader of the outlier batches (e.g. batch size 256 of TinyImages300k beside 128 CIFAR images).
    """

    def __init__(self, in_distribution: TensorBatchLoader, outliers: TensorBatchLoader) -> None:
        self.in_distribution = in_distribution
        self.outliers = outliers
        self._outlier_batches: Iterator[Batch] = iter(())

    def __len__(self) -> int:
        """Number of pairs per epoch: the in-distribution loader's length."""
        return len(self.in_distribution)

    def set_epoch(self, epoch: int) -> None:
        """Set the in-distribution loader's epoch (the outlier loader advances on its own)."""
        self.in_distribution.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[Batch, Batch]]:
        """``((images, labels), (outlier_images, outlier_labels))`` for every in-distribution batch."""
        return self._pairs(iter(self.in_distribution))

    def _pairs(self, batches: Iterator[Batch]) -> Iterator[tuple[Batch, Batch]]:
        for batch in batches:
            yield batch, self._next_outlier_batch()

    def _next_outlier_batch(self) -> Batch:
        batch = next(self._outlier_batches, None)
        if batch is None:
            self._outlier_batches = iter(self.outliers)
            batch = next(self._outlier_batches)
        return batch


class SupportsSetEpoch(Protocol):
    """Anything whose order depends on an epoch number set before iterating."""

    def set_epoch(self, epoch: int) -> None: ...


def sync_epoch(engine: Engine, loader: SupportsSetEpoch) -> None:
    """Set ``loader``'s epoch from ``engine`` at every epoch start, so a resumed run replays the same orders.

    Ignite's ``setup_common_training_handlers(train_sampler=...)`` does this only for a ``DistributedSampler``.

    Args:
        engine: the engine whose ``run`` iterates ``loader``.
        loader: a :class:`TensorBatchLoader` or :class:`PairedLoader`.
    """
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: loader.set_epoch(e.state.epoch - 1))
