"""Hyper-parameters of InvGlow (Schirrmeister et al., NeurIPS 2020), one configuration per scale.

``paper``: the manuscript's protocol as the original code runs it (reference note invglow.md §1.1, §2, §3):
Glow L = 3 × K = 32, 512 hidden, affine coupling, LU 1×1 convs; Adamax(5e-4, weight decay 5e-5), batch 64,
250 epochs per stage (``main.py`` of the original; the paper's own budget could not be checked); outlier loss
λ = 6000, T = 1000 on Tiny batches (grey images: scaled by their number of dimensions, see
:data:`GreyOutlierScaling`); Tiny subset with CIFAR images, as the manuscript (``exclude_cifar_from_tiny``).
``demo``: the same code paths, small enough for a CPU in minutes.
:func:`configure` resolves a scale with a run's seeds and epochs (the configuration recorded in ``config.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from common.cells import Settings
from common.overrides import dataset_field
from invglow.flows import CouplingKind

MemorySaving = Literal["none", "checkpoint"]


@dataclass(frozen=True)
class GlowConfig:
    """The flow (reference note §2.1).

    Attributes:
        channels: 3 (RGB) or 1 (grey MNIST / Fashion-MNIST with a grey Tiny model).
        image_size: side of the (square) input; 32 in the paper.
        n_scales: L = 3.
        steps: K = 32 flow steps per scale.
        hidden: 512 coupling-net channels.
        coupling: ``"affine"`` (all results) or ``"additive"``.
        lu: LU-decomposed 1×1 convolutions (``LU_decomposed=True``).
        dense: the fully connected variant (the original ran it with K = 8 and frozen orthogonal mixing).
        memory_saving: ``"none"`` (the faster path) keeps every activation for the backward pass;
            ``"checkpoint"`` keeps the input of every ``models.CHECKPOINT_SEGMENT`` flow steps only and recomputes
            the rest in the backward pass (activation checkpointing: less memory for one more forward pass, the
            same gradients), in every model :func:`~invglow.models.build_model` builds.
    """

    channels: int = 3
    image_size: int = 32
    n_scales: int = 3
    steps: int = 32
    hidden: int = 512
    coupling: CouplingKind = "affine"
    lu: bool = True
    dense: bool = False
    memory_saving: MemorySaving = "none"


NonFiniteExamples = Literal["recompute", "skip_step"]


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (pretraining on Tiny or finetuning), reference note §3.

    Attributes:
        epochs: passes over the training set (250 in the original ``main.py``).
        lr: Adamax learning rate 5e-4.
        weight_decay: Adamax weight decay 5e-5.
        batch_size: 64 (shuffled, last incomplete batch dropped).
        eval_batch_size: 512.
        init_batches: ActNorm data-dependent init from the first 11 batches (704 images) of a model trained from
            scratch.
        translate_pixels: random translation of up to ±0.1 · 32 ≈ 3 pixels (RandomAffine(translate=0.1)).
        outlier_weight: λ = 6000 of the outlier loss (per-image nats).
        outlier_temperature: T = 1000 of the outlier loss.
        non_finite_examples: what a batch with some non-finite log-likelihoods does: ``"recompute"`` (the original
            code, ``BaseFineIndependent.get_nlls``): forward again on the finite examples while more than a quarter
            of the batch is left; ``"skip_step"``: the step's loss is non-finite and the whole step is skipped.
            Either way a step whose loss or gradients are still non-finite is skipped and counted.
    """

    epochs: int = 250
    lr: float = 5e-4
    weight_decay: float = 5e-5
    batch_size: int = 64
    eval_batch_size: int = 512
    init_batches: int = 11
    translate_pixels: int = 3
    outlier_weight: float = 6000.0
    outlier_temperature: float = 1000.0
    non_finite_examples: NonFiniteExamples = "recompute"


