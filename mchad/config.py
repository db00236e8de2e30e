"""Hyper-parameters of every run of the main table, per scale (reference mchad.md §2.2 and §2.3).

``paper``: the original experiment configs (``configs/experiment/<dataset>-<method>.yaml`` of kkirchheim/mchad),
WRN-40-2 pretrained, Adam lr 1e-3 / weight decay 5e-5 on every parameter (centers included), cosine decay stepped
per batch, batches of 128 ID + 256 TinyImages300k images for the G-variants.
``demo``: the same methods with the SVHN settings (digits ↔ digits) on scikit-learn's 8×8 digits (classes 0–5
in-distribution, 6–9 held out as OOD), a WRN-10-1 from scratch, generated shapes as training outliers, on CPU,
plus the softmax reference model; 16 epochs at lr 1e-2, so that the embeddings contract onto their centers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from common.cells import Settings
from common.overrides import dataset_field
from mchad.losses import Normalization
from mchad.scores import PredictBy, ScoreKind

MethodKind = Literal["mchad", "center", "cac", "ii", "softmax"]
CACAlpha = Literal["weight_center", "one"]
CAC_ALPHAS = ("weight_center", "one")

CIFAR10_MEAN, CIFAR10_STD = (0.49137, 0.48235, 0.44667), (0.24706, 0.24353, 0.26157)  # §2.2, also for CIFAR-100
SVHN_MEAN, SVHN_STD = (0.43768, 0.44377, 0.47280), (0.19803, 0.20102, 0.19704)
PAPER_OOD_SETS = (  # (table name, common.datasets name), in the order of the original test modules (§2.2)
    ("Texture", "textures"),
    ("Uniform", "uniform-noise"),
    ("Gaussian", "gaussian-noise"),
    ("Tiny Crop", "tinyimagenet-crop"),
    ("Tiny Resize", "tinyimagenet-resize"),
    ("LSUN Crop", "lsun-crop"),
    ("LSUN Resize", "lsun-resize"),
)
HELD_OUT_DIGITS = "digits-held-out"  # demo OOD set: the digit classes not trained on


@dataclass(frozen=True)
class MethodConfig:
    """One row of the table: a model, its loss weights and how it predicts and scores.

    Attributes:
        name: the row name in the table ("MCHAD", "G-CAC", ...).
        kind: which model and loss: ``mchad``, ``center``, ``cac``, ``ii`` or ``softmax``.
        n_dim: embedding dimension D; None means D = number of classes (CAC anchors, softmax logits).
        weight_center: λ_Λ of MCHAD / Center; CAC's anchor weight α when ``cac_alpha="weight_center"``.
        weight_nll: λ_Δ of MCHAD, the CE weight of G-Center, the CAC-loss weight of G-CAC ("weight_ce").
        weight_outlier: λ_Θ of the outlier term ("weight_oe"); > 0 only for the G-variants.
        margin: m of the outlier term.
        radius: r of the center term (0 everywhere).
        magnitude: CAC anchor magnitude.
        ii_alpha: weight of II's separation term ("weight_sep" = 100; 1 in the ii-loss paper).
        outliers: train with outlier batches (the G-variants).
        predict_by: class prediction by nearest center or by the logits (Center predicts by its classifier).
        scores: outlier scores to evaluate (the table uses the distance for every center method).
        normalization: loss reduction, see :mod:`mchad.losses`. ``"original"`` reproduces the published numbers,
            whose weights were tuned for it (Deviation from the paper's formulas: documented in the README).
        cac_distance_power: CAC distance ||z − c||^p: 4 as run for the paper (pytorch-ood 0.0.7), 1 in the CAC
            paper, 2 in pytorch-ood since June 2023.
        cac_index_bug: reproduce pytorch-ood's tuplet indexing bug (present in the paper's runs).
        cac_alpha: where CAC's anchor weight α comes from (:attr:`anchor_weight`). ``"weight_center"``: α =
            weight_center, as the released G-CAC (kkirchheim/mchad f9cca06 ``src/models/gcac.py``, unchanged since
            commit cd4f295 of 2022-06-13); the CAC rows hold the original CAC class's ``weight_anchor`` (1) in
            weight_center. ``"one"``: α = 1 whatever weight_center is, as G-CAC from January to 20 May 2022.
    """

    name: str
    kind: MethodKind
    n_dim: int | None = None
    weight_center: float = 0.5
    weight_nll: float = 1.0
    weight_outlier: float = 0.0
    margin: float = 1.0
    radius: float = 0.0
    magnitude: float = 1.0
    ii_alpha: float = 100.0
    outliers: bool = False
    predict_by: PredictBy = "distance"
    scores: tuple[ScoreKind, ...] = ("distance",)
    # Deviation: the paper's formulas are normalization="paper"; its numbers came from the code (README).
    normalization: Normalization = "original"
    cac_distance_power: int = 4
    cac_index_bug: bool = True
    cac_alpha: CACAlpha = "weight_center"

    @property
    def anchor_weight(self) -> float:
        """CAC's α, resolved by ``cac_alpha``."""
        if self.cac_alpha == "weight_center":
            return self.weight_center
        if self.cac_alpha == "one":
            return 1.0
        raise ValueError(f"cac_alpha must be one of {CAC_ALPHAS}, got {self.cac_alpha!r}")


