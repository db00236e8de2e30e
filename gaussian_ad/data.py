"""The inputs of the Gaussian fits of Rippel et al. (ICPR 2020): images, backbones and one category's features.

Images are MVTec AD under the data root (paper scale) or the generated MVTec-layout set of
:mod:`gaussian_ad.synthetic_mvtec` (demo scale), read at the backbone's native resolution (note §1.2, §1.4).
Features are the globally pooled levels (one (N, C_l) float32 tensor per level) from
:func:`gaussian_ad.engine.extract_features`. A features cell writes them atomically into its folder
(``features.pt``); the fit cells read them from there (:func:`stored_features`). Extractions are also kept in
memory for the process, so two tables run in one process extract each (backbone, category, augmentation) once;
the memory holds exactly what the files hold, so no result depends on it.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

import folder_locations
from common import smoke
from common.datasets.mvtec import MVTecSplit, read_mvtec
from common.errors import DataError
from common.files import torch_save_atomically
from gaussian_ad.augment import Switches, augment
from gaussian_ad.backbones import ARCHITECTURES, pretrained_features
from gaussian_ad.config import GaussianADConfig
from gaussian_ad.engine import extract_features
from gaussian_ad.protocol import CategoryFeatures
from gaussian_ad.resnet import RESNETS, pretrained_resnet
from gaussian_ad.resnet import RESOLUTION as RESNET_RESOLUTION
from gaussian_ad.synthetic_mvtec import write_synthetic_mvtec

FEATURES_FILE = "features.pt"
FEATURES_MEMORY = 2 * 1024**3
"""Bytes of feature sets kept in memory per process, the least recently stored dropped first: at the demo scale every
set stays, so the tables of one process extract each (backbone, category) once; at the paper scale a category's
augmented B4 passes alone are ~235 MB."""
_FEATURES: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_BACKBONES: dict[tuple[str, str | None], torch.nn.Module] = {}


def _dataset_root(config: GaussianADConfig) -> Path:
    return folder_locations.data_root() / ("synthetic-mvtec" if config.synthetic else "mvtec")


def dataset_folder(config: GaussianADConfig) -> Path:
    """MVTec AD under the data root, or the synthetic set (written on first use) at the demo scale."""
    if not config.synthetic:
        return _dataset_root(config)
    return write_synthetic_mvtec(
        _dataset_root(config),
        config.categories,
        config.n_train,
        config.n_test_good,
        config.n_test_defect,
        config.image_size,
    )


def backbone(name: str, padding: str | None) -> torch.nn.Module:
    """The pretrained feature extractor (built once per process): an EfficientNet, or a ResNet (``padding`` unused)."""
    if (name, padding) not in _BACKBONES:
        model = pretrained_resnet(name) if name in RESNETS else pretrained_features(name, padding)
        _BACKBONES[(name, padding)] = model
    return _BACKBONES[(name, padding)]


def resolution(name: str) -> int:
    """Input size of backbone ``name``: the EfficientNet's native resolution, 224 for the ResNets (note §1.2)."""
    if name in RESNETS:
        return RESNET_RESOLUTION
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture: unknown backbone {name!r}; known: {', '.join([*ARCHITECTURES, *RESNETS])}")
    return ARCHITECTURES[name].resolution


def _read(config: GaussianADConfig, arch: str, category: str, split: str) -> MVTecSplit:
    """One split of ``category`` at ``arch``'s resolution; in a smoke run, two batches of it (``common.smoke``)."""
    data = read_mvtec(dataset_folder(config), category, split, size=resolution(arch))
    subset = smoke.evaluation_subset(len(data.labels), config.batch_size)
    if isinstance(subset, slice):
        return data
    rows = subset.tolist()
    return MVTecSplit(
        data.images[subset],
        data.labels[subset],
        data.masks[subset],
        [data.defect_types[i] for i in rows],
        [data.paths[i] for i in rows],
    )


