"""Hyper-parameters of the MemAE image table and the C-MemAE experiments, one set per scale.

``paper`` follows the manuscript where it says something (Sec. 4.1: N = 100 slots for MNIST and 500 for
CIFAR-10, λ ∈ [1/N, 3/N], α = 0.0002, Adam, the one-class protocol with ~30 % anomalies) and the official or
C-MemAE code where it does not (lr 1e-4, batch 64, 100 epochs: C-MemAE's trainer; the paper gives no image batch
size or epoch count). ``demo`` is the same protocol on scikit-learn's digits upscaled to 16×16, with small
networks of the same style, a higher learning rate and few epochs, so that it runs on a CPU in minutes.
:func:`configure` resolves a scale with the run's seeds and epochs; the result is what a run records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from common.cells import Settings
from common.overrides import dataset_field
from memae.losses import ENTROPY_WEIGHT
from memae.memory import DEFAULT_RESIZE_RULE, check_resize_rule

PAPER_LEARNING_RATE = 1e-4  # official code and C-MemAE (Adam)
PAPER_BATCH_SIZE = 64  # C-MemAE datamodule (the paper does not give one for images)
PAPER_EPOCHS = 100  # official EpochNum and C-MemAE max_epochs


@dataclass(frozen=True)
class MemoryConfig:
    """The memory's N, λ, similarity d, the entropy weight α (Sec. 3) and how λ follows a few-shot strategy's N."""

    num_slots: int
    shrink_threshold: float
    similarity: str = "cosine"  # paper (Sec. 3); "dot" is the official code
    entropy_weight: float = ENTROPY_WEIGHT
    threshold_on_resize: str = DEFAULT_RESIZE_RULE  # λ·N kept: 1/N stays 1/N′ (paper); "keep": C-MemAE code

    def __post_init__(self) -> None:
        check_resize_rule(self.threshold_on_resize)

    def without_sparsity(self) -> MemoryConfig:
        """MemAE-nonSpar (Sec. 4.1): no hard shrinkage and no entropy loss, plain softmax addressing."""
        return replace(self, shrink_threshold=0.0, entropy_weight=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one training run (Adam, no weight decay, no scheduler, last epoch kept)."""

    epochs: int
    batch_size: int = PAPER_BATCH_SIZE
    learning_rate: float = PAPER_LEARNING_RATE
    eval_every: int = 1  # epochs between test AUROC logs (monitoring only: the last epoch is reported)
    checkpoint_every: int = 1  # epochs between checkpoints
    log_every: int = 10  # iterations between tensorboard logs of the training losses

    def with_epochs(self, epochs: int) -> TrainConfig:
        """This training for ``epochs`` epochs, evaluating and checkpointing at least once within them."""
        return replace(
            self,
            epochs=epochs,
            eval_every=min(self.eval_every, epochs),
            checkpoint_every=min(self.checkpoint_every, epochs),
        )


@dataclass(frozen=True)
class DataConfig:
    """A dataset through ``common.datasets.load`` and the paper column it stands for."""

    column: str  # the manuscript's column, e.g. "MNIST"
    name: str = field(metadata=dataset_field("train", "test"))  # common.datasets name
    architecture: str  # key of memae.models.ARCHITECTURES
    options: tuple[tuple[str, Any], ...] = ()  # load options, e.g. (("size", 28),)
    classes: tuple[int, ...] = tuple(range(10))

    @property
    def load_options(self) -> dict[str, Any]:
        """``options`` as keyword arguments of ``common.datasets.load``."""
        return dict(self.options)


@dataclass(frozen=True)
class ImageSetting:
    """One column of the MemAE image table: data, memory and training."""

    data: DataConfig
    memory: MemoryConfig
    train: TrainConfig


@dataclass(frozen=True)
class FewShotConfig:
    """C-MemAE's few-shot transfer: pretrained on ``source_class`` / ``source_group``, fine-tuned on a new class."""

    source_class: int  # the single-memory MemAE that is transferred
    source_group: tuple[int, ...]  # the conditional C-MemAE that is transferred
    new_classes: tuple[int, ...]  # each in turn is the few-shot normal class
    shots: tuple[int, ...]  # k, training images of the new class
    train: TrainConfig


@dataclass(frozen=True)
class ConditionalSetting:
    """The C-MemAE table on one dataset: flat networks, one memory per class of each group."""

    data: DataConfig
    groups: tuple[tuple[int, ...], ...]
    memory: MemoryConfig
    train: TrainConfig
    few_shot: FewShotConfig

    def __post_init__(self) -> None:
        if not self.groups or any(not group or len(set(group)) != len(group) for group in self.groups):
            raise ValueError(f"groups must be non-empty tuples of distinct classes, got {self.groups}")
        grouped = {c for group in self.groups for c in group}
        few = self.few_shot
        if few.source_group not in self.groups or few.source_class not in grouped:
            raise ValueError(
                f"few-shot sources must be trained here: source_group {few.source_group} must be one of "
                f"{self.groups} and source_class {few.source_class} in one of them"
            )
        if set(few.new_classes) & (set(few.source_group) | {few.source_class}):
            raise ValueError(f"few-shot new_classes {few.new_classes} must differ from the pretrained classes")


