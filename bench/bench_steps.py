"""Seconds per training step of each paper's paper-size model at its paper batch, on this machine's CPU.

``python -m bench steps`` (~15 minutes on a shared 2-core machine: an InvGlow step takes 13–130 s) builds each
model from its package's paper configuration and times whole steps of the package's own trainer (forward, loss,
backward, optimiser step, the non-finite check) on random inputs of the paper's shapes, after an untimed warm-up
step. Gaussian AD trains nothing: its row is seconds per image of EfficientNet-B4 feature extraction at 380 px.
Random weights: a step's time does not depend on them. Torch runs ``STEPS_BENCH_THREADS`` intra-op threads (default
1: on a shared machine a second thread mostly waits for a busy core, and small models then run many times slower;
one thread gives core-seconds that other machines can scale). The table gives the load average (``uptime``) before
and after, since other processes on the machine slow every step.

The package READMEs multiply these by the steps ``python main.py PAPER --scale paper --list-cells`` counts.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
from ignite.engine import Engine, Events
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from common.handlers import count_skipped_steps


@dataclass(frozen=True)
class StepRow:
    """One measurement: what was timed, its batch, the mean seconds per step (or image) and how many were timed."""

    paper: str
    model: str
    batch: str
    seconds: float
    unit: str
    timed: int


def time_steps(trainer: Engine, batch: Any, timed: int, warmup: int = 1) -> float:
    """Mean wall seconds of ``timed`` steps of ``trainer`` on ``batch``, after ``warmup`` untimed steps.

    The timing handlers are removed afterwards, so the same trainer can be timed again (or counted, :func:`count_step`).
    """
    times: list[float] = []

    def start(_: Engine) -> None:
        times.append(-time.perf_counter())

    def stop(_: Engine) -> None:
        times[-1] += time.perf_counter()

    count_skipped_steps(trainer)  # the counter finite_step needs (setup_handlers adds it in a run)
    with (
        trainer.add_event_handler(Events.ITERATION_STARTED, start),
        trainer.add_event_handler(Events.ITERATION_COMPLETED, stop),
    ):
        trainer.run([batch] * (warmup + timed), max_epochs=1)
    return sum(times[warmup:]) / timed


@dataclass(frozen=True)
class StepCount:
    """What one step ran: FLOPs of its matrix products and convolutions, aten operations, wall seconds."""

    flops: float
    operations: int
    seconds: float


class _OperationCounter(TorchDispatchMode):
    """Counts the aten operations that compute (views excluded): on a GPU, about one kernel launch each."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def count_step(trainer: Engine, batch: Any) -> StepCount:
    """Run one step of ``trainer`` on ``batch`` and count it (:class:`StepCount`).

    ``torch.utils.flop_counter.FlopCounterMode`` counts the matrix products and convolutions of the forward and
    backward passes (2 FLOPs per multiply-add); element-wise operations, normalisations and the optimiser's update
    are not counted.
    """
    count_skipped_steps(trainer)
    start = time.perf_counter()
    with FlopCounterMode(display=False) as flops, _OperationCounter() as operations:
        trainer.run([batch], max_epochs=1)
    return StepCount(float(flops.get_total_flops()), operations.count, time.perf_counter() - start)


class BuiltStep(NamedTuple):
    """A built :class:`StepCase`: its trainer, its batch maker and its optimiser (None: nothing is trained)."""

    trainer: Engine
    batch: Callable[[int], Any]
    optimizer: torch.optim.Optimizer | None


@dataclass(frozen=True)
class StepCase:
    """A paper-size model's training step as its package runs it, built on demand.

    ``build()`` returns a :class:`BuiltStep`: the package's trainer (an Ignite ``Engine``), ``batch(n)``, a random
    step input with ``n`` in-distribution images and, where the paper trains with outlier batches, outliers in the
    paper's ratio (``outlier_batch_size / batch_size``), and the trainer's optimiser; the paper's step is
    ``batch(batch_size)``.
    """

    paper: str
    model: str
    batch_size: int
    outlier_batch_size: int
    build: Callable[[], BuiltStep]

    @property
    def batch_label(self) -> str:
        """The paper's batch, e.g. ``"128 + 256 outliers"``."""
        if not self.outlier_batch_size:
            return str(self.batch_size)
        return f"{self.batch_size} + {self.outlier_batch_size} outliers"

    def images(self, n: int) -> int:
        """Images of ``batch(n)``: ``n`` plus its outliers."""
        return n + n * self.outlier_batch_size // self.batch_size


