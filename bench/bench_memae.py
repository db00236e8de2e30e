"""MemAE beside the official implementation (donggong1/memae-anomaly-detection), in the same process.

The official memory module and entropy loss are imported from a checkout of that repository (never copied):
set ``MEMAE_REFERENCE`` to a folder holding its ``models/memory_module.py`` and ``models/entropy_loss.py``, e.g.::

    git clone https://github.com/donggong1/memae-anomaly-detection /tmp/memae-ref
    MEMAE_REFERENCE=/tmp/memae-ref python -m bench memae

Compared (dot-product addressing, the official semantics; same weights, same inputs, CPU, one thread):

- the memory module forward + backward alone at the video setting N = 2000, C = 256;
- a whole training step (forward, MSE + α·entropy, backward, Adam) of MemAE at the paper's MNIST (N = 100, 64×2×2
  latent) and CIFAR-10 (N = 500, 256×2×2 latent) settings, batch 64: our model, and the same model with its memory
  and entropy loss replaced by the official ones.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from bench.timing import BenchRow, ReferenceUnavailable, best_time
from memae.losses import memae_loss
from memae.memory import BottleneckOutput, MemoryModule
from memae.models import ARCHITECTURES, build_model

REFERENCE_ENV = "MEMAE_REFERENCE"
REFERENCE = "official memae (donggong1)"
SHRINK = 0.0025  # official default
ALPHA = 2e-4


def _reference_module(name: str) -> ModuleType:
    root = os.environ.get(REFERENCE_ENV)
    path = Path(root or "") / "models" / f"{name}.py"
    if not root or not path.is_file():
        raise ReferenceUnavailable(
            f"bench memae needs the official code: set {REFERENCE_ENV} to a checkout of "
            f"donggong1/memae-anomaly-detection (missing {path})"
        )
    spec = importlib.util.spec_from_file_location(f"memae_reference_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OfficialBottleneck(nn.Module):
    """The official ``MemModule`` behind our bottleneck interface (its weight is copied from ``ours``)."""

    def __init__(self, ours: MemoryModule) -> None:
        super().__init__()
        reference = _reference_module("memory_module")
        self.module = reference.MemModule(ours.num_slots, ours.slot_dim, float(ours.shrink_threshold), device="cpu")
        with torch.no_grad():
            self.module.memory.weight.copy_(ours.memory)

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        out = self.module(z)
        return BottleneckOutput(out["output"], out["att"])


def _interleaved(ours: Callable[[], object], reference: Callable[[], object], rounds: int = 7) -> tuple[float, float]:
    """Best times of ``ours`` and ``reference``, measured in alternation so load changes hit both alike."""
    times = [
        best_time(function, repeat=1, warmup=1 if index == 0 else 0)
        for index in range(rounds)
        for function in (ours, reference)
    ]
    return min(times[0::2]), min(times[1::2])


def _memory_only() -> BenchRow:
    torch.manual_seed(0)
    ours = MemoryModule(2000, 256, SHRINK, similarity="dot")
    official = OfficialBottleneck(ours)
    z = torch.randn(4, 256, 2, 16, 16)  # the video model's 2×16×16 latent positions, 4 clips

    def step(module: nn.Module) -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        out = module(z)
        out.latent.square().mean().backward()
        return out.latent.detach()

    difference = (step(ours) - step(official)).abs().max().item()
    ours_s, reference_s = _interleaved(lambda: step(ours), lambda: step(official))
    return BenchRow(
        "memory forward+backward, N=2000, C=256, 2048 queries",
        ours_s,
        REFERENCE,
        reference_s,
        max_abs_diff=difference,
        note="dot product, λ=0.0025",
    )


def _training_step(architecture: str, num_slots: int) -> BenchRow:
    torch.manual_seed(0)
    ours = build_model(architecture, "memae", num_slots=num_slots, shrink_threshold=SHRINK, similarity="dot")
    official = copy.deepcopy(ours)
    official.bottleneck = OfficialBottleneck(ours.bottleneck)
    entropy = _reference_module("entropy_loss").EntropyLossEncap()
    x = torch.randn(64, *ARCHITECTURES[architecture].input_shape)

    def ours_loss(model: nn.Module) -> torch.Tensor:
        reconstruction, out = model(x)
        return memae_loss(x, reconstruction, out.attention, ALPHA).total

    def official_loss(model: nn.Module) -> torch.Tensor:
        reconstruction, out = model(x)
        return F.mse_loss(reconstruction, x) + ALPHA * entropy(out.attention)

    def stepper(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor]) -> Callable[[], float]:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(model)
            loss.backward()
            optimizer.step()
            return loss.item()

        return step

    ours_step, official_step = stepper(ours, ours_loss), stepper(official, official_loss)
    difference = abs(ours_step() - official_step())  # first step: same weights, same batch
    ours_s, reference_s = _interleaved(ours_step, official_step)
    return BenchRow(
        f"MemAE training step, {architecture} net, N={num_slots}, batch 64",
        ours_s,
        REFERENCE,
        reference_s,
        max_abs_diff=difference,
        note="absolute loss difference of the first step",
    )


def run() -> list[BenchRow]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [_memory_only(), _training_step("mnist", 100), _training_step("cifar", 500)]
    finally:
        torch.set_num_threads(previous)
