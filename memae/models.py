"""Autoencoders of MemAE (Gong et al., ICCV 2019) and C-MemAE: plain AE, MemAE, C-MemAE and the conditional AE.

Every model is an :class:`Autoencoder`: encoder → bottleneck → decoder, where the bottleneck is nothing (the AE
baseline, "the same network without the memory"), a :class:`~memae.memory.MemoryModule` (MemAE and
MemAE-nonSpar), a :class:`~memae.memory.ConditionalMemory` (C-MemAE) or a :class:`ConditionalBottleneck` (the
conditional AE baseline of C-MemAE). Architectures (reference note §1.7), each conv followed by BatchNorm and
LeakyReLU(0.2) except the decoder's last layer, which is linear:

- ``mnist``: the paper's MNIST net, Conv2(1,2,16)–Conv2(3,2,32)–Conv2(3,2,64) (kernel, stride, channels; no
  padding), 28×28 → 64×2×2; decoder Dconv2(3,2,64)–Dconv2(3,2,32)–Dconv2(3,2,1) back to 28×28.
- ``cifar``: 3→64→128→128→256, kernel 3, stride 2, padding 1, 32×32 → 256×2×2, mirrored (C-MemAE's
  ``cifar-memae``; the paper only says "a larger" net of the same style).
- ``mnist-flat`` / ``cifar-flat``: C-MemAE's flat nets with a 1×1 latent of 64 / 256 channels, so one slot
  holds one whole-image prototype.
- ``digits`` / ``digits-flat`` (demo scale only): the same styles for 16×16 grey images (scikit-learn's digits
  upscaled), 16→32→64 channels, kernel 3, stride 2, padding 1, latent 64×2×2 (flat: one more 2×2 conv to 64×1×1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memae.memory import DEFAULT_SHRINK_THRESHOLD, BottleneckOutput, ConditionalMemory, MemoryModule

LEAKY_SLOPE = 0.2  # LeakyReLU slope of the official code and C-MemAE

# (in, out, kernel, stride, padding) per encoder conv; (in, out, kernel, stride, padding, output_padding) per
# decoder transposed conv.
EncoderSpec = tuple[tuple[int, int, int, int, int], ...]
DecoderSpec = tuple[tuple[int, int, int, int, int, int], ...]


@dataclass(frozen=True)
class Architecture:
    """An encoder/decoder pair: layer specs, input shape (C, H, W) and latent shape (C, h, w)."""

    encoder: EncoderSpec
    decoder: DecoderSpec
    input_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]

    @property
    def latent_channels(self) -> int:
        """C, the width a memory slot must have."""
        return self.latent_shape[0]


ARCHITECTURES: dict[str, Architecture] = {
    "mnist": Architecture(
        encoder=((1, 16, 1, 2, 0), (16, 32, 3, 2, 0), (32, 64, 3, 2, 0)),
        decoder=((64, 64, 3, 2, 0, 1), (64, 32, 3, 2, 0, 1), (32, 1, 3, 2, 1, 1)),
        input_shape=(1, 28, 28),
        latent_shape=(64, 2, 2),
    ),
    "cifar": Architecture(
        encoder=((3, 64, 3, 2, 1), (64, 128, 3, 2, 1), (128, 128, 3, 2, 1), (128, 256, 3, 2, 1)),
        decoder=((256, 128, 3, 2, 1, 1), (128, 128, 3, 2, 1, 1), (128, 64, 3, 2, 1, 1), (64, 3, 3, 2, 1, 1)),
        input_shape=(3, 32, 32),
        latent_shape=(256, 2, 2),
    ),
    "mnist-flat": Architecture(
        encoder=((1, 32, 3, 2, 1), (32, 16, 3, 2, 1), (16, 8, 3, 3, 1), (8, 64, 3, 3, 0)),
        decoder=((64, 8, 3, 3, 0, 0), (8, 16, 3, 3, 1, 0), (16, 32, 3, 2, 1, 1), (32, 1, 3, 2, 1, 1)),
        input_shape=(1, 28, 28),
        latent_shape=(64, 1, 1),
    ),
    "cifar-flat": Architecture(
        encoder=(
            (3, 64, 3, 2, 1),
            (64, 128, 3, 2, 1),
            (128, 128, 3, 2, 1),
            (128, 128, 3, 2, 1),
            (128, 256, 2, 1, 0),
        ),
        decoder=(
            (256, 128, 2, 1, 0, 0),
            (128, 128, 3, 2, 1, 1),
            (128, 128, 3, 2, 1, 1),
            (128, 64, 3, 2, 1, 1),
            (64, 3, 3, 2, 1, 1),
        ),
        input_shape=(3, 32, 32),
        latent_shape=(256, 1, 1),
    ),
    "digits": Architecture(
        encoder=((1, 16, 3, 2, 1), (16, 32, 3, 2, 1), (32, 64, 3, 2, 1)),
        decoder=((64, 32, 3, 2, 1, 1), (32, 16, 3, 2, 1, 1), (16, 1, 3, 2, 1, 1)),
        input_shape=(1, 16, 16),
        latent_shape=(64, 2, 2),
    ),
    "digits-flat": Architecture(
        encoder=((1, 16, 3, 2, 1), (16, 32, 3, 2, 1), (32, 64, 3, 2, 1), (64, 64, 2, 1, 0)),
        decoder=((64, 64, 2, 1, 0, 0), (64, 32, 3, 2, 1, 1), (32, 16, 3, 2, 1, 1), (16, 1, 3, 2, 1, 1)),
        input_shape=(1, 16, 16),
        latent_shape=(64, 1, 1),
    ),
}

VARIANTS = ("ae", "memae", "cmemae", "cae")


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.LeakyReLU(LEAKY_SLOPE)]


def build_encoder(spec: EncoderSpec) -> nn.Sequential:
    """Conv → BatchNorm → LeakyReLU(0.2) per layer of ``spec``."""
    layers: list[nn.Module] = []
    for c_in, c_out, kernel, stride, padding in spec:
        layers += _block(nn.Conv2d(c_in, c_out, kernel, stride, padding), c_out)
    return nn.Sequential(*layers)


def build_decoder(spec: DecoderSpec) -> nn.Sequential:
    """Transposed conv → BatchNorm → LeakyReLU(0.2) per layer of ``spec``; the last layer is linear."""
    layers: list[nn.Module] = []
    for index, (c_in, c_out, kernel, stride, padding, output_padding) in enumerate(spec):
        conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding)
        layers += [conv] if index == len(spec) - 1 else _block(conv, c_out)
    return nn.Sequential(*layers)


class ConditionalBottleneck(nn.Module):
    """C-MemAE's conditional AE baseline: ``[z, one-hot(y)] → Linear(C+Y, C) → LReLU → Linear(C, C) → LReLU``.

    Only for flat (B, C, 1, 1) latents. It has no self-selection: a condition is required.
    """

    def __init__(self, channels: int, num_conditions: int) -> None:
        super().__init__()
        if num_conditions < 1:
            raise ValueError(f"num_conditions must be positive, got {num_conditions}")
        self.num_conditions = num_conditions
        self.mlp = nn.Sequential(
            nn.Linear(channels + num_conditions, channels),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(channels, channels),
            nn.LeakyReLU(LEAKY_SLOPE),
        )

    def forward(self, z: torch.Tensor, condition: torch.Tensor | None) -> BottleneckOutput:
        """Mix the condition (B,) into the flat encoding z (B, C, 1, 1)."""
        if condition is None:
            raise ValueError("the conditional AE has no self-selection: pass the condition (memory index per sample)")
        if z.ndim != 4 or z.shape[2:] != (1, 1):
            raise ValueError(f"the conditional AE needs a flat latent (B, C, 1, 1), got {tuple(z.shape)}")
        one_hot = F.one_hot(condition, self.num_conditions).to(z.dtype)
        mixed = self.mlp(torch.cat([z.flatten(1), one_hot], dim=1))
        return BottleneckOutput(mixed[:, :, None, None], selection=condition)


class Autoencoder(nn.Module):
    """Encoder → bottleneck → decoder; the bottleneck decides which of the paper's models this is.

    Args:
        encoder: maps x (B, C_in, H, W) to the encoding z (B, C, h, w).
        decoder: maps the bottleneck's latent back to x̂ (B, C_in, H, W).
        bottleneck: None (AE), MemoryModule (MemAE), ConditionalMemory (C-MemAE) or ConditionalBottleneck (CAE).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, bottleneck: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.bottleneck = bottleneck

    @property
    def conditional(self) -> bool:
        """Whether the model takes a condition (C-MemAE, conditional AE)."""
        return isinstance(self.bottleneck, (ConditionalMemory, ConditionalBottleneck))

    def bottleneck_output(
        self, z: torch.Tensor, condition: torch.Tensor | None = None, selection: str = "sum"
    ) -> BottleneckOutput:
        """The decoder's input for encoding ``z`` and what the bottleneck did (``selection``: C-MemAE only)."""
        if isinstance(self.bottleneck, ConditionalMemory):
            return self.bottleneck(z, condition, selection)
        if self.conditional:
            return self.bottleneck(z, condition)
        if condition is not None:
            raise ValueError("this model is not conditional: pass condition=None")
        return BottleneckOutput(z) if self.bottleneck is None else self.bottleneck(z)

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, selection: str = "sum"
    ) -> tuple[torch.Tensor, BottleneckOutput]:
        """Reconstruct ``x``; ``condition`` (B,) picks the memory of conditional models (None: self-selection by
        the ``selection`` criterion, see :class:`~memae.memory.ConditionalMemory`)."""
        out = self.bottleneck_output(self.encoder(x), condition, selection)
        return self.decoder(out.latent), out