def invglow_cases(variants: Sequence[tuple[str, bool]] = (("full", False),)) -> list[StepCase]:
    """The paper's Glow (L = 3, K = 32, 512 hidden) at batch 64 per ``(kind, outlier)`` of ``variants``: kind
    ``"full"``, ``"local"`` or ``"dense"``; with ``outlier``, the finetuning's outlier loss on a Tiny batch of 64
    beside the in-distribution batch (and the frozen pretrained copy that loss scores it with)."""
    from invglow.config import PAPER
    from invglow.engine import OutlierLossConfig, create_trainer
    from invglow.models import build_model, initialize_actnorms

    batch_size = PAPER.pretrain.batch_size

    def images(n: int, seed: int) -> torch.Tensor:
        return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) - 0.5

    def case(kind: str, outlier: bool) -> StepCase:
        def build() -> BuiltStep:
            model = build_model(PAPER, kind)
            initialize_actnorms(model, images(batch_size, 0))
            optimizer = torch.optim.Adamax(model.parameters(), lr=PAPER.pretrain.lr)
            if not outlier:
                return BuiltStep(
                    create_trainer(model, optimizer), lambda n: (images(n, 0), torch.full((n,), -1)), optimizer
                )
            base = copy.deepcopy(model).requires_grad_(False)
            trainer = create_trainer(model, optimizer, base_model=base, outlier=OutlierLossConfig("class"))
            labels = torch.full((batch_size,), -1)
            return BuiltStep(trainer, lambda n: ((images(n, 0), labels[:n]), (images(n, 1), labels[:n])), optimizer)

        if outlier:
            name = "Glow, outlier loss (finetuning)"
        else:
            name = f"{kind} Glow" if kind != "full" else "Glow (pretraining, plain finetuning)"
        return StepCase("invglow", name, batch_size, batch_size if outlier else 0, build)

    return [case(kind, outlier) for kind, outlier in variants]


def invglow_rows(timed: int) -> list[StepRow]:
    """The full Glow (pretraining, plain finetuning) timed ``timed`` steps, with the outlier loss (finetuning), the
    local and the dense models one step each (:func:`invglow_cases`)."""
    variants = (("full", False), ("full", True), ("local", False), ("dense", False))
    rows = []
    for case, count in zip(invglow_cases(variants), (timed, 1, 1, 1), strict=True):
        trainer, batch, _ = case.build()
        seconds = time_steps(trainer, batch(case.batch_size), count)
        label = f"{case.batch_size} + {case.outlier_batch_size} Tiny" if case.outlier_batch_size else case.batch_label
        rows.append(StepRow(case.paper, case.model, label, seconds, "step", count))
    return rows


def mchad_cases() -> list[StepCase]:
    """WRN-40-2 at the paper's batch of 128 CIFAR-size images (MCHAD), and with 256 outliers beside it (G-MCHAD)."""
    from mchad.config import PAPER_DATASETS, PAPER_METHODS, PAPER_TRAIN
    from mchad.engine import build_model, build_objective, create_trainer

    train = replace(PAPER_TRAIN, pretrained=False)  # random weights: the same time per step
    (dataset,) = (d for d in PAPER_DATASETS if d.name == "CIFAR10")
    ratio = train.outlier_batch_size // train.batch_size

    def case(method: Any) -> StepCase:
        def build() -> BuiltStep:
            model = build_model(method, dataset, train)
            optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
            trainer = create_trainer(model, build_objective(method, dataset.n_classes), optimizer, method)

            def batch(n: int) -> Any:
                generator = torch.Generator().manual_seed(0)
                images = torch.randn(n, 3, 32, 32, generator=generator)
                labels = torch.randint(0, dataset.n_classes, (n,), generator=generator)
                if not method.outliers:
                    return images, labels
                outliers = torch.randn(n * ratio, 3, 32, 32, generator=generator)
                return (images, labels), (outliers, torch.full((n * ratio,), -1))

            return BuiltStep(trainer, batch, optimizer)

        outliers = train.outlier_batch_size if method.outliers else 0
        return StepCase("mchad", f"WRN-40-2, {method.name}", train.batch_size, outliers, build)

    return [case(method) for method in PAPER_METHODS["CIFAR10"] if method.name in ("MCHAD", "G-MCHAD")]


def mchad_rows(timed: int) -> list[StepRow]:
    """:func:`mchad_cases`, ``timed`` steps each."""
    rows = []
    for case in mchad_cases():
        trainer, batch, _ = case.build()
        seconds = time_steps(trainer, batch(case.batch_size), timed)
        rows.append(StepRow(case.paper, case.model, case.batch_label, seconds, "step", timed))
    return rows


