"""Hyper-parameters of Rippel et al. (ICPR 2020) per scale: "paper" = the manuscript, "demo" = CPU minutes.

Sources: the paper's Sec. III–IV and the original code's table scripts (reference note §1, §2.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.cells import Settings
from common.datasets.mvtec import MVTEC_CATEGORIES
from common.errors import UsageError
from gaussian_ad.synthetic_mvtec import CATEGORIES as SYNTHETIC_CATEGORIES


@dataclass(frozen=True)
class GaussianADConfig:
    """One scale's settings.

    Attributes:
        categories: MVTec AD categories evaluated (Sec. IV: all 15).
        synthetic: use the generated MVTec-layout dataset (:mod:`gaussian_ad.synthetic_mvtec`) instead of MVTec AD.
        architecture: backbone of Tables I, III and V (Sec. IV-A: EfficientNet-B4); ``resnet18`` / ``resnet34`` /
            ``resnet50`` (:mod:`gaussian_ad.resnet`, levels L1..L5) are accepted too.
        architectures: backbones of Table II (B0–B7).
        resnet_architectures: backbones of Table VII (ResNet levels L1..L5 and sum, no augmentation; paper scale
            only: their ImageNet weights are downloaded from torchvision's release).
        working_point_architectures: backbones of Table IV (B0 with PCA / none / NPCA, B4 without reduction).
        working_point_level: the single level of Table IV, paper numbering (L7 = code index 6, note §2.5).
        padding: efficientnet_pytorch padding semantics, None = the backbone's default (0.6.3 for B0–B7).
        n_folds: folds per category (note §1.11: KFold(5, shuffle, seed 0)).
        fold_seed: KFold's random_state.
        pca_thresholds: Table III PCA variance thresholds (table3.py).
        npca_thresholds: Table III NPCA thresholds (table3.py).
        table5_npca_threshold: NPCA threshold of Tables V / VIII ("NPCA 1 %" = t 0.99).
        working_point_threshold: PCA / NPCA threshold of Table IV (table4.py: 0.99).
        sigmas: the n of the n-σ working points t_n of Table IV.
        augment_passes: augmented passes over the training images (note §1.10: 100).
        batch_size: feature-extraction batch size (the original scripts use 16); on the CPU a batch runs as forwards
            of at most 4 images (``engine.pooled_levels``).
        dtype: float64 (default, exact) or float32 (the original's scikit-learn call on float32 features).
        n_train, n_test_good, n_test_defect, image_size: sizes of the synthetic dataset.
    """

    categories: tuple[str, ...] = MVTEC_CATEGORIES
    synthetic: bool = False
    architecture: str = "efficientnet-b4"
    architectures: tuple[str, ...] = tuple(f"efficientnet-b{i}" for i in range(8))
    resnet_architectures: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
    working_point_architectures: tuple[str, ...] = ("efficientnet-b0", "efficientnet-b4")
    working_point_level: int = 7
    padding: str | None = None
    n_folds: int = 5
    fold_seed: int = 0
    pca_thresholds: tuple[float, ...] = (0.99, 0.95)
    npca_thresholds: tuple[float, ...] = (0.99, 0.999, 0.9999)
    table5_npca_threshold: float = 0.99
    working_point_threshold: float = 0.99
    sigmas: tuple[int, ...] = (1, 2, 3, 4, 5)
    augment_passes: int = 100
    batch_size: int = 16
    dtype: str = "float64"
    n_train: int = 40
    n_test_good: int = 12
    n_test_defect: int = 6
    image_size: int = 256


CONFIGS = {
    "paper": GaussianADConfig(),
    "demo": GaussianADConfig(
        categories=tuple(SYNTHETIC_CATEGORIES),
        synthetic=True,
        architecture="efficientnet-lite0",
        architectures=("efficientnet-lite0",),
        working_point_architectures=("efficientnet-lite0",),
        augment_passes=2,
        batch_size=32,
        n_train=30,
        n_test_good=10,
        n_test_defect=5,
        image_size=224,
    ),
}


def configure(settings: Settings) -> GaussianADConfig:
    """The configuration of ``settings.scale``.

    Raises:
        UsageError: ``--seeds`` or ``--epochs`` given: nothing is trained (the Gaussians are closed-form fits) and
            the only random choices, the folds and the augmentation, are seeded by ``fold_seed`` as in the paper.
    """
    for name in ("seeds", "epochs"):
        if getattr(settings, name) is not None:
            raise UsageError(
                f"gaussian_ad: --{name} does not apply: nothing is trained and the folds and augmentation are seeded "
                "by the protocol (fold_seed)"
            )
    return CONFIGS[settings.scale]
