"""Data pipeline: CIFAR training batches from in-memory uint8 images, batch transforms vs per-sample Dataset.

Both sides produce 20 batches of 128 from 50,000 random 3×32×32 uint8 images with MCHAD's CIFAR training
augmentation (random crop 32 with padding 4, horizontal flip, normalisation). Ours is ``TensorBatchLoader`` with
one ``BatchPipeline`` per batch; the reference is a ``torch.utils.data.Dataset`` transforming one sample at a
time in torch, batched by a ``DataLoader`` (in the main process, and with two persistent worker processes).
Ours runs on one intra-op thread: on two cores the two-worker reference gets both, and several threads on a busy
machine only wait for one another. The random draws differ, so the outputs are compared by shape and dtype only.

:func:`report` (printed by ``python -m bench pipeline``, ~3 minutes on 2 cores) measures, for every paper-scale
training, its batch pipeline beside its model: the images per second the package's own loader and transforms deliver
at the paper's batch from random uint8 images of the real shape held in memory (Gaussian AD: decoding and resizing
PNG files of MVTec AD's size as ``read_mvtec`` does, and one augmented pass), the same without the batch transforms
(what a GPU host's CPU does: the loader transforms each batch on the training device), the model's training step on
this CPU (Gaussian AD: the B4 feature-extraction forward), its FLOPs per image, and the images per second an H100
would consume at :data:`H100_UTILISATION` of :data:`H100_PEAK_FLOPS`. The margin is the pipeline's rate over that
consumption. Beside it, the eager bound: the rate at which PyTorch's eager mode can launch a step's operations
(:data:`EAGER_OP_SECONDS` each), which caps the consumption of these small models on any GPU unless the step is
captured in a CUDA graph or compiled. Every measurement runs on ``PIPELINE_BENCH_THREADS`` torch and OpenCV threads
(default 1).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from bench.bench_steps import (
    StepCase,
    count_step,
    gaussian_ad_case,
    invglow_cases,
    load,
    mchad_cases,
    memae_cases,
    time_steps,
)
from bench.timing import BenchRow, best_time, best_times_interleaved
from common.loaders import PairedLoader, TensorBatchLoader
from common.transforms import BatchPipeline, normalize, random_crop, random_horizontal_flip, to_float

_COUNT, _BATCH, _BATCHES = 50_000, 128, 20
_CIFAR_IMAGES = _COUNT  # CIFAR-10's training set
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


# ------------------------------------------------------------------------------------------ paper-scale trainings
THREADS_VARIABLE = "PIPELINE_BENCH_THREADS"
"""Environment variable: torch and OpenCV threads of every measurement of :func:`report` (default 1)."""
H100_PEAK_FLOPS = 989e12
"""H100 SXM dense BF16 tensor-core peak, FLOP/s (NVIDIA's datasheet: 1,979 with 2:4 sparsity, 495 dense TF32)."""
H100_UTILISATION = 0.4
"""Share of the peak a tuned mixed-precision training reaches (model-FLOPs utilisation); these small convnets at
batch 16-128 reach less, so the consumption below is an upper bound and the margin a lower one."""
GLOW_TIMING_BATCH = 16
"""In-distribution images of the timed InvGlow CPU step (the paper's 64 take 1-2.5 min per step on one loaded core,
twice that with the outlier batch); its FLOPs per image do not depend on the batch."""
EAGER_OP_SECONDS = 5e-6
"""CPU time PyTorch's eager mode takes to dispatch and launch one GPU kernel (a few µs to ~10 µs on server CPUs): a
step of ``n`` operations cannot take less than ``n`` times this, whatever the GPU. CUDA graphs or ``torch.compile``
remove most of it, leaving the FLOP bound."""
_TINY_IMAGES = 100_000  # Tiny stand-in: 300 MB of uint8, beyond any cache, as the 1.25M training images (3.8 GB)
_MVTEC_SIDE = 1024  # MVTec AD's largest (and most common) image side; Gaussian AD resizes to B4's 380
_MVTEC_FILES = 16  # one paper batch of PNG files


@dataclass(frozen=True)
class Training:
    """One paper-scale training: its batch pipeline and its model step.

    Attributes:
        name: the training, as the table names it.
        pipeline: produces a fixed number of batches through the production path and returns the images delivered.
        gather: the same batches without the batch transforms (uint8, as a GPU host's CPU delivers them: the loader
            transforms a batch on the device it trains on).
        case: the model step (``bench.bench_steps``).
        count_images: in-distribution images of the two counted steps (:func:`measure_model`); small, as FLOPs per
            image and operations per step do not depend on the batch.
        timing_images: in-distribution images of the timed steps (the paper batch unless said otherwise).
        timed: steps timed.
        rounds: timed rounds of the pipeline and the gather, in turn (best kept).
    """

    name: str
    pipeline: Callable[[], int]
    gather: Callable[[], int]
    case: StepCase
    count_images: int
    timing_images: int
    timed: int = 1
    rounds: int = 5


@dataclass(frozen=True)
class ModelRate:
    """A model step: matrix FLOPs per image, aten operations per step (views excluded), images per second on this
    CPU."""

    flops_per_image: float
    operations: int
    images_per_second: float


def _images_in(batch: Any) -> int:
    """Images of a batch ``(images, labels)`` or of a pair of them (``PairedLoader``)."""
    if isinstance(batch[0], torch.Tensor):
        return len(batch[0])
    return sum(len(part[0]) for part in batch)


def _loader_pipelines(loader: TensorBatchLoader | PairedLoader, batches: int) -> tuple[Callable[[], int], ...]:
    """(with the transforms, without them): the first ``batches`` batches of epoch 0 of ``loader`` as a training
    iterates them, and of a copy of it without batch transforms. The epoch's permutation is drawn at the first call
    and cached by the loader (one draw per epoch in a training)."""

    def untransformed(loader: TensorBatchLoader) -> TensorBatchLoader:
        plain = copy.copy(loader)
        plain.transform = None
        return plain

    if isinstance(loader, PairedLoader):
        gather: TensorBatchLoader | PairedLoader = PairedLoader(
            untransformed(loader.in_distribution), untransformed(loader.outliers)
        )
    else:
        gather = untransformed(loader)

    def produce(loader: TensorBatchLoader | PairedLoader) -> int:
        loader.set_epoch(0)
        return sum(_images_in(batch) for batch in islice(loader, batches))

    return partial(produce, loader), partial(produce, gather)


def _uint8_images(count: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``count`` random uint8 images of ``shape`` (the in-memory training set of a paper's shape)."""
    return torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def invglow_trainings() -> list[Training]:
    """Tiny pretraining (batch 64) and CIFAR finetuning with the outlier loss (64 CIFAR + 64 Tiny): the loaders of
    ``invglow.engine`` (random translation ±3 px, flip, dequantization noise)."""
    from common.datasets import ImageSet
    from invglow.config import PAPER
    from invglow.engine import _train_loader

    cpu = torch.device("cpu")
    tiny = ImageSet(_uint8_images(_TINY_IMAGES, (3, 32, 32), 1), torch.full((_TINY_IMAGES,), -1))
    cifar = ImageSet(_uint8_images(_CIFAR_IMAGES, (3, 32, 32), 2), torch.randint(0, 10, (_CIFAR_IMAGES,)))
    pretraining = _train_loader(tiny, PAPER.pretrain, 0, True, cpu)
    finetuning = PairedLoader(
        _train_loader(cifar, PAPER.finetune, 0, True, cpu), _train_loader(tiny, PAPER.finetune, 1, True, cpu)
    )
    plain, outlier = invglow_cases((("full", False), ("full", True)))
    finetuning_name = "InvGlow CIFAR-10 finetuning, outlier loss"
    return [
        Training("InvGlow Tiny pretraining", *_loader_pipelines(pretraining, 40), plain, 2, GLOW_TIMING_BATCH),
        Training(finetuning_name, *_loader_pipelines(finetuning, 40), outlier, 2, GLOW_TIMING_BATCH),
    ]


def mchad_trainings() -> list[Training]:
    """CIFAR-10 batches of 128 (crop, flip, normalise) for MCHAD, with 256 normalised outliers for G-MCHAD: the
    transforms of ``mchad.data.pipelines`` in the loaders ``mchad.data.build_run_data`` builds."""
    from mchad.config import PAPER_DATASETS, PAPER_TRAIN
    from mchad.data import pipelines

    (dataset,) = (d for d in PAPER_DATASETS if d.name == "CIFAR10")
    train_transform, test_transform = pipelines(dataset)
    images = _uint8_images(_CIFAR_IMAGES, (3, 32, 32), 3)
    labels = torch.randint(0, 10, (_CIFAR_IMAGES,))
    outliers = _uint8_images(_TINY_IMAGES, (3, 32, 32), 4)

    def in_distribution() -> TensorBatchLoader:
        return TensorBatchLoader(images, labels, PAPER_TRAIN.batch_size, shuffle=True, transform=train_transform)

    paired = PairedLoader(
        in_distribution(),
        TensorBatchLoader(
            outliers,
            torch.full((_TINY_IMAGES,), -1),
            PAPER_TRAIN.outlier_batch_size,
            shuffle=True,
            drop_last=True,
            transform=test_transform,
        ),
    )
    mchad, gmchad = mchad_cases()
    return [
        Training("MCHAD CIFAR-10 (WRN-40-2)", *_loader_pipelines(in_distribution(), 20), mchad, 2, mchad.batch_size),
        Training("G-MCHAD CIFAR-10 (WRN-40-2)", *_loader_pipelines(paired, 20), gmchad, 2, gmchad.batch_size),
    ]


def memae_trainings() -> list[Training]:
    """One normal class of MNIST (5,923 images) or CIFAR-10 (5,000; a pair for C-MemAE) in batches of 64, scaled to
    [−1, 1] by ``memae.data.normalisation`` in the loader ``memae.experiments`` builds."""
    from memae.data import normalisation

    trainings = []
    for case in memae_cases():
        mnist = "MNIST" in case.model
        shape, count = ((1, 28, 28), 5_923) if mnist else ((3, 32, 32), 5_000)
        if case.model.startswith("C-MemAE"):
            count *= 2
        loader = TensorBatchLoader(
            _uint8_images(count, shape, 5),
            torch.zeros(count, dtype=torch.int64),
            case.batch_size,
            shuffle=True,
            transform=normalisation(shape[0]),
        )
        pipelines = _loader_pipelines(loader, 40)
        trainings.append(Training(case.model, *pipelines, case, case.batch_size, case.batch_size, 5))
    return trainings


def gaussian_ad_trainings(folder: Path) -> list[Training]:
    """EfficientNet-B4 features of MVTec AD at 380 px, batches of 16: the images read from PNG files (decoded and
    resized by ``common.datasets.mvtec.read_mvtec``, the files of ``folder`` in the page cache), and one augmented
    pass over images in memory (``gaussian_ad.augment.augment``, Tables IV and V); both normalised as
    ``gaussian_ad.engine.extract_features`` does (``imagenet_pipeline`` in a ``TensorBatchLoader``)."""
    from common.datasets.mvtec import read_mvtec
    from gaussian_ad.augment import Switches, augment
    from gaussian_ad.backbones import ARCHITECTURES
    from gaussian_ad.engine import imagenet_pipeline
    from gaussian_ad.synthetic_mvtec import write_synthetic_mvtec

    case = gaussian_ad_case()
    write_synthetic_mvtec(folder, ("carpet",), n_train=_MVTEC_FILES, n_test_good=1, n_test_defect=1, size=_MVTEC_SIDE)
    size = ARCHITECTURES["efficientnet-b4"].resolution

    def batches(images: torch.Tensor, normalise: bool) -> int:
        loader = TensorBatchLoader(
            images,
            torch.zeros(len(images), dtype=torch.int64),
            case.batch_size,
            transform=imagenet_pipeline() if normalise else None,
            rank=0,
            world_size=1,
        )
        return sum(_images_in(batch) for batch in loader)

    def from_files(normalise: bool = True) -> int:
        return batches(read_mvtec(folder, "carpet", "train", size=size).images, normalise)

    images = read_mvtec(folder, "carpet", "train", size=size).images
    passes = itertools.count()

    def augmented(normalise: bool = True) -> int:
        return batches(augment(images, Switches.for_category("carpet"), 0, next(passes)), normalise)

    mean_bytes = sum(p.stat().st_size for p in (folder / "carpet" / "train" / "good").glob("*.png")) / _MVTEC_FILES
    name = f"Gaussian AD B4 features, PNG {_MVTEC_SIDE}² ({mean_bytes / 2**20:.1f} MB) → {size}"
    return [
        Training(name, from_files, partial(from_files, False), case, 1, case.batch_size, rounds=3),
        Training(
            f"Gaussian AD B4 features, augmented pass ({size} px)",
            augmented,
            partial(augmented, False),
            case,
            1,
            case.batch_size,
            rounds=3,
        ),
    ]


def measure_model(training: Training) -> ModelRate:
    """FLOPs and operations of the second of two counted steps (the first, a warm-up, also creates the optimiser's
    state), then images per second of ``training.timed`` steps.

    The counted steps update the parameters with the optimiser's multi-tensor (``foreach``) implementation, the one
    torch picks for parameters on a GPU (a few operations per step; on the CPU it loops over the parameters, some
    thousand operations for a Glow); the timed steps with torch's CPU default.
    """
    case = training.case
    trainer, batch, optimizer = case.build()
    groups = [] if optimizer is None else optimizer.param_groups
    defaults = [group.get("foreach") for group in groups]
    for group in groups:
        group["foreach"] = True
    counted = [count_step(trainer, batch(training.count_images)) for _ in range(2)][-1]
    for group, default in zip(groups, defaults, strict=True):
        group["foreach"] = default
    seconds = time_steps(trainer, batch(training.timing_images), training.timed, warmup=0)
    flops = counted.flops / case.images(training.count_images)
    return ModelRate(flops, counted.operations, case.images(training.timing_images) / seconds)


def _rate(images_per_second: float) -> str:
    """Images per second with three significant digits, without an exponent."""
    return f"{images_per_second:,.0f}" if images_per_second >= 100 else f"{images_per_second:.3g}"


def _with_threads(threads: int, function: Callable[[], str]) -> str:
    """``function()`` with ``threads`` torch intra-op and OpenCV threads, restored afterwards."""
    import cv2

    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        return function()
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


def _measure_all(threads: int) -> str:
    """Measure every training (:func:`report`) with the current thread settings; ``threads`` labels the table."""
    before = load()
    h100 = H100_PEAK_FLOPS * H100_UTILISATION
    plural = "s" * (threads > 1)
    lines = [
        f"| training | batch | pipeline samples/s (this CPU, {threads} thread{plural}) | gather only samples/s "
        f"| model samples/s (this CPU, {threads} thread{plural}) | GFLOP/sample "
        f"| H100 samples/s ({H100_PEAK_FLOPS / 1e12:.0f} TFLOP/s × {H100_UTILISATION:.0%}) | margin "
        f"| cores for margin ≥ 1 | ops/step | H100 samples/s, eager bound ({EAGER_OP_SECONDS * 1e6:g} µs/op) "
        "| margin, eager |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    models: dict[str, ModelRate] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mvtec-") as folder:
        trainings = [*invglow_trainings(), *mchad_trainings(), *memae_trainings(), *gaussian_ad_trainings(Path(folder))]
        for training in trainings:
            images = training.pipeline()  # the warm-up (draws the epoch's permutation), and the images per call
            if training.gather() != images:
                raise RuntimeError(f"{training.name}: the gather-only batches hold other images than the pipeline's")
            pipeline_s, gather_s = best_times_interleaved(
                [training.pipeline, training.gather], repeat=training.rounds, warmup=0
            )
            pipeline_rate = images / pipeline_s
            case = training.case
            key = f"{case.paper}: {case.model}"
            if key not in models:
                models[key] = measure_model(training)
            model = models[key]
            consumption = h100 / model.flops_per_image
            eager = min(consumption, case.images(case.batch_size) / (model.operations * EAGER_OP_SECONDS))
            margin = pipeline_rate / consumption
            batch = case.batch_label
            if training.timing_images != case.batch_size:
                batch += f" (CPU step timed at {training.timing_images})"
            lines.append(
                f"| {training.name} | {batch} | {pipeline_rate:,.0f} | {images / gather_s:,.0f} "
                f"| {_rate(model.images_per_second)} | {model.flops_per_image / 1e9:.3g} | {consumption:,.0f} "
                f"| {margin:.2g} | {max(1, math.ceil(threads / margin))} | {model.operations:,} | {eager:,.0f} "
                f"| {pipeline_rate / eager:.2g} |"
            )
    header = (
        f"{threads} torch/OpenCV thread{plural} ({THREADS_VARIABLE}); before: {before}; after: {load()}. "
        f"H100 samples/s = {H100_PEAK_FLOPS / 1e12:.0f} TFLOP/s (H100 SXM, dense BF16) × {H100_UTILISATION:.0%} "
        "utilisation ÷ FLOPs per sample (matrix products and convolutions of one training step, forward and "
        "backward, counted by FlopCounterMode; Gaussian AD: one forward). margin = pipeline ÷ H100 samples/s; "
        "cores for margin ≥ 1 assume the pipeline scales linearly with cores. Eager bound: the paper batch's images "
        f"÷ (ops/step × {EAGER_OP_SECONDS * 1e6:g} µs), the rate PyTorch's eager launches allow (at most the FLOP "
        "bound); margin, eager = pipeline ÷ it."
    )
    return "\n".join([header, "", *lines])


def report() -> str:
    """Pipeline vs model samples/s of every paper-scale training, with the H100 margin (a markdown table)."""
    threads = int(os.environ.get(THREADS_VARIABLE, "1"))
    return _with_threads(threads, lambda: _measure_all(threads))
