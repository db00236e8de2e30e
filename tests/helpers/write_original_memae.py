"""State dicts in the format of the official MemAE code (donggong1/memae-anomaly-detection), for the loader's tests:
its ``AutoEncoderCov3DMem`` layout (``encoder.<i>``, ``mem_rep.memory.weight``, ``decoder.<i>``) in 2-D."""

from __future__ import annotations

import torch
from torch import nn

from memae.models import ARCHITECTURES
from memae.original_checkpoints import MEMORY_KEY


def official_layers(architecture: str) -> tuple[nn.Sequential, nn.Sequential]:
    """Encoder and decoder laid out as the official ``AutoEncoderCov3DMem``, in 2-D: conv, BN, LeakyReLU per layer,
    the decoder's last a lone transposed conv; random weights and BatchNorm statistics."""
    spec = ARCHITECTURES[architecture]
    encoder, decoder = [], []
    for c_in, c_out, kernel, stride, padding in spec.encoder:
        encoder += [nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
    for c_in, c_out, kernel, stride, padding, output_padding in spec.decoder:
        decoder += [nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding)]
        decoder += [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
    layers = nn.Sequential(*encoder), nn.Sequential(*decoder[:-2])
    for module in [*layers[0], *layers[1]]:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return layers


def official_state_dict(
    encoder: nn.Module, decoder: nn.Module, memory: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The official ``model.state_dict()`` of ``encoder``, ``decoder`` and, for a MemAE, the ``memory`` (N × C)."""
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    if memory is not None:
        state[MEMORY_KEY] = memory
    return state | {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