@dataclass(frozen=True)
class DatasetConfig:
    """An in-distribution set with its training length, preprocessing and OOD test sets.

    Attributes:
        name: the table's name ("CIFAR10", ...).
        source: ``common.datasets`` name of the ID data.
        n_classes: classes trained on (the first ``n_classes`` labels).
        image_size: side of the (square) network input.
        in_channels: 3 (RGB) or 1 (grey).
        mean, std: per-channel normalisation after scaling to [0, 1].
        epochs: training epochs (``min_epochs = max_epochs``).
        max_batches: cap on the batches per epoch (PL ``limit_train_batches = 392``; only SVHN exceeds it).
        crop_padding: random crop with this padding at training time (0: no crop).
        flip: random horizontal flips at training time.
        ood_sets: (table name, data source) of every OOD test set.
        source_options: options passed to ``common.datasets.load`` for the ID data.
    """

    name: str
    source: str = field(metadata=dataset_field("train", "test"))
    n_classes: int
    image_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    epochs: int
    max_batches: int | None = 392
    crop_padding: int = 4
    flip: bool = True
    ood_sets: tuple[tuple[str, str], ...] = field(default=PAPER_OOD_SETS, metadata=dataset_field("test"))
    source_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    """What every run of a scale shares (§2.2).

    Attributes:
        batch_size, outlier_batch_size, eval_batch_size: images per step (ID, outliers of the G-variants, test).
        lr, weight_decay: Adam's (weight decay on every parameter, centers included).
        depth, widen_factor, dropout: the WRN backbone.
        pretrained: start from the ImageNet-pretrained WRN-40-2 (:mod:`mchad.pretrained`).
        outlier_source: training outliers of the G-variants (``tiny-images-300k``: the 300K random images).
        outlier_train_fraction: share of the outlier set used for training (the rest was validation, §2.2).
        noise_count: images in each of the uniform and Gaussian noise test sets.
        outlier_count: how many outliers to generate (demo shapes; None for a file-backed outlier set).
        eval_every: evaluate on the test sets every that many epochs (and at the end).
        checkpoint_every_iterations: also checkpoint within epochs (None: only at epoch ends).
        cpu_threads: torch threads while training on the CPU (None: torch's default). The demo's tiny network
            runs 10-25× faster on one thread than on two busy cores, where every small op waits for both.
    """

    batch_size: int = 128
    outlier_batch_size: int = 256
    eval_batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 5e-5
    depth: int = 40
    widen_factor: int = 2
    dropout: float = 0.3
    pretrained: bool = True
    outlier_source: str = field(default="tiny-images-300k", metadata=dataset_field("train"))
    outlier_train_fraction: float = 0.9
    noise_count: int = 10_000
    outlier_count: int | None = None
    eval_every: int = 1
    checkpoint_every_iterations: int | None = 500
    cpu_threads: int | None = None


def _methods(
    n_dim: int,
    mchad: tuple[float, float, float],
    gmchad: tuple[float, float, float, float],
    center_weight: float,
    gcenter: tuple[float, float, float, float],
    cac_magnitude: float,
    cac_alpha: float,
    gcac: tuple[float, float, float, float],
) -> tuple[MethodConfig, ...]:
    """The seven rows of one dataset; tuples are (margin, w_center, w_nll[, w_outlier]) as the configs of §2.3."""
    return (
        MethodConfig("MCHAD", "mchad", n_dim, weight_center=mchad[1], weight_nll=mchad[2], margin=mchad[0]),
        MethodConfig("II", "ii", n_dim),
        MethodConfig("CAC", "cac", magnitude=cac_magnitude, weight_center=cac_alpha),
        MethodConfig("Center", "center", n_dim, weight_center=center_weight, predict_by="logits"),
        MethodConfig("G-MCHAD", "mchad", n_dim, gmchad[1], gmchad[2], gmchad[3], margin=gmchad[0], outliers=True),
        MethodConfig("G-Center", "center", n_dim, gcenter[1], gcenter[2], gcenter[3], margin=gcenter[0], outliers=True),
        MethodConfig(
            "G-CAC",
            "cac",
            # α = weight_center (gcac[1]): the released GCAC builds its CACLoss with alpha=weight_center.
            weight_center=gcac[1],
            weight_nll=gcac[2],
            weight_outlier=gcac[3],
            margin=gcac[0],
            magnitude=cac_magnitude,
            outliers=True,
        ),
    )