def memae_cases() -> list[StepCase]:
    """The paper's MemAE of each image-table column and C-MemAE of each conditional column, at batch 64."""
    from memae.config import CONFIGS
    from memae.engine import create_trainer
    from memae.models import ARCHITECTURES, build_model

    config = CONFIGS["paper"]
    settings: list[tuple[str, Any, str, Sequence[int] | None]] = [
        (f"MemAE {s.data.column} ({s.data.architecture})", s, "memae", None) for s in config.image_table
    ]
    settings += [
        (f"C-MemAE {s.data.column} ({s.data.architecture}, a pair)", s, "cmemae", s.groups[0])
        for s in config.conditional
    ]

    def case(name: str, setting: Any, variant: str, group: Sequence[int] | None) -> StepCase:
        def build() -> BuiltStep:
            memory = setting.memory
            model = build_model(
                setting.data.architecture,
                variant,
                num_slots=memory.num_slots,
                shrink_threshold=memory.shrink_threshold,
                similarity=memory.similarity,
                num_conditions=len(group) if group else 1,
            )
            optimizer = torch.optim.Adam(model.parameters(), lr=setting.train.learning_rate)
            trainer = create_trainer(model, optimizer, memory.entropy_weight, group)
            shape = ARCHITECTURES[setting.data.architecture].input_shape

            def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
                images = torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
                return images, torch.tensor(group or (0,)).repeat(n)[:n]

            return BuiltStep(trainer, batch, optimizer)

        return StepCase("memae", name, setting.train.batch_size, 0, build)

    return [case(*setting) for setting in settings]


def memae_rows(timed: int) -> list[StepRow]:
    """:func:`memae_cases`, ``timed`` steps each."""
    rows = []
    for case in memae_cases():
        trainer, batch, _ = case.build()
        seconds = time_steps(trainer, batch(case.batch_size), timed)
        rows.append(StepRow(case.paper, case.model, case.batch_label, seconds, "step", timed))
    return rows


def gaussian_ad_rows(images: int, batch_size: int = 4) -> list[StepRow]:
    """Seconds per image of EfficientNet-B4 feature extraction at its 380 px, in batches of ``batch_size``."""
    from gaussian_ad.backbones import ARCHITECTURES, EfficientNetFeatures
    from gaussian_ad.engine import extract_features

    size = ARCHITECTURES["efficientnet-b4"].resolution
    model = EfficientNetFeatures("efficientnet-b4").eval()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
    device = torch.device("cpu")
    extract_features(model, pixels[:batch_size], device, batch_size, progress=False)  # warm-up
    start = time.perf_counter()
    extract_features(model, pixels, device, batch_size, progress=False)
    seconds = (time.perf_counter() - start) / images
    return [StepRow("gaussian_ad", f"EfficientNet-B4 features, {size} px", str(batch_size), seconds, "image", images)]


def gaussian_ad_case() -> StepCase:
    """EfficientNet-B4 feature extraction at its 380 px in the paper's batches of 16: the package's extractor engine
    (:func:`gaussian_ad.engine.create_feature_extractor`) on normalised images; forward passes only."""
    from gaussian_ad.backbones import ARCHITECTURES, EfficientNetFeatures
    from gaussian_ad.config import CONFIGS
    from gaussian_ad.engine import create_feature_extractor, imagenet_pipeline

    size = ARCHITECTURES["efficientnet-b4"].resolution

    def build() -> BuiltStep:
        engine = create_feature_extractor(EfficientNetFeatures("efficientnet-b4").eval(), torch.device("cpu"))

        def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            generator = torch.Generator().manual_seed(0)
            pixels = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
            return imagenet_pipeline()(pixels), torch.zeros(n, dtype=torch.int64)

        return BuiltStep(engine, batch, None)

    model = f"EfficientNet-B4 features, {size} px"
    return StepCase("gaussian_ad", model, CONFIGS["paper"].batch_size, 0, build)


def load() -> str:
    """``uptime``'s load averages (1, 5, 15 min) and the number of CPUs."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
        averages = uptime.rsplit("load average", 1)[1].lstrip("s: ")
    except (OSError, subprocess.CalledProcessError, IndexError):
        averages = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"load average {averages} on {os.cpu_count()} CPUs"


def report(timed: int = 2) -> str:
    """Measure every paper's rows and return them as a markdown table with the load before and after."""
    torch.set_num_threads(int(os.environ.get("STEPS_BENCH_THREADS", "1")))
    before = load()
    measures: list[Callable[[], list[StepRow]]] = [
        lambda: mchad_rows(timed),
        lambda: memae_rows(timed * 5),
        lambda: gaussian_ad_rows(images=8),
        lambda: invglow_rows(timed),
    ]
    rows = [row for measure in measures for row in measure()]
    lines = [
        f"CPU: {torch.get_num_threads()} torch threads; before: {before}; after: {load()}",
        "",
        "| paper | model | batch | seconds | per | timed |",
        "|---|---|---|---:|---|---:|",
    ]
    lines += [f"| {r.paper} | {r.model} | {r.batch} | {r.seconds:.3g} | {r.unit} | {r.timed} |" for r in rows]
    return "\n".join(lines)
