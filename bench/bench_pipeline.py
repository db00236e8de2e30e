"""Data pipeline: CIFAR training batches from in-memory uint8 images, batch transforms vs per-sample Dataset.

Both sides produce 20 batches of 128 from 50,000 random 3×32×32 uint8 images with MCHAD's CIFAR training
augmentation (random crop 32 with padding 4, horizontal flip, normalisation). Ours is ``TensorBatchLoader`` with
one ``BatchPipeline`` per batch; the reference is a ``torch.utils.data.Dataset`` transforming one sample at a
time in torch, batched by a ``DataLoader`` (in the main process, and with two persistent worker processes).
Ours runs on one intra-op thread: on two cores the two-worker reference gets both, and several threads on a busy
machine only wait for one another. The random draws differ, so the outputs are compared by shape and dtype only.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from itertools import islice

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from bench.timing import BenchRow, best_time
from common.loaders import TensorBatchLoader
from common.transforms import BatchPipeline, normalize, random_crop, random_horizontal_flip, to_float

_COUNT, _BATCH, _BATCHES = 50_000, 128, 20
_PADDING = 4
_MEAN = (0.49137, 0.48235, 0.44667)  # CIFAR-10 statistics used by MCHAD (reference mchad.md)
_STD = (0.24706, 0.24353, 0.26159)

Batch = tuple[torch.Tensor, torch.Tensor]


class PerSampleCifarTrain(Dataset):
    """The reference: crop, flip and normalise one (3, 32, 32) uint8 image per ``__getitem__``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels
        self.mean = torch.tensor(_MEAN)[:, None, None]
        self.std = torch.tensor(_STD)[:, None, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Batch:
        image = F.pad(self.images[index], (_PADDING,) * 4)
        top, left = torch.randint(0, 2 * _PADDING + 1, (2,)).tolist()
        image = image[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image.float() / 255 - self.mean) / self.std, self.labels[index]


def _consume(batches: Iterable[Batch]) -> Batch:
    """Iterate ``batches`` (the timed work is producing them) and return the last one."""
    last = deque(batches, maxlen=1)
    if not last:
        raise RuntimeError("the loader produced no batch")
    return last[0]


def _check(batch: Batch) -> None:
    images, labels = batch
    if images.shape != (_BATCH, 3, 32, 32) or images.dtype != torch.float32 or labels.shape != (_BATCH,):
        raise RuntimeError(f"unexpected batch {tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)}")


def _one_thread(function: Callable[[], Batch]) -> Callable[[], Batch]:
    """``function`` run with one intra-op thread (ours: one core, while the two-worker reference gets both)."""

    def run_on_one_thread() -> Batch:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return function()
        finally:
            torch.set_num_threads(threads)

    return run_on_one_thread


def _interleaved_best(functions: dict[str, Callable[[], Batch]], rounds: int = 5) -> dict[str, float]:
    """Best time of each function over ``rounds`` rounds that run them in turn, so load changes hit all alike."""
    best = dict.fromkeys(functions, math.inf)
    for _ in range(rounds):
        for name, function in functions.items():
            best[name] = min(best[name], best_time(function, repeat=1, warmup=0))
    return best


def run() -> list[BenchRow]:
    """Samples/s of 20 training batches: ours vs the per-sample DataLoader with 0 and 2 workers."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (_COUNT, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (_COUNT,), generator=generator)
    pipeline = BatchPipeline(
        [
            partial(random_crop, size=32, padding=_PADDING, generator=generator),
            partial(random_horizontal_flip, generator=generator),
            to_float,
            partial(normalize, mean=_MEAN, std=_STD, inplace=True),
        ]
    )
    ours = TensorBatchLoader(images, labels, _BATCH, shuffle=True, drop_last=True, transform=pipeline)
    dataset = PerSampleCifarTrain(images, labels)
    samples = _BATCH * _BATCHES
    references = {
        workers: DataLoader(
            dataset,
            batch_size=_BATCH,
            sampler=RandomSampler(dataset, num_samples=samples),
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        for workers in (0, 2)
    }
    functions = {"ours": _one_thread(lambda: _consume(islice(ours, _BATCHES)))}
    functions.update({f"reference {workers}": partial(_consume, loader) for workers, loader in references.items()})
    for function in functions.values():
        _check(function())
    times = _interleaved_best(functions)
    return [
        BenchRow(
            benchmark=f"pipeline: {_BATCHES}×{_BATCH} CIFAR train batches (crop 32 pad 4, flip, normalize)",
            ours_s=times["ours"],
            reference=f"per-sample Dataset + DataLoader, num_workers={workers}",
            reference_s=times[f"reference {workers}"],
            note=f"ours {samples / times['ours']:,.0f} samples/s on 1 thread, "
            f"reference {samples / times[f'reference {workers}']:,.0f} samples/s",
        )
        for workers in references
    ]
