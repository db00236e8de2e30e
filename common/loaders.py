"""Batch loaders over images held in one (possibly memory-mapped) uint8 tensor, for Ignite ``Engine.run``.

A batch is one ``index_select`` from the whole tensor, moved to the device and transformed there with the batch
transforms of :mod:`common.transforms`, instead of a Python call per sample as in ``torch.utils.data``.
:class:`PairedLoader` draws an outlier batch beside every in-distribution batch for outlier exposure
(MCHAD's G-variants: 128 CIFAR + 256 TinyImages300k images per step; InvGlow's outlier loss).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import ignite.distributed as idist
import numpy as np
import torch

from common.smoke import capped_batch_size, evaluation_subset

Batch = tuple[torch.Tensor, torch.Tensor]


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit torch seed unique to (seed, epoch), unlike ``seed + epoch``, which repeats across seeds."""
    return int(np.random.SeedSequence((seed, epoch)).generate_state(1, dtype=np.uint64)[0])


class TensorBatchLoader:
    """Iterate ``(images, labels)`` batches of in-memory tensors; each distributed rank gets its share of every batch.

    Every epoch has its own order, a permutation drawn from ``(seed, epoch)``; each ``iter()`` uses the current
    epoch and then advances it, and :meth:`set_epoch` sets it, as for a ``DistributedSampler``. Batch ``b`` of an
    epoch holds the samples at positions ``[b·B, (b+1)·B)`` of that order, ``B = batch_size`` being the **global**
    batch (over all ranks); without ``drop_last`` the last batch is smaller, with it the last incomplete batch is
    dropped. Each batch's indices are sorted before the gather (sequential reads from a memory map), so the order
    within a batch follows the index and labels stay aligned with images.

    Under ``ignite.distributed`` with ``R`` ranks every rank visits the same batches, and rank ``r`` keeps the
    ``r``-th of ``R`` contiguous blocks of each (:func:`rank_block`; ``B / R`` samples, sizes differ by one at
    most in a smaller last batch): the ranks' blocks of batch ``b``, gathered rank after rank, are the one-process
    batch ``b`` in its order. Every rank gathers and transforms the whole batch and then keeps its block, so a
    random transform drawing per-sample numbers from a generator in the same state on every rank (``common.run``
    seeds all ranks alike) gives each sample the augmentation and noise it gets in one process. The price is the
    transform of ``R`` times more images per rank, small beside a network's forward and backward.

    The uint8 gather happens on the CPU (into pinned memory for CUDA), the copy is ``non_blocking`` and
    ``transform`` runs on ``device``.

    Args:
        images: (N, ...) CPU tensor, usually uint8 (N, C, H, W); may be memory-mapped.
        labels: (N,) CPU labels, aligned with ``images``.
        batch_size: samples per batch over all ranks; a multiple of the number of ranks (a smoke run caps it,
            :func:`common.smoke.capped_batch_size`).
        shuffle: draw a new permutation every epoch; otherwise visit samples in index order.
        drop_last: drop the last incomplete batch.
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
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size: {batch_size} is the global batch, split over {self.world_size} processes, so it must "
                f"be a multiple of {self.world_size}"
            )
        if seed < 0:
            raise ValueError(f"seed: expected >= 0, got {seed}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size = {self.world_size}, got {self.rank}")
        self.images = images
        self.labels = labels
        self.batch_size = capped_batch_size(batch_size, self.world_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.device = torch.device(device)
        self.seed = seed
        self.epoch = 0
        self._skip = 0
        self._cached_order: tuple[int, torch.Tensor] | None = None
        self.num_batches = batch_count(len(images), self.batch_size, drop_last)
        if self.num_batches == 0:
            raise ValueError(
                f"batch_size: {batch_size} exceeds the {len(images)} samples and drop_last is set, so there would "
                "be no batch"
            )

    def __len__(self) -> int:
        """Number of batches per epoch (the same on every rank)."""
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
        """This rank's block of batch number ``position`` of ``epoch``, exactly as iterating that epoch delivers it."""
        images, labels = self.global_batch_at(epoch, position)
        if self.world_size == 1:
            return images, labels
        block = rank_block(len(labels), self.rank, self.world_size)
        return images[block], labels[block]

    def global_batch_at(self, epoch: int, position: int) -> Batch:
        """The whole batch ``position`` of ``epoch`` over all ranks, transformed (e.g. for a data-dependent
        initialisation that every rank must compute alike)."""
        if self._cached_order is None or self._cached_order[0] != epoch:
            self._cached_order = (epoch, self.indices(epoch))
        start = position * self.batch_size
        return self.gather(self._cached_order[1][start : start + self.batch_size].sort().values)

    def indices(self, epoch: int) -> torch.Tensor:
        """The sample indices of ``epoch`` in visiting order (before the per-batch sort), the same on every rank."""
        if not self.shuffle:
            return torch.arange(len(self.images))
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(len(self.images), generator=generator)

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


def batch_count(count: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches of an epoch over ``count`` samples: ``count // batch_size`` with ``drop_last``, else rounded up."""
    return count // batch_size if drop_last else math.ceil(count / batch_size)


def rank_block(count: int, rank: int | None = None, world_size: int | None = None) -> slice:
    """Rank ``rank``'s contiguous block of ``count`` items split over ``world_size`` ranks (``torch.tensor_split``'s
    split: the first ``count % world_size`` ranks get one item more); defaults from ``ignite.distributed``."""
    rank = idist.get_rank() if rank is None else rank
    world_size = idist.get_world_size() if world_size is None else world_size
    size, extra = divmod(count, world_size)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


def evaluation_loaders(
    sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    batch_size: int,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> list[TensorBatchLoader]:
    """Loaders over this rank's contiguous block of the ``(images, labels)`` sets taken one after the other.

    Rank ``r`` evaluates block ``r`` of the concatenated sets (:func:`rank_block`), in index order and in batches
    of ``batch_size / world_size`` (rounded up), one loader per set it touches. Outputs gathered rank after rank
    (``common.metrics.CollectTensors``) thus come back in the order of the sets' samples, as in one process.
    Evaluation runs without collective operations per batch, so the ranks may run different numbers of batches.
    A smoke run keeps at most two batches of each set (``common.smoke.evaluation_subset``).

    Raises:
        ValueError: fewer samples than ranks (a rank without samples could not join the gathers).
    """
    subsets = [evaluation_subset(len(images), batch_size) for images, _ in sets]
    sets = [(images[subset], labels[subset]) for (images, labels), subset in zip(sets, subsets, strict=True)]
    rank, world_size = idist.get_rank(), idist.get_world_size()
    total = sum(len(images) for images, _ in sets)
    if total < world_size:
        raise ValueError(f"sets: {total} samples cannot be evaluated by {world_size} processes, each needs one")
    block, offset, loaders = rank_block(total, rank, world_size), 0, []
    per_rank = math.ceil(batch_size / world_size)
    for images, labels in sets:
        start, stop = max(block.start - offset, 0), min(block.stop - offset, len(images))
        offset += len(images)
        if start < stop:
            options = {"transform": transform, "device": device, "rank": 0, "world_size": 1}
            loaders.append(TensorBatchLoader(images[start:stop], labels[start:stop], per_rank, **options))
    return loaders


class ChainedBatches:
    """The batches of several loaders one after the other (the evaluation pass over every test case)."""

    def __init__(self, loaders: Sequence[TensorBatchLoader]) -> None:
        self.loaders = tuple(loaders)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[Batch]:
        return itertools.chain.from_iterable(self.loaders)


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
