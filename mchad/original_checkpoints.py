"""The original MCHAD code's trained models (kkirchheim/mchad, pytorch-ood), loaded into our :class:`CenterNet`.

Files read:

- the original repository's Lightning checkpoints (``.ckpt``, ``torch.save`` of a dict whose ``state_dict`` holds
  the LightningModule's tensors): the backbone under ``model.`` (pytorch-ood ``WideResNet``: ``conv1``,
  ``block<g>.layer.<i>.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``) and the method's loss: MCHAD and
  G-Center ``soft_margin_loss._centers._params``, Center ``center_loss._centers._params`` and ``classifier.*``,
  CAC ``cac_loss.centers._params`` (``cac_loss._centers._params`` in later pytorch-ood), II
  ``ii_loss.running_centers.{running_centers,num_batches_tracked}`` and the embedding BatchNorm ``bn.*``; the
  outlier term's margin ``regu_loss.margin`` is a constant, not part of the model;
- a plain state dict: pytorch-ood's ``WideResNet`` keys without prefix, with, for a model with centers, its loss's
  (``MCHADLoss``: ``center_loss._centers._params``; e.g. ``{**model.state_dict(), **loss.state_dict()}``).
  DataParallel's ``module.`` prefixes are removed.

The file is read without running its code: tensors and containers are rebuilt, and the objects of the Lightning
checkpoint's other entries (hyper-parameters as omegaconf objects, loop and callback state) become inert stand-ins
(:mod:`common.safe_pickle`); any other name is refused.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path

import torch

from common.safe_pickle import PLAIN_TYPES, TENSOR_GLOBALS, load_torch_file, restricted_unpickler
from common.weight_mapping import as_state_dict, load_renamed
from mchad.config import DatasetConfig, MethodConfig, TrainConfig
from mchad.engine import build_model
from mchad.models import CenterNet

LIGHTNING_BACKBONE = "model."
"""Prefix of the backbone's tensors in the original LightningModules (``self.model``)."""

CENTER_KEYS = {  # the original's names for our centers.centers, by class of centers; the first in the file wins
    "ClassCenters": ("soft_margin_loss._centers._params", "center_loss._centers._params"),
    "ClassAnchors": ("cac_loss.centers._params", "cac_loss._centers._params"),
    "RunningCenters": ("ii_loss.running_centers.running_centers",),
}
BATCH_COUNT_KEY = "ii_loss.running_centers.num_batches_tracked"
EMBEDDING_NORM = "bn"
"""II's BatchNorm of the embedding in the original LightningModule (ours: ``embedding_norm``)."""
LOSS_CONSTANTS = ("regu_loss.margin",)
"""Tensors of the original's losses that are hyper-parameters, not trained weights of the model."""

_UNPICKLER = restricted_unpickler(
    TENSOR_GLOBALS | PLAIN_TYPES,
    "not a tensor, a container or a Lightning / omegaconf record",
    stand_in_packages=("omegaconf", "pytorch_lightning", "lightning", "lightning_fabric", "typing", "numpy"),
)


def original_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``: a Lightning checkpoint's ``state_dict`` or the plain state dict the file holds."""
    content = load_torch_file(path, _UNPICKLER)
    if isinstance(content, Mapping) and "state_dict" in content:
        content = content["state_dict"]
    state = as_state_dict(content, path)
    if BATCH_COUNT_KEY in state:  # pytorch-ood keeps II's batch count as a float of shape (1,); ours a long scalar
        state[BATCH_COUNT_KEY] = state[BATCH_COUNT_KEY].reshape(()).long()
    return state


def original_key(model: CenterNet, key: str, present: Collection[str]) -> str:
    """The original's name for our ``key`` of ``model``, given the names ``present`` in the file."""
    part, _, rest = key.partition(".")
    if part == "backbone":
        lightning = any(name.startswith(LIGHTNING_BACKBONE) for name in present)
        return f"{LIGHTNING_BACKBONE if lightning else ''}{rest}"
    if key == "centers.batches_seen":
        return BATCH_COUNT_KEY
    if part == "centers":
        candidates = CENTER_KEYS[type(model.centers).__name__]
        return next((name for name in candidates if name in present), candidates[0])
    if part == "embedding_norm":
        return f"{EMBEDDING_NORM}.{rest}"
    return key  # the Center models' classifier: the same names


def load_original(path: str | Path, config: TrainConfig, dataset: DatasetConfig, method: MethodConfig) -> CenterNet:
    """Our model of ``method`` on ``dataset`` (backbone of ``config``) with the original's trained weights.

    The model is built as :func:`mchad.engine.build_model` builds it, without loading the pretrained backbone.

    Raises:
        MissingDataError: no such file.
        DataError: a refused name in the pickle, or tensors that do not fit (one line naming the file and the
            missing, extra or mis-shaped tensors).
    """
    state = original_state(path)
    model = build_model(method, dataset, replace(config, pretrained=False))
    load_renamed(model, state, lambda key: original_key(model, key, state), path, LOSS_CONSTANTS)
    return model
