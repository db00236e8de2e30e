"""Ignite engine of Gaussian AD (Rippel et al., ICPR 2020) and ``fit``, the one way this paper fits its model.

There is no gradient training. The only pass over images is the feature extractor here: an Ignite evaluator whose
pooled level features are gathered by the ``CollectTensors`` metric. Images enter as uint8 at the backbone's
resolution and are scaled to [0, 1] and normalised with the ImageNet mean / std (albumentations' ``Normalize``
defaults, note §1.4). "Training" is :func:`fit`: the closed-form statistics of :mod:`gaussian_ad.statistics`
(mean + Ledoit-Wolf per level, optionally after PCA / NPCA) fitted on every fold of one category and scored on its
test split (Sec. IV, note §1.11).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from ignite.engine import Engine

from common.handlers import attach_progress
from common.loaders import TensorBatchLoader
from common.metrics import CollectTensors
from common.transforms import BatchPipeline, normalize, to_float
from gaussian_ad.backbones import IMAGENET_MEAN, IMAGENET_STD, EfficientNetFeatures, inference_model
from gaussian_ad.protocol import CategoryFeatures, FoldResult, Variant, evaluate_fold, fold_train_indices

FEATURES = "features"  # the CollectTensors metric holding the pooled features, one "L<i>" entry per level

CPU_FORWARD_IMAGES = 4
CPU_FORWARD_PIXELS = 4 * 380 * 380
"""On the CPU a backbone sees at most CPU_FORWARD_IMAGES images and CPU_FORWARD_PIXELS pixels per forward (at least
one image). Measured on 2 cores (``python -m bench gaussian_ad``, README): EfficientNet-B4 at 380 px ran 1.1–1.3×
faster in forwards of 4 images than in one of 16, Lite0 at 224 px 1.5–1.9× faster than in one of 32, B7 at 600 px
1.3× faster in forwards of 1 than in one of 4. A big batch's maps are mapped fresh from the kernel and page-faulted
at every forward (glibc keeps freed blocks of at most 32 MB for reuse)."""


def imagenet_pipeline() -> BatchPipeline:
    """uint8 (N, 3, H, W) → float32 normalised with the ImageNet statistics."""
    return BatchPipeline([to_float, partial(normalize, mean=IMAGENET_MEAN, std=IMAGENET_STD, inplace=True)])


def cpu_forward_size(height: int, width: int) -> int:
    """Images per backbone forward on the CPU at ``height`` × ``width`` (:data:`CPU_FORWARD_PIXELS`)."""
    return max(1, min(CPU_FORWARD_IMAGES, CPU_FORWARD_PIXELS // (height * width)))


def pooled_levels(backbone: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """``backbone(images)``: forwards of :func:`cpu_forward_size` images on the CPU, one forward elsewhere."""
    if images.device.type != "cpu":
        return backbone(images)
    parts = [backbone(chunk) for chunk in images.split(cpu_forward_size(*images.shape[-2:]))]
    return parts[0] if len(parts) == 1 else [torch.cat(level) for level in zip(*parts, strict=True)]


def create_feature_extractor(backbone: torch.nn.Module, device: torch.device) -> Engine:
    """An evaluator whose output per batch is ``{"L1": (B, C_1), ...}``, the pooled level features (float32).

    After ``run``, ``engine.state.metrics["features"]`` maps each level to its (N, C_l) features on the CPU, in
    image order. An EfficientNet runs as its :func:`~gaussian_ad.backbones.inference_model` copy (equal levels, the
    model untouched); every backbone runs in eval mode, channels-last, under ``torch.inference_mode()``, on the CPU
    in forwards of a few images (:func:`pooled_levels`).
    """
    if isinstance(backbone, EfficientNetFeatures):
        backbone = inference_model(backbone)
    backbone = backbone.to(device, memory_format=torch.channels_last).eval()

    def step(_: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            levels = pooled_levels(backbone, batch[0].contiguous(memory_format=torch.channels_last))
        return {f"L{index}": level.float() for index, level in enumerate(levels, start=1)}

    engine = Engine(step)
    CollectTensors().attach(engine, FEATURES)
    return engine


def extract_features(
    backbone: torch.nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "features",
) -> list[torch.Tensor]:
    """Pooled features (one (N, C_l) float32 tensor per level) of uint8 images (N, 3, H, W), in image order."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected uint8 RGB (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    loader = TensorBatchLoader(
        images,
        torch.zeros(len(images), dtype=torch.int64),
        batch_size,
        transform=imagenet_pipeline(),
        device=device,
        rank=0,
        world_size=1,
    )
    engine = create_feature_extractor(backbone, device)
    attach_progress(engine, desc=desc, disable=not progress)
    engine.run(loader, max_epochs=1)
    return list(engine.state.metrics[FEATURES].values())


def fit(
    features: CategoryFeatures,
    variant: Variant,
    levels: Sequence[int] | None = None,
    augmented: bool = False,
    n_folds: int = 5,
    fold_seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> list[FoldResult]:
    """``variant`` fitted per level on every fold of one category, each fold scoring the whole test split.

    Args:
        features: the category's pooled features (with its augmented passes when ``augmented``).
        variant: MVG (optionally after PCA / NPCA) or the L2 / SED baseline.
        levels: 0-based levels to fit (default: all the backbone's).
        augmented: fit on the fold's augmented copies instead of its images (Tables IV, V).
        n_folds: folds of ``KFold(n_folds, shuffle=True, random_state=fold_seed)`` over the training images.
        fold_seed: KFold's random state.
        dtype: precision of the fits.

    Raises:
        ValueError: a level the backbone does not have.
    """
    folds = fold_train_indices(len(features.train[0]), n_folds, fold_seed)
    levels = range(len(features.train)) if levels is None else levels
    if max(levels) >= len(features.train):
        raise ValueError(f"levels: this backbone has levels L1..L{len(features.train)}, got L{max(levels) + 1}")
    return [evaluate_fold(features, fold, variant, levels, augmented, dtype) for fold in folds]
