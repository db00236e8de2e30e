"""Files in the formats of the original MCHAD code (kkirchheim/mchad, pytorch-ood), for the loader's tests.

:func:`pytorch_ood_wrn` is the state dict of pytorch-ood's ``WideResNet``; :func:`lightning_checkpoint` writes it
(with a loss's tensors) as pytorch-lightning 1.6 writes a ``.ckpt``, its hyper-parameters an omegaconf object.
"""

from __future__ import annotations

import importlib
import sys
import types
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from tests.helpers.write_original_invglow import random_tensors

DICT_CONFIG_MODULE = "omegaconf.dictconfig"


def batch_norm(name: str, channels: int, tensor: Callable) -> dict[str, torch.Tensor]:
    """The state dict of a ``BatchNorm`` named ``name`` (running variance positive)."""
    return {
        f"{name}.weight": tensor((channels,)),
        f"{name}.bias": tensor((channels,)),
        f"{name}.running_mean": tensor((channels,)),
        f"{name}.running_var": 1 + tensor((channels,)).abs(),
        f"{name}.num_batches_tracked": torch.tensor(392),
    }


def _wrn_block(prefix: str, c_in: int, c_out: int, tensor: Callable) -> dict[str, torch.Tensor]:
    """pytorch-ood's ``BasicBlock``: bn1, conv1, bn2, conv2 and, when the width changes, convShortcut."""
    block = batch_norm(f"{prefix}.bn1", c_in, tensor) | batch_norm(f"{prefix}.bn2", c_out, tensor)
    block |= {
        f"{prefix}.conv1.weight": tensor((c_out, c_in, 3, 3)),
        f"{prefix}.conv2.weight": tensor((c_out, c_out, 3, 3)),
    }
    if c_in != c_out:
        block[f"{prefix}.convShortcut.weight"] = tensor((c_out, c_in, 1, 1))
    return block


def pytorch_ood_wrn(n_outputs: int, depth: int = 10, widen: int = 1, in_channels: int = 1) -> dict[str, torch.Tensor]:
    """The state dict of pytorch-ood's ``WideResNet(num_classes=n_outputs, depth, widen_factor, in_channels)``."""
    tensor = random_tensors(2)
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    state = {"conv1.weight": tensor((16, in_channels, 3, 3))}
    for group in (1, 2, 3):
        for i in range((depth - 4) // 6):
            c_in = widths[group - 1] if i == 0 else widths[group]
            state |= _wrn_block(f"block{group}.layer.{i}", c_in, widths[group], tensor)
    state |= batch_norm("bn1", widths[3], tensor)
    return state | {"fc.weight": tensor((n_outputs, widths[3])), "fc.bias": tensor((n_outputs,))}


class DictConfig:
    """Stands for omegaconf's DictConfig, which the Lightning checkpoints' hyper-parameters hold."""

    def __init__(self, content: dict) -> None:
        self._content = content
        self._metadata = {"ref_type": typing.Any, "object_type": dict}


@contextmanager
def omegaconf_stand_in() -> Iterator[None]:
    """:class:`DictConfig` importable as ``omegaconf.dictconfig.DictConfig``, so that saved checkpoints name it.

    The real ``omegaconf`` is imported first: pickling imports a class's package, and an ``omegaconf`` first imported
    while the stand-in holds its module's place would keep the stand-in as its ``DictConfig`` for the session.
    """
    importlib.import_module("omegaconf")
    saved, home = sys.modules.get(DICT_CONFIG_MODULE), DictConfig.__module__
    module = types.ModuleType(DICT_CONFIG_MODULE)
    module.DictConfig = DictConfig
    sys.modules[DICT_CONFIG_MODULE], DictConfig.__module__ = module, DICT_CONFIG_MODULE
    try:
        yield
    finally:
        DictConfig.__module__ = home
        if saved is None:
            sys.modules.pop(DICT_CONFIG_MODULE, None)
        else:
            sys.modules[DICT_CONFIG_MODULE] = saved


def lightning_checkpoint(state: dict[str, torch.Tensor], path: Path, **extra: object) -> Path:
    """``state`` as the ``state_dict`` of a checkpoint as pytorch-lightning 1.6 writes it, the backbone config an
    omegaconf object; ``extra``: more top-level entries."""
    checkpoint = {
        "epoch": 9,
        "global_step": 3920,
        "pytorch-lightning_version": "1.6.0",
        "state_dict": OrderedDict(state),
        "hyper_parameters": {"n_classes": 6, "backbone": DictConfig({"_target_": "pytorch_ood.model.WideResNet"})},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}],
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": torch.tensor(0.5)}},
        **extra,
    }
    with omegaconf_stand_in():
        torch.save(checkpoint, path)
    return path