@dataclass(frozen=True)
class MemAEConfig:
    """Everything one scale runs: the columns of both experiments, the seeds and the CPU threads."""

    image_table: tuple[ImageSetting, ...]
    conditional: tuple[ConditionalSetting, ...]
    seeds: tuple[int, ...] = (0,)
    cpu_threads: int | None = None  # torch intra-op threads on CPU during the run (None: torch's default)


_DIGITS = (("size", 16),)  # 8×8 digits upscaled to 16×16 for the small demo networks
_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
_DEMO_TRAIN = TrainConfig(epochs=20, batch_size=32, learning_rate=3e-3, eval_every=5, checkpoint_every=5, log_every=1)
_DEMO_FEW_SHOT = TrainConfig(
    epochs=10, batch_size=32, learning_rate=1e-3, eval_every=10, checkpoint_every=10, log_every=1
)
_PAPER_TRAIN = TrainConfig(epochs=PAPER_EPOCHS, eval_every=5, checkpoint_every=5)

CONFIGS: dict[str, MemAEConfig] = {
    "demo": MemAEConfig(
        image_table=(
            ImageSetting(DataConfig("MNIST", "digits", "digits", _DIGITS), MemoryConfig(100, 0.01), _DEMO_TRAIN),
        ),
        conditional=(
            ConditionalSetting(
                DataConfig("MNIST", "digits", "digits-flat", _DIGITS),
                groups=_PAIRS,
                memory=MemoryConfig(10, 0.1),
                train=_DEMO_TRAIN,
                few_shot=FewShotConfig(0, (0, 1), (2, 5, 7, 9), (1, 10), _DEMO_FEW_SHOT),
            ),
        ),
        # The demo's networks are tiny: a second intra-op thread gains little and, on a busy machine, its
        # synchronisation can make a step 100× slower.
        cpu_threads=1,
    ),
    "paper": MemAEConfig(
        image_table=(
            # N: Sec. 4.1; λ = 1/N, the low end of the recommended [1/N, 3/N].
            ImageSetting(DataConfig("MNIST", "mnist", "mnist"), MemoryConfig(100, 0.01), _PAPER_TRAIN),
            ImageSetting(DataConfig("CIFAR-10", "cifar10", "cifar"), MemoryConfig(500, 0.002), _PAPER_TRAIN),
        ),
        conditional=(
            # C-MemAE defaults: flat nets, N = 10 (MNIST) / 125 (CIFAR) per memory; λ = 1/N instead of its
            # inert 0.0025 (README). Copy Samples / Copy Best Fitting make N = k slots, and λ = 1/k follows.
            ConditionalSetting(
                DataConfig("MNIST", "mnist", "mnist-flat"),
                groups=_PAIRS,
                memory=MemoryConfig(10, 0.1),
                train=_PAPER_TRAIN,
                few_shot=FewShotConfig(0, (0, 1), (2, 3, 4, 5, 6, 7, 8, 9), (1, 10, 100), _PAPER_TRAIN),
            ),
            ConditionalSetting(
                DataConfig("CIFAR-10", "cifar10", "cifar-flat"),
                groups=_PAIRS,
                memory=MemoryConfig(125, 0.008),
                train=_PAPER_TRAIN,
                few_shot=FewShotConfig(0, (0, 1), (2, 3, 4, 5, 6, 7, 8, 9), (1, 10, 100), _PAPER_TRAIN),
            ),
        ),
        seeds=(0, 1, 2),
    ),
}


def configure(settings: Settings) -> MemAEConfig:
    """The configuration of ``settings.scale`` with ``settings.seeds`` and ``settings.epochs`` (every training,
    the few-shot fine-tuning included) applied."""
    config = CONFIGS[settings.scale]
    if settings.seeds is not None:
        config = replace(config, seeds=settings.seeds)
    if settings.epochs is None:
        return config
    epochs = settings.epochs
    return replace(
        config,
        image_table=tuple(replace(s, train=s.train.with_epochs(epochs)) for s in config.image_table),
        conditional=tuple(
            replace(
                s,
                train=s.train.with_epochs(epochs),
                few_shot=replace(s.few_shot, train=s.few_shot.train.with_epochs(epochs)),
            )
            for s in config.conditional
        ),
    )