@dataclass(frozen=True)
class DataConfig:
    """Which sets play which role (reference note §4).

    Attributes:
        in_distribution: in-distribution sets, each finetuned from the general (Tiny) model.
        ood: test sets used as anomalies; each in-distribution set is also tested against the others.
        no_flip: sets trained without horizontal flips (SVHN: digits must not be mirrored).
        demo_tiny_images: images in the locally generated Tiny-format binary (demo only).
        demo_train: training images per generated in-distribution set (demo only).
        demo_test: test images per generated set (demo only).
    """

    in_distribution: tuple[str, ...] = field(
        default=("cifar10", "cifar100", "svhn"), metadata=dataset_field("train", "test")
    )
    ood: tuple[str, ...] = field(
        default=("svhn", "cifar10", "cifar100", "lsun", "celeba", "tinyimagenet"), metadata=dataset_field("test")
    )
    # lsun: the ten scene categories' validation LMDBs, tinyimagenet: TinyImageNet-200's test folder, as the original
    # evaluate.py (not ODIN's resized copies, `lsun-resize` / `tinyimagenet-resize`, which other papers use)
    no_flip: tuple[str, ...] = field(default=("svhn",), metadata=dataset_field())
    demo_tiny_images: int = 0
    demo_train: int = 0
    demo_test: int = 0


@dataclass(frozen=True)
class LocalSemanticConfig:
    """The local-vs-semantic analysis (reference note §2.1 "Dense" and "Local / patch variant", §4 item 4): models
    trained from scratch on each in-distribution set beside a full Glow (the original ``main.py``'s "Local model"
    and "Fully connected model", both on CIFAR-10).

    Attributes:
        patch_size: side p of the local model's non-overlapping patches: 8, i.e. 16 patches of a 32×32 image.
        patch_steps: K of the local model's single scale (32).
        dense_steps: K per scale of the fully connected Glow (8; frozen orthogonal mixing, no LU).
        dense_hidden: width of its fully connected coupling nets (512, as every model of the original).
        train: the from-scratch training of all three models (the original's defaults: 250 epochs, batch 64).
    """

    patch_size: int = 8
    patch_steps: int = 32
    dense_steps: int = 8
    dense_hidden: int = 512
    train: TrainConfig = field(default_factory=TrainConfig)


GreyOutlierScaling = Literal["per-dimension", "original-code"]
"""λ and T of the grey experiment's outlier loss. Both are in nats per image (reference note §7.13), and a grey
image has a third of an RGB image's dimensions, so its log-likelihoods and their differences are about 3× smaller.
``"per-dimension"``: the RGB values × D_grey / D_rgb = 1/3 (λ = 2000, T = 333.3 at the paper scale), keeping the
loss's balance with the NLL and Δ/T as for RGB. ``"original-code"``: the RGB values unchanged (6000, 1000), what
the original's ``run_exp`` does with its defaults (it passes λ and T through whatever ``tiny_grey`` is; its
``main.py`` runs no grey experiment, and the manuscript's grey values were not retrieved)."""