def _key(config: GaussianADConfig, arch: str, category: str, augmented: bool) -> tuple:
    """What an extraction depends on: the images (a smoke run's are fewer), the backbone, the category and the
    augmentation."""
    synthetic = (config.n_train, config.n_test_good, config.n_test_defect, config.image_size)
    images = (str(_dataset_root(config)), synthetic if config.synthetic else None, smoke.active())
    data = (*images, arch, config.padding, category)
    return (*data, config.augment_passes, config.fold_seed) if augmented else data


def category_features(
    config: GaussianADConfig, arch: str, category: str, device: torch.device, progress: bool
) -> dict[str, Any]:
    """``{"train", "test", "test_labels"}``: pooled features of one category's train and test images."""
    key = _key(config, arch, category, augmented=False)
    if key not in _FEATURES:
        splits = {split: _read(config, arch, category, split) for split in ("train", "test")}  # data first
        model = backbone(arch, config.padding)
        extracted = {
            split: extract_features(model, data.images, device, config.batch_size, progress, desc=f"{category} {split}")
            for split, data in splits.items()
        }
        _keep(key, {**extracted, "test_labels": splits["test"].labels})
    return _FEATURES[key]


def augmented_features(
    config: GaussianADConfig, arch: str, category: str, device: torch.device, progress: bool
) -> dict[str, Any]:
    """``{"augmented"}``: per level (passes, N_train, C_l) features of ``config.augment_passes`` augmented passes (two
    in a smoke run).

    Each pass augments every training image once (note §1.10); image i of pass p is drawn from the generators of
    (``fold_seed``, p, i) (:func:`gaussian_ad.augment.random_state`).
    """
    passes = smoke.training_batches(config.augment_passes)  # a smoke run: two passes
    key = _key(config, arch, category, augmented=True)
    if key not in _FEATURES:
        train = _read(config, arch, category, "train")  # data first
        model = backbone(arch, config.padding)
        switches = Switches.for_category(category)
        per_pass = [
            extract_features(
                model,
                augment(train.images, switches, config.fold_seed, p),
                device,
                config.batch_size,
                progress,
                desc=f"{category} augmented {p + 1}/{passes}",
            )
            for p in range(passes)
        ]
        _keep(key, {"augmented": [torch.stack(level) for level in zip(*per_pass, strict=True)]})
    return _FEATURES[key]


def _keep(key: tuple, features: dict[str, Any]) -> None:
    """Remember ``features`` under ``key``, forgetting the least recently stored beyond :data:`FEATURES_MEMORY`."""
    _FEATURES[key] = features
    _FEATURES.move_to_end(key)
    while len(_FEATURES) > 1 and sum(map(_bytes, _FEATURES.values())) > FEATURES_MEMORY:
        _FEATURES.popitem(last=False)


def _bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (tensors, and mappings and lists of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(map(_bytes, value.values()))
    if isinstance(value, list | tuple):
        return sum(map(_bytes, value))
    return 0


def write_features(folder: Path, features: dict[str, Any]) -> Path:
    """Save ``features`` as ``folder/features.pt`` atomically (a partial file, then a rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    return torch_save_atomically(features, folder / FEATURES_FILE)


def _read_features(folder: Path, key: tuple) -> dict[str, Any]:
    if key not in _FEATURES:
        path = folder / FEATURES_FILE
        try:
            _keep(key, torch.load(path, weights_only=True))
        except FileNotFoundError:
            raise DataError(path, "no features: the features cell that writes them has not finished") from None
        except (OSError, RuntimeError) as error:
            raise DataError(path, f"not a features file of this suite ({error})") from None
    return _FEATURES[key]


def stored_features(
    config: GaussianADConfig, arch: str, category: str, folder: Path, augmented_folder: Path | None = None
) -> CategoryFeatures:
    """One category's features as its features cells wrote them in ``folder`` (and ``augmented_folder``)."""
    features = CategoryFeatures(**_read_features(folder, _key(config, arch, category, augmented=False)))
    if augmented_folder is None:
        return features
    augmented = _read_features(augmented_folder, _key(config, arch, category, augmented=True))
    return features._replace(augmented=augmented["augmented"])
