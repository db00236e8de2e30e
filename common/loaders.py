"""Batch loaders over images held in one (possibly memory-mapped) uint8 tensor, for Ignite ``Engine.run``.

A batch is one ``index_select`` from the whole tensor, moved to the device and transformed there with the batch
transforms of :mod:`common.transforms`, instead of a Python call per sample as in ``torch.utils.data``.
:class:`PairedLoader` draws an outlier batch beside every in-distribution batch for outlier exposure
(MCHAD's G-variants: 128 CIFAR + 256 TinyImages300k images per step; InvGlow's outlier loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import ignite.distributed as idist
import numpy as np
import torch

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
        self._skip = 0
        self._cached_indices: tuple[int, torch.Tensor] | None = None
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

    def skip_batches(self, count: int) -> None:
        """Leave out the first ``count`` batches at the next ``iter()`` (resuming part-way through an epoch)."""
        if not 0 <= count <= self.num_batches:
            raise ValueError(f"count: expected 0 <= count <= {self.num_batches} batches, got {count}")
        self._skip = count

    def batch_at(self, epoch: int, position: int) -> Batch:
        """Batch number ``position`` of ``epoch``, exactly as iterating that epoch would deliver it."""
        if self._cached_indices is None or self._cached_indices[0] != epoch:
            self._cached_indices = (epoch, self.indices(epoch))
        start = position * self.batch_size
        return self.gather(self._cached_indices[1][start : start + self.batch_size].sort().values)

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
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0
        return (self.batch_at(epoch, position) for position in range(skip, self.num_batches))

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
    """Pair every in-distribution batch with an outlier batch, cycling through the outlier loader's epochs.

    In-distribution step ``g`` (counted over all epochs) gets outlier batch ``g`` of the endless sequence of
    outlier epochs, so every outlier is used before any repeats, and the pairing depends only on the position:
    a run resumed part-way (``set_epoch`` + ``skip_batches``) sees exactly the pairs an uninterrupted run sees.

    Args:
        in_distribution: loader of the in-distribution batches.
        outliers: loader of the outlier batches (e.g. batch size 256 of TinyImages300k beside 128 CIFAR images).
    """

    def __init__(self, in_distribution: TensorBatchLoader, outliers: TensorBatchLoader) -> None:
        self.in_distribution = in_distribution
        self.outliers = outliers

    def __len__(self) -> int:
        """Number of pairs per epoch: the in-distribution loader's length."""
        return len(self.in_distribution)

    def set_epoch(self, epoch: int) -> None:
        """Use the in-distribution permutation of ``epoch`` (and the outlier batches after it) next."""
        self.in_distribution.set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        """Leave out the first ``count`` pairs at the next ``iter()``."""
        self.in_distribution.skip_batches(count)

    def __iter__(self) -> Iterator[tuple[Batch, Batch]]:
        """``((images, labels), (outlier_images, outlier_labels))`` for every in-distribution batch."""
        first_step = self.in_distribution.epoch * len(self.in_distribution) + self.in_distribution._skip
        for step, batch in enumerate(self.in_distribution, start=first_step):
            yield batch, self.outliers.batch_at(*divmod(step, len(self.outliers)))
