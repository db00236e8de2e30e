"""InvGlow's multi-scale Glow with independent per-scale priors (Schirrmeister et al., NeurIPS 2020, Sec. 2 and 4).

``L`` scales of ``K`` flow steps (paper: L = 3, K = 32, 512 hidden channels). Before each scale the tensor is
squeezed; after every scale but the last, the *first* half of the channels is factored out to that scale's prior
and the second half goes on. Each prior is a per-dimension :class:`~invglow.flows.ActNorm` followed by a fixed
N(0, I): a learned diagonal Gaussian *not* conditioned on the other scales (unlike Glow's learned split prior).
Hence the log-density splits into independent per-scale terms, each computed directly:

    log p(x) = Σ_k lp_k,   lp_k = Σ_{steps of scale k} log|det J| + log|det J_prior_k| + log N(u_k; 0, I),

the quantity behind the paper's "final-scale contribution" score (lp of the last, 4×4, scale). The original code
reached the same sums through halving bookkeeping of shared log-dets (reference note §4.1); here they are never
mixed.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from invglow.config import InvGlowConfig
from invglow.flows import ActNorm, CouplingKind, FlowStep, Squeeze

ModelKind = Literal["full", "local", "dense"]
MODEL_KINDS: tuple[ModelKind, ...] = ("full", "local", "dense")

_LOG_2PI = math.log(2 * math.pi)

CHECKPOINT_SEGMENT = 1
"""Flow steps per checkpointed segment with ``GlowConfig.memory_saving="checkpoint"``: each step's input is kept,
everything inside a step recomputed in the backward pass. Smaller segments need less memory for the same extra
forward pass (``python -m bench invglow_memory``, README "Performance")."""


def standard_normal_log_prob(u: torch.Tensor) -> torch.Tensor:
    """Σ log N(u_i; 0, 1) per sample: (B, ...) → (B,)."""
    return -0.5 * (u.pow(2) + _LOG_2PI).flatten(1).sum(1)


def check_images(x: torch.Tensor, in_shape: tuple[int, ...]) -> None:
    """Raise a clear error unless ``x`` is a float batch of shape (B, *in_shape)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(in_shape):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        kind = {1: "grey", 3: "RGB"}.get(in_shape[0], f"{in_shape[0]}-channel")
        expected = ", ".join(map(str, in_shape))
        raise ValueError(f"images: this {kind} model expects (B, {expected}), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"images: expected dequantized floats (u/256 − 0.5), got {x.dtype}")


class ScalePrior(nn.Module):
    """Per-scale prior: per-dimension ActNorm (data-initialised) followed by a fixed standard normal.

    Args:
        shape: (C, H, W) of the factored-out latent.
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.norm = ActNorm(shape)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u = ActNorm(z), log|det| + log N(u)) with the second of shape (B,)."""
        u, logdet = self.norm(z)
        return u, logdet + standard_normal_log_prob(u)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """z = ActNorm⁻¹(u)."""
        return self.norm.inverse(u)


def flow_through(steps: nn.ModuleList, h: torch.Tensor, logdet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` applied to ``h`` in order, each step's log-det added to ``logdet``: (h, logdet)."""
    for step in steps:
        h, step_logdet = step(h)
        logdet = logdet + step_logdet
    return h, logdet


def actnorms_initialized(module: nn.Module) -> bool:
    """Whether every :class:`~invglow.flows.ActNorm` inside ``module`` has been initialised."""
    return all(bool(m.initialized) for m in module.modules() if isinstance(m, ActNorm))


class Glow(nn.Module):
    """Multi-scale Glow returning per-scale log-densities.

    Args:
        in_shape: (C, H, W) of the input, H and W divisible by 2^n_scales (paper: (3, 32, 32), grey (1, 32, 32)).
        n_scales: L (paper: 3).
        steps: K flow steps per scale (paper: 32).
        hidden: coupling-net width (paper: 512).
        coupling: ``"affine"`` (paper) or ``"additive"``.
        lu: LU-decomposed 1×1 convolutions (paper: True).
        dense: the fully connected variant (original ``block_type='dense'``, used with K = 8): every step works on
            the flattened tensor of its scale (see :class:`~invglow.flows.FlowStep`).
        checkpoint_segment: None (default, the faster path) keeps every activation for the backward pass; n
            keeps only the input of every n flow steps and recomputes the rest in the backward pass (activation
            checkpointing: less memory, one more forward pass; the same gradients, bit for bit).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (3, 32, 32),
        n_scales: int = 3,
        steps: int = 32,
        hidden: int = 512,
        coupling: CouplingKind = "affine",
        lu: bool = True,
        dense: bool = False,
        checkpoint_segment: int | None = None,
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        if n_scales < 1 or steps < 1 or hidden < 1:
            raise ValueError(f"n_scales, steps, hidden: expected positive, got {n_scales}, {steps}, {hidden}")
        if checkpoint_segment is not None and checkpoint_segment < 1:
            raise ValueError(f"checkpoint_segment: expected None or positive, got {checkpoint_segment}")
        self.checkpoint_segment = checkpoint_segment
        if height % 2**n_scales or width % 2**n_scales:
            raise ValueError(f"in_shape: height and width must be divisible by 2**{n_scales}, got {in_shape}")
        self.in_shape = tuple(in_shape)
        self.squeeze = Squeeze()
        self.scales = nn.ModuleList()
        self.priors = nn.ModuleList()
        self.latent_shapes: list[tuple[int, int, int]] = []
        for k in range(n_scales):
            channels, height, width = channels * 4, height // 2, width // 2
            dense_shape = (channels, height, width) if dense else None
            self.scales.append(
                nn.ModuleList([FlowStep(channels, hidden, coupling, lu, dense_shape) for _ in range(steps)])
            )
            factored = channels if k == n_scales - 1 else channels // 2
            self.latent_shapes.append((factored, height, width))
            self.priors.append(ScalePrior((factored, height, width)))
            channels -= factored if k < n_scales - 1 else 0

    @property
    def n_dims(self) -> int:
        """D, the number of input dimensions."""
        return math.prod(self.in_shape)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error unless ``x`` is a float batch of shape (B, *in_shape)."""
        check_images(x, self.in_shape)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Map images to latents.

        Args:
            x: (B, C, H, W) dequantized images u/256 − 0.5 (+ noise or bin centre).

        Returns:
            ``(latents, lp)``: the per-scale prior-normalised latents u_k of shape (B, *latent_shapes[k]), and the
            per-scale log-densities lp (B, L) in nats, whose row sum is log p(x).
        """
        self.check_input(x)
        latents, per_scale = [], []
        h = x
        for k, (steps, prior) in enumerate(zip(self.scales, self.priors, strict=True)):
            h, _ = self.squeeze(h)
            h, logdet = self._flow(steps, h, h.new_zeros(h.shape[0]))
            z, h = h.chunk(2, dim=1) if k < len(self.scales) - 1 else (h, None)
            u, prior_lp = prior(z)
            latents.append(u)
            per_scale.append(logdet + prior_lp)
        return latents, torch.stack(per_scale, dim=1)

    def _flow(self, steps: nn.ModuleList, h: torch.Tensor, logdet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` applied to ``h``, their log-dets added to ``logdet``; in checkpointed segments of
        ``checkpoint_segment`` steps when gradients are recorded and every ActNorm of ``steps`` is initialised (a
        data-dependent initialisation must run once, not again in the recomputation)."""
        size = self.checkpoint_segment
        if size is None or not torch.is_grad_enabled() or not actnorms_initialized(steps):
            return flow_through(steps, h, logdet)
        for start in range(0, len(steps), size):
            h, logdet = checkpoint(flow_through, steps[start : start + size], h, logdet, use_reentrant=False)
        return h, logdet

    def inverse(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """Images from per-scale latents u_k (the inverse of :meth:`forward`'s first output)."""
        if len(latents) != len(self.scales):
            raise ValueError(f"latents: expected {len(self.scales)} tensors, one per scale, got {len(latents)}")
        h = None
        for k in reversed(range(len(self.scales))):
            z = self.priors[k].inverse(latents[k])
            h = z if h is None else torch.cat([z, h], dim=1)
            for step in reversed(self.scales[k]):
                h = step.inverse(h)
            h = self.squeeze.inverse(h)
        return h

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images x = f⁻¹(u), u ~ N(0, T² I) at every scale; (n, C, H, W) in about [−0.5, 0.5]."""
        device = next(self.parameters()).device
        latents = [
            torch.randn((n, *shape), generator=generator, device=device) * temperature for shape in self.latent_shapes
        ]
        return self.inverse(latents)


@torch.no_grad()
def initialize_actnorms(model: nn.Module, images: torch.Tensor) -> None:
    """Data-dependent initialisation of every ActNorm of ``model`` from one forward pass over ``images``.

    The original initialises from the first 11 training batches (704 augmented, dequantized images) at once.
    """
    model(images)


def mark_initialized(model: nn.Module) -> None:
    """Mark every ActNorm of ``model`` as initialised, so that the next forward does not re-initialise it (for a
    model whose parameters are set by hand; a loaded state dict already carries the flag)."""
    for module in model.modules():
        if isinstance(module, ActNorm):
            module.initialized.fill_(1)


class ClassConditionalGlow(nn.Module):
    """Supervised InvGlow: a Glow feature extractor with one diagonal Gaussian head per class (reference note §2.1).

    The Glow's per-scale prior-normalised latents u_k (the original's ``m0-act-k`` outputs) feed, for every class c
    and scale k, a per-dimension ActNorm (identity at init; ``init_class_model=False``) and a diagonal Gaussian with
    trainable mean (0) and log-std (0):

        log p(x | c) = Σ_k [flow and prior-ActNorm log-dets of scale k + log|det head ActNorm_{c,k}|
                            + log N(head_{c,k}(u_k); μ_{c,k}, σ_{c,k}²)],
        log p(x) = logsumexp_c log p(x | c) − log C.

    ``forward`` returns the class-marginal log p(x) as a single column (a per-scale split of a mixture is not
    defined; the original's attempt crashes, reference note §7.5).

    Args:
        glow: the pretrained (Tiny) Glow, trained further with the heads.
        n_classes: C.
    """

    def __init__(self, glow: Glow, n_classes: int) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes: expected at least 2, got {n_classes}")
        self.glow = glow
        self.n_classes = n_classes
        self.in_shape = glow.in_shape
        sizes = [math.prod(shape) for shape in glow.latent_shapes]
        self.head_bias = nn.ParameterList([nn.Parameter(torch.zeros(n_classes, size)) for size in sizes])
        self.head_log_scale = nn.ParameterList([nn.Parameter(torch.zeros(n_classes, size)) for size in sizes])
        self.mean = nn.ParameterList([nn.Parameter(torch.zeros(n_classes, size)) for size in sizes])
        self.log_std = nn.ParameterList([nn.Parameter(torch.zeros(n_classes, size)) for size in sizes])

    @property
    def n_dims(self) -> int:
        """D, the number of input dimensions."""
        return self.glow.n_dims

    def class_log_densities(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | c) for every class: (B, C) in nats."""
        return self._latents_and_class_log_densities(x)[1]

    def _latents_and_class_log_densities(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        latents, per_scale = self.glow(x)
        total = x.new_zeros(x.shape[0], self.n_classes)
        for k, u in enumerate(latents):
            u = u.flatten(1)
            pre_prior = per_scale[:, k] - standard_normal_log_prob(u)  # log-dets of scale k only
            v = (u[:, None, :] + self.head_bias[k]) * torch.exp(self.head_log_scale[k])
            z = (v - self.mean[k]) * torch.exp(-self.log_std[k])
            log_normal = (-0.5 * (z.pow(2) + _LOG_2PI) - self.log_std[k]).sum(-1)
            total = total + pre_prior[:, None] + self.head_log_scale[k].sum(-1) + log_normal
        return latents, total

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the Glow's latents u_k, class-marginal log p(x) as (B, 1))."""
        latents, log_densities = self._latents_and_class_log_densities(x)
        marginal = torch.logsumexp(log_densities, dim=1) - math.log(self.n_classes)
        return latents, marginal[:, None]


class PatchGlow(nn.Module):
    """The paper's "local" model (original ``local_patches=True``): one single-scale Glow on non-overlapping patches.

    A (C, H, W) image is cut into (H/p)·(W/p) patches of p × p (paper: 16 patches of 8 × 8); each patch is a sample
    of a Glow with one scale (squeeze → K steps → per-dimension ActNorm prior over all C·p² dims), and the image's
    log-density is the sum over its patches: a model that only sees local structure (paper Sec. 4). Unlike the
    original (which did not implement it), the model is invertible and can sample.

    Args:
        in_shape: (C, H, W) of the images, H and W divisible by ``patch``.
        patch: p (8), even.
        steps: K (32).
        hidden: coupling-net width (512).
        coupling: ``"affine"`` or ``"additive"``.
        lu: LU-decomposed 1×1 convolutions.
        checkpoint_segment: activation checkpointing of the patch Glow (:class:`Glow`); None: off.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (3, 32, 32),
        patch: int = 8,
        steps: int = 32,
        hidden: int = 512,
        coupling: CouplingKind = "affine",
        lu: bool = True,
        checkpoint_segment: int | None = None,
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        if height % patch or width % patch:
            raise ValueError(f"in_shape: height and width must be divisible by patch={patch}, got {in_shape}")
        self.in_shape = tuple(in_shape)
        self.patch = patch
        self.glow = Glow(
            (channels, patch, patch), 1, steps, hidden, coupling, lu, checkpoint_segment=checkpoint_segment
        )

    @property
    def n_dims(self) -> int:
        """D, the number of input dimensions of a whole image."""
        return math.prod(self.in_shape)

    def to_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B · n_patches, C, p, p), patches in row-major order per image."""
        b, c, h, w = x.shape
        p = self.patch
        return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, p, p)

    def from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_patches`."""
        c, h, w = self.in_shape
        p = self.patch
        return patches.view(-1, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(-1, c, h, w)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(per-patch latents [(B · n_patches, 4C, p/2, p/2)], image log-density as (B, 1))."""
        check_images(x, self.in_shape)
        latents, lp = self.glow(self.to_patches(x))
        return latents, lp.view(x.shape[0], -1).sum(1, keepdim=True)

    def inverse(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """Images from per-patch latents."""
        return self.from_patches(self.glow.inverse(latents))

    @property
    def n_patches(self) -> int:
        """Patches per image."""
        _, height, width = self.in_shape
        return (height // self.patch) * (width // self.patch)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images of independently sampled patches (:meth:`Glow.sample` at ``temperature``), patch after patch
        in :meth:`to_patches` order; (n, C, H, W) in about [−0.5, 0.5]."""
        return self.from_patches(self.glow.sample(n * self.n_patches, temperature, generator))


def build_model(config: InvGlowConfig, kind: ModelKind = "full") -> Glow | PatchGlow:
    """The ``"full"`` convolutional Glow, the ``"local"`` patch Glow or the ``"dense"`` Glow of ``config``.

    All three have ``config.glow``'s channels, image size, coupling and width (the original hard-codes 512 hidden
    units for every model); the local one has ``patch_steps`` steps on one scale, the dense one the Glow's scales
    with ``dense_steps`` steps each and frozen orthogonal mixing instead of (LU) 1×1 convolutions. Only the full
    Glow follows ``config.glow.dense``; all three follow ``config.glow.memory_saving``.
    """
    glow, local = config.glow, config.local_semantic
    shape = (glow.channels, glow.image_size, glow.image_size)
    segment = CHECKPOINT_SEGMENT if glow.memory_saving == "checkpoint" else None
    if kind == "full":
        return Glow(shape, glow.n_scales, glow.steps, glow.hidden, glow.coupling, glow.lu, glow.dense, segment)
    if kind == "local":
        return PatchGlow(shape, local.patch_size, local.patch_steps, glow.hidden, glow.coupling, glow.lu, segment)
    if kind == "dense":
        return Glow(
            shape, glow.n_scales, local.dense_steps, local.dense_hidden, glow.coupling, lu=False, dense=True,
            checkpoint_segment=segment,
        )  # fmt: skip
    raise ValueError(f"kind: expected one of {', '.join(MODEL_KINDS)}, got {kind!r}")