@dataclass(frozen=True)
class InvGlowConfig:
    """Everything one scale needs; ``grey`` (None: skipped) is the grey-image experiment, run with a grey Tiny model
    (Tiny converted to grey, weights 0.2989/0.5870/0.1140, reference note §4.2) and the outlier-loss λ and T of
    ``grey_outlier_scaling``; ``local_semantic`` the local and dense models of the local-vs-semantic analysis;
    ``scale`` says where the data comes from (``"demo"``: generated on the spot, ``"paper"``: the real files).
    ``exclude_cifar_from_tiny`` (paper scale only) trains and draws outliers from the Tiny subset without the chunks
    holding CIFAR-10/100 images (``create_tiny.py --exclude-cifar``; the original's ``exclude_cifar_from_tiny``,
    off in the manuscript's results, as here by default)."""

    scale: str = "paper"
    glow: GlowConfig = field(default_factory=GlowConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    grey: DataConfig | None = field(
        default_factory=lambda: DataConfig(
            in_distribution=("fashion-mnist", "mnist"),
            ood=("fashion-mnist", "mnist"),
            no_flip=("fashion-mnist", "mnist"),
        )
    )  # MNIST ↔ Fashion-MNIST with a grey Tiny model (original tiny_grey; Resize 32 + translate, no flip)
    local_semantic: LocalSemanticConfig = field(default_factory=LocalSemanticConfig)
    seeds: tuple[int, ...] = (20200610,)  # the original's np_th_seed
    grey_outlier_scaling: GreyOutlierScaling = "per-dimension"
    exclude_cifar_from_tiny: bool = False

    def __post_init__(self) -> None:
        if self.exclude_cifar_from_tiny and self.scale == "demo":
            raise ValueError("exclude_cifar_from_tiny: the demo's generated Tiny set holds no CIFAR; paper scale only")


PAPER = InvGlowConfig()

_DEMO_DIMS_RATIO = (3 * 16 * 16) / (3 * 32 * 32)
"""The outlier-loss weight and temperature are in nats per image (reference note §7.13): at the demo's 16×16
resolution an image has 4× fewer dimensions, so both are scaled by D_demo / D_paper to keep their balance with
the NLL (and the grey experiment's by a further 1/3, :data:`GreyOutlierScaling`)."""

DEMO = InvGlowConfig(
    scale="demo",
    glow=GlowConfig(image_size=16, steps=4, hidden=32),
    pretrain=TrainConfig(epochs=3, batch_size=32, eval_batch_size=256, init_batches=4, translate_pixels=1),
    finetune=TrainConfig(
        epochs=2,
        batch_size=32,
        eval_batch_size=256,
        init_batches=4,
        translate_pixels=1,
        outlier_weight=6000.0 * _DEMO_DIMS_RATIO,
        outlier_temperature=1000.0 * _DEMO_DIMS_RATIO,
    ),
    data=DataConfig(
        in_distribution=("shapes", "digits-rgb"),
        ood=("shapes", "digits-rgb", "uniform-noise", "gaussian-noise"),
        no_flip=("digits-rgb",),
        demo_tiny_images=2048,
        demo_train=768,
        demo_test=256,
    ),
    grey=DataConfig(
        in_distribution=("shapes", "digits-rgb"),
        ood=("shapes", "digits-rgb"),
        no_flip=("digits-rgb",),
        demo_tiny_images=2048,
        demo_train=768,
        demo_test=256,
    ),
    local_semantic=LocalSemanticConfig(  # 16 patches per image as in the paper (4×4 at 16×16), small K
        patch_size=4,
        patch_steps=4,
        dense_steps=4,
        dense_hidden=128,  # a 32-unit fully connected net on 384 inputs barely learns in the demo's budget
        # 96 steps from scratch: lr 2e-3 instead of 5e-4, or the dense Glow stays near 8 bits/dim (uniform)
        train=TrainConfig(epochs=4, lr=2e-3, batch_size=32, eval_batch_size=256, init_batches=4, translate_pixels=1),
    ),
    seeds=(0,),
)

CONFIGS = {"paper": PAPER, "demo": DEMO}


DEMO_THREADS = 1
"""Intra-op threads at the demo scale: its small convolutions gain nothing from more threads and slow down ~8× when
the cores are shared (measured 0.07 s vs 0.55 s per step on 2 busy cores)."""


def configure(settings: Settings) -> InvGlowConfig:
    """The configuration of ``settings.scale`` with its seeds and, for every training, its epochs applied."""
    config = replace(CONFIGS[settings.scale], scale=settings.scale)
    if settings.seeds is not None:
        config = replace(config, seeds=settings.seeds)
    if settings.epochs is not None:
        local = config.local_semantic
        config = replace(
            config,
            pretrain=replace(config.pretrain, epochs=settings.epochs),
            finetune=replace(config.finetune, epochs=settings.epochs),
            local_semantic=replace(local, train=replace(local.train, epochs=settings.epochs)),
        )
    return config


def cpu_threads(config: InvGlowConfig) -> int | None:
    """Torch threads of the cells on a CPU: :data:`DEMO_THREADS` at the demo scale, torch's default otherwise."""
    return DEMO_THREADS if config.scale == "demo" else None


def grey_config(config: InvGlowConfig) -> InvGlowConfig:
    """``config`` for its grey experiment: one input channel, the ``grey`` sets, and the finetuning's outlier-loss
    λ and T of ``config.grey_outlier_scaling``."""
    if config.grey is None:
        raise ValueError("config: has no grey experiment (grey is None)")
    finetune = config.finetune
    if config.grey_outlier_scaling == "per-dimension":
        dims_ratio = 1 / config.glow.channels  # D_grey / D_rgb: the same image size, one channel
        finetune = replace(
            finetune,
            outlier_weight=finetune.outlier_weight * dims_ratio,
            outlier_temperature=finetune.outlier_temperature * dims_ratio,
        )
    return replace(config, glow=replace(config.glow, channels=1), finetune=finetune, data=config.grey, grey=None)