def build_model(
    architecture: str,
    variant: str,
    *,
    num_slots: int = 100,
    shrink_threshold: float = DEFAULT_SHRINK_THRESHOLD,
    similarity: str = "cosine",
    num_conditions: int = 1,
) -> Autoencoder:
    """One of the paper's models on one of :data:`ARCHITECTURES`.

    Args:
        architecture: key of :data:`ARCHITECTURES`.
        variant: ``"ae"`` (no memory), ``"memae"`` (one memory), ``"cmemae"`` (``num_conditions`` memories) or
            ``"cae"`` (conditional AE, flat architectures only).
        num_slots, shrink_threshold, similarity: the memory's N, λ and d (ignored by ``ae`` and ``cae``).
        num_conditions: Y, the classes of the target group (``cmemae``, ``cae``).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    spec = ARCHITECTURES[architecture]
    channels = spec.latent_channels
    bottleneck: nn.Module | None = None
    if variant == "memae":
        bottleneck = MemoryModule(num_slots, channels, shrink_threshold, similarity)
    elif variant == "cmemae":
        bottleneck = ConditionalMemory(num_conditions, num_slots, channels, shrink_threshold, similarity)
    elif variant == "cae":
        if spec.latent_shape[1:] != (1, 1):
            raise ValueError(f"the conditional AE needs a flat architecture (1×1 latent), not {architecture!r}")
        bottleneck = ConditionalBottleneck(channels, num_conditions)
    return Autoencoder(build_encoder(spec.encoder), build_decoder(spec.decoder), bottleneck)
