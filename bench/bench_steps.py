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
from typing import Any

import torch
from ignite.engine import Engine, Events

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
    """Mean wall seconds of ``timed`` steps of ``trainer`` on ``batch``, after ``warmup`` untimed steps."""
    times: list[float] = []

    def start(_: Engine) -> None:
        times.append(-time.perf_counter())

    def stop(_: Engine) -> None:
        times[-1] += time.perf_counter()

    count_skipped_steps(trainer)  # the counter finite_step needs (setup_handlers adds it in a run)
    trainer.add_event_handler(Events.ITERATION_STARTED, start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, stop)
    trainer.run([batch] * (warmup + timed), max_epochs=1)
    return sum(times[warmup:]) / timed


def invglow_rows(timed: int) -> list[StepRow]:
    """The paper's Glow (L = 3, K = 32, 512 hidden) at batch 64: maximum likelihood (pretraining, finetuning without
    outlier loss), with the outlier loss on a Tiny batch of 64 beside it, and the local and dense models."""
    from invglow.config import PAPER
    from invglow.engine import OutlierLossConfig, create_trainer
    from invglow.models import build_model, initialize_actnorms

    batch_size = PAPER.pretrain.batch_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, 32, 32, generator=generator) - 0.5
    outliers = torch.rand(batch_size, 3, 32, 32, generator=generator) - 0.5
    labels = torch.full((batch_size,), -1)
    rows = []
    for kind, outlier, count in (("full", False, timed), ("full", True, 1), ("local", False, 1), ("dense", False, 1)):
        model = build_model(PAPER, kind)
        initialize_actnorms(model, images)
        optimizer = torch.optim.Adamax(model.parameters(), lr=PAPER.pretrain.lr)
        if outlier:
            base = copy.deepcopy(model).requires_grad_(False)
            trainer = create_trainer(model, optimizer, base_model=base, outlier=OutlierLossConfig("class"))
            seconds = time_steps(trainer, ((images, labels), (outliers, labels)), count)
            name, batch = "Glow, outlier loss (finetuning)", f"{batch_size} + {batch_size} Tiny"
        else:
            seconds = time_steps(create_trainer(model, optimizer), (images, labels), count)
            name, batch = f"{kind} Glow" if kind != "full" else "Glow (pretraining, plain finetuning)", str(batch_size)
        rows.append(StepRow("invglow", name, batch, seconds, "step", count))
    return rows


def mchad_rows(timed: int) -> list[StepRow]:
    """WRN-40-2 at the paper's batch of 128 CIFAR-size images (MCHAD), and with 256 outliers beside it (G-MCHAD)."""
    from mchad.config import PAPER_DATASETS, PAPER_METHODS, PAPER_TRAIN
    from mchad.engine import build_model, build_objective, create_trainer

    train = replace(PAPER_TRAIN, pretrained=False)  # random weights: the same time per step
    (dataset,) = (d for d in PAPER_DATASETS if d.name == "CIFAR10")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(train.batch_size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, dataset.n_classes, (train.batch_size,), generator=generator)
    outliers = torch.randn(train.outlier_batch_size, 3, 32, 32, generator=generator)
    outlier_labels = torch.full((train.outlier_batch_size,), -1)
    rows = []
    for method in PAPER_METHODS["CIFAR10"]:
        if method.name not in ("MCHAD", "G-MCHAD"):
            continue
        model = build_model(method, dataset, train)
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        trainer = create_trainer(model, build_objective(method, dataset.n_classes), optimizer, method)
        batch = ((images, labels), (outliers, outlier_labels)) if method.outliers else (images, labels)
        size = f"{train.batch_size} + {train.outlier_batch_size} outliers" if method.outliers else str(train.batch_size)
        seconds = time_steps(trainer, batch, timed)
        rows.append(StepRow("mchad", f"WRN-40-2, {method.name}", size, seconds, "step", timed))
    return rows


def memae_rows(timed: int) -> list[StepRow]:
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
    rows = []
    generator = torch.Generator().manual_seed(0)
    for name, setting, variant, group in settings:
        memory, batch_size = setting.memory, setting.train.batch_size
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
        images = torch.rand(batch_size, *shape, generator=generator) * 2 - 1
        labels = torch.tensor(group or (0,)).repeat(batch_size)[:batch_size]
        seconds = time_steps(trainer, (images, labels), timed)
        rows.append(StepRow("memae", name, str(batch_size), seconds, "step", timed))
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