SOFTMAX = MethodConfig("Softmax", "softmax", scores=("msp", "energy"), predict_by="logits")
"""Reference classifier (MSP / energy): no config in the original, not in the published table (§2.3)."""

# Per dataset (§2.3). MCHAD margins are unused without outliers; CAC's α stays 1 on CIFAR (weight_center ignored).
PAPER_METHODS = {
    "CIFAR10": _methods(
        16, (4, 0.5, 1.0), (4, 1.0, 1.5, 1e-5), 0.5, (4, 1.0, 1.5, 8e-6), 2.0, 1.0, (1, 2.0, 1.5, 5e-4)
    ),
    "CIFAR100": _methods(
        64, (8, 0.5, 1.5), (8, 1.0, 1.5, 5e-4), 2.0, (64, 2.0, 1.5, 1e-5), 10.0, 1.0, (80, 2.0, 1.0, 5e-5)
    ),
    "SVHN": _methods(16, (4, 0.5, 1.5), (4, 1.0, 1.5, 5e-4), 0.5, (4, 1.0, 1.5, 5e-4), 1.0, 1.0, (1, 1.0, 1.5, 5e-4)),
}

PAPER_DATASETS = (
    DatasetConfig("SVHN", "svhn", 10, 32, 3, SVHN_MEAN, SVHN_STD, epochs=10),
    DatasetConfig("CIFAR10", "cifar10", 10, 32, 3, CIFAR10_MEAN, CIFAR10_STD, epochs=10),
    DatasetConfig("CIFAR100", "cifar100", 100, 32, 3, CIFAR10_MEAN, CIFAR10_STD, epochs=20),
)

DEMO_DATASETS = (
    DatasetConfig(
        "Digits 0-5",
        "digits",
        n_classes=6,
        image_size=8,  # scikit-learn's digits are 8×8
        in_channels=1,
        mean=(0.5,),
        std=(0.5,),
        epochs=16,  # 416 steps of 32: with DEMO_TRAIN.lr, the ID embeddings contract onto their centers (README)
        max_batches=None,
        crop_padding=1,
        flip=False,  # a mirrored digit is another symbol
        ood_sets=(
            ("Held-out digits 6-9", HELD_OUT_DIGITS),
            ("Uniform", "uniform-noise"),
            ("Gaussian", "gaussian-noise"),
        ),
    ),
)
DEMO_METHODS = {"Digits 0-5": (*PAPER_METHODS["SVHN"], SOFTMAX)}
DEMO_PAPER_ANALOGUE = {"Digits 0-5": "SVHN"}  # whose published row is printed beside the demo row

PAPER_TRAIN = TrainConfig()
DEMO_TRAIN = TrainConfig(
    # Deviation (demo): 10× the paper's lr, so that Adam's 416 steps (lr × steps ≈ 4) move the weights about as
    # far as the paper's 3920 steps at 1e-3; at 1e-3 the centers and embeddings barely move (README).
    lr=1e-2,
    batch_size=32,
    outlier_batch_size=64,
    eval_every=4,
    checkpoint_every_iterations=None,
    cpu_threads=1,
    depth=10,
    widen_factor=1,
    pretrained=False,
    outlier_source="shapes",
    outlier_train_fraction=1.0,
    noise_count=500,
    outlier_count=1000,
)


@dataclass(frozen=True)
class MainTableConfig:
    """Everything one scale of the main table runs; :func:`configure` resolves it for a run.

    Attributes:
        train: what every training shares.
        datasets: the in-distribution sets (rows of the table), each with its epochs and OOD sets.
        methods: dataset name → the methods trained on it.
        paper_analogue: dataset name → the dataset whose published row is printed beside it.
        seeds: one training per (dataset, method, seed); the paper ran seeds 1..21.
    """

    train: TrainConfig
    datasets: tuple[DatasetConfig, ...]
    methods: dict[str, tuple[MethodConfig, ...]]
    paper_analogue: dict[str, str]
    seeds: tuple[int, ...]


CONFIGS = {
    "paper": MainTableConfig(
        PAPER_TRAIN, PAPER_DATASETS, PAPER_METHODS, {d.name: d.name for d in PAPER_DATASETS}, tuple(range(1, 22))
    ),
    "demo": MainTableConfig(DEMO_TRAIN, DEMO_DATASETS, DEMO_METHODS, DEMO_PAPER_ANALOGUE, seeds=(0,)),
}


def configure(settings: Settings) -> MainTableConfig:
    """The main table's configuration at ``settings.scale`` with ``settings.seeds`` and ``settings.epochs`` applied."""
    config = CONFIGS[settings.scale]
    datasets = config.datasets
    if settings.epochs is not None:
        datasets = tuple(replace(dataset, epochs=settings.epochs) for dataset in datasets)
    return replace(config, datasets=datasets, seeds=settings.seeds or config.seeds)
