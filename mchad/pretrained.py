"""The pretrained WRN-40-2 every method of the paper starts from (reference mchad.md §2.2).

Hendrycks et al.'s WRN-40-2 trained on 32×32 downsampled ImageNet without the CIFAR-10 classes, the file
``imagenet_wrn_baseline_epoch_99.pt`` that the original ``bash/run-experiments.sh`` passes to every run. It is
read from ``folder_locations.weights_root()``; its final ``fc`` layer (1000 ImageNet classes) is dropped and the
model keeps its freshly initialised embedding head, as the original loader does.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

import folder_locations
from common.errors import DataError, MissingDataError
from mchad.models import WideResNet

PRETRAINED_FILE = "imagenet_wrn_baseline_epoch_99.pt"
PRETRAINED_URL = (
    "https://github.com/hendrycks/pre-training/raw/master/uncertainty/CIFAR/snapshots/imagenet/cifar10_excluded/"
    + PRETRAINED_FILE
)
_HEAD = "fc."


def pretrained_path() -> Path:
    """Where the pretrained file is expected: ``<weights root>/imagenet_wrn_baseline_epoch_99.pt``."""
    return folder_locations.weights_root() / PRETRAINED_FILE


def how_to_get(path: Path) -> str:
    """Where the pretrained file comes from and how to put it at ``path``."""
    return (
        f"Download {PRETRAINED_URL} (WRN-40-2 pretrained on 32×32 ImageNet without the CIFAR-10 classes, "
        f"Hendrycks et al. 2019) and save it as {path}, or set OOD_REPRO_WEIGHTS to the folder holding "
        f"{PRETRAINED_FILE}."
    )


def load_pretrained(model: WideResNet, path: Path | None = None) -> WideResNet:
    """Copy the pretrained WRN-40-2 weights into ``model`` (all but the ``fc`` head) and return it.

    Args:
        model: a ``WideResNet(n_outputs, depth=40, widen_factor=2)`` with 3 input channels.
        path: the file; default :func:`pretrained_path`.

    Raises:
        MissingDataError: the file is absent (the message names the place, the name and the download URL).
        DataError: the file is not a weights-only loadable state dict, or its tensors do not fit ``model``.
    """
    path = pretrained_path() if path is None else Path(path)
    if not path.is_file():
        raise MissingDataError(path, how_to_get(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise DataError(path, f"not a state dict torch can load with weights_only=True ({error})") from error
    if not isinstance(state, dict):
        raise DataError(path, f"expected a state dict (mapping of tensors), got {type(state).__name__}")
    state = {key.removeprefix("module."): value for key, value in state.items()}  # saved from DataParallel
    backbone = {key: value for key, value in state.items() if not key.startswith(_HEAD)}
    expected = {key for key in model.state_dict() if not key.startswith(_HEAD)}
    missing, unexpected = sorted(expected - set(backbone)), sorted(set(backbone) - expected)
    if missing or unexpected:
        raise DataError(
            path,
            f"does not fit WRN-{_depth(model)}-{model.n_features // 64}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} (expected the WRN-40-2 of {PRETRAINED_URL})",
        )
    try:
        model.load_state_dict(backbone, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise DataError(path, f"tensors do not fit the model: {error}") from error
    return model


def _depth(model: WideResNet) -> int:
    return 6 * len(model.block1.layer) + 4
