"""Invertible layers of InvGlow's Glow (Schirrmeister et al., NeurIPS 2020, Sec. 2; Kingma & Dhariwal 2018).

One convention for every layer: ``forward(x)`` maps data to latent and returns ``(y, logdet)`` with ``logdet``
the per-sample log |det ∂y/∂x|, shape (B,); ``inverse(y)`` maps back. Fitted state (the ActNorm ``initialized``
flag, the LU permutation and signs) lives in buffers so that it survives ``state_dict`` round trips.

Layers (reference note invglow.md §2.1): :class:`ActNorm` with data-dependent initialisation, :class:`InvConv1x1`
(LU-decomposed or plain), :class:`AffineCoupling` with scale ``sigmoid(h + 2)`` (additive option),
:class:`Squeeze` (space-to-depth) and :class:`FlowStep` (ActNorm → 1×1 conv → coupling).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

ACTNORM_MIN_STD = 1e-6  # ActNorm init s = −log(max(std, 1e-6)) (original invertible/actnorm)
COUPLING_SCALE_OFFSET = 2.0
"""Affine coupling scale = sigmoid(h + 2): at zero-initialised h the scale is sigmoid(2) ≈ 0.88, close to the
identity but bounded in (0, 1) so it cannot explode (original code and openai/glow; the paper's Glow, Sec. 2)."""
ZERO_CONV_LOG_SCALE_FACTOR = 3.0  # zero-init output conv multiplies by exp(3 · logs) (openai/glow Conv2dZeros)
HIDDEN_WEIGHT_STD = 0.05  # coupling-net hidden conv init N(0, 0.05²) (original glow.py)

CouplingKind = Literal["affine", "additive"]


def _sum_per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).sum(1)


class ActNorm(nn.Module):
    """Per-feature affine normalisation ``y = (x + b) · exp(s)`` with data-dependent initialisation.

    ``b`` and ``s`` have shape ``param_shape`` (e.g. (C, 1, 1) per channel, or (C, H, W) per dimension for the
    per-scale priors). The first forward while ``initialized`` is 0 sets ``b = −mean`` and
    ``s = −log(max(std, 1e-6))`` over the batch and the broadcast dimensions, so that batch's output has zero mean
    and unit variance. log-det = (number of broadcast positions) · Σ s.

    Args:
        param_shape: shape of ``b`` and ``s`` without the batch dimension.
    """

    def __init__(self, param_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, *param_shape))
        self.log_scale = nn.Parameter(torch.zeros(1, *param_shape))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != self.bias.ndim or any(
            p not in (1, d) for p, d in zip(self.bias.shape[1:], x.shape[1:], strict=True)
        ):
            expected = tuple(self.bias.shape[1:])
            raise ValueError(f"x: expected (B, ...) broadcastable with {expected}, got {tuple(x.shape)}")

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``b`` and ``s`` from the statistics of ``x`` and mark the layer initialised."""
        dims = [0] + [i for i, size in enumerate(self.bias.shape) if i > 0 and size == 1]
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(ACTNORM_MIN_STD)))
        self.initialized.fill_(1)

    def _positions(self, x: torch.Tensor) -> int:
        return math.prod(d for d, p in zip(x.shape[1:], self.bias.shape[1:], strict=True) if p == 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, logdet (B,)); initialises from ``x`` first if not yet initialised."""
        self._check(x)
        if not self.initialized:
            self.initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = self.log_scale.sum() * self._positions(x)
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x = y · exp(−s) − b."""
        self._check(y)
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv1x1(nn.Module):
    """Invertible 1×1 convolution (Glow Sec. 3.2), optionally LU-decomposed as in the original (``LU_decomposed``).

    Initialised with the Q of the QR decomposition of a Gaussian matrix. With ``lu=True``:
    ``W = P · (L ⊙ lower + I) · (U ⊙ upper + diag(sign · exp(log_s)))``, P and sign buffers, L, U, log_s trained,
    log-det = H·W·Σ log_s. With ``lu=False`` W is trained directly and log-det = H·W·log|det W|.

    Args:
        channels: number of channels C.
        lu: use the LU parametrisation.
    """

    def __init__(self, channels: int, lu: bool = True) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
        self.lu = lu
        if not lu:
            self.weight = nn.Parameter(q.float())
            return
        p, lower, upper = torch.linalg.lu(q)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", p.float())
        self.register_buffer("sign_s", torch.sign(diagonal).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(diagonal.abs()).float())

    def matrix(self) -> torch.Tensor:
        """The C×C weight W."""
        if not self.lu:
            return self.weight
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def _log_abs_det(self) -> torch.Tensor:
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(self.weight)[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W x per pixel, logdet (B,))."""
        y = F.conv2d(x, self.matrix()[:, :, None, None])
        logdet = self._log_abs_det() * x.shape[2] * x.shape[3]
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """W⁻¹ y per pixel."""
        return F.conv2d(y, torch.linalg.inv(self.matrix())[:, :, None, None])


class ZeroConv2d(nn.Module):
    """3×3 convolution initialised to output zero, scaled by ``exp(3 · logs)`` per channel (openai/glow)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, out_channels, H, W): ``conv(x) · exp(3 · logs)``, the scale folded into the weight and bias."""
        scale = torch.exp(self.logs * ZERO_CONV_LOG_SCALE_FACTOR).view(-1)
        return F.conv2d(x, self.conv.weight * scale[:, None, None, None], self.conv.bias * scale, padding=1)


def conv_then_actnorm(x: torch.Tensor, conv: nn.Conv2d, norm: ActNorm) -> torch.Tensor:
    """``norm(conv(x))[0]`` for a bias-free ``conv`` and a per-channel ``norm``, computed as one convolution.

    (W x + b) · eˢ = (W · eˢ) x + b · eˢ: folding the ActNorm into the weight and bias saves two elementwise passes
    over the (B, hidden, H, W) activation forward and two backward, which are most of a Glow step's time outside
    the convolutions. An uninitialised ``norm`` is initialised from ``conv(x)`` first, as its own forward does.
    """
    if not norm.initialized:
        return norm(conv(x))[0]
    scale = torch.exp(norm.log_scale).view(-1)
    return F.conv2d(x, conv.weight * scale[:, None, None, None], norm.bias.view(-1) * scale, padding=conv.padding)


class CouplingNet(nn.Module):
    """Coupling conditioner: Conv3×3 + ActNorm → ReLU → Conv1×1 + ActNorm → ReLU → zero-init Conv3×3.

    The ActNorms are data-initialised like the flow's; their log-dets are not part of the likelihood.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.norm1 = ActNorm((hidden, 1, 1))
        self.conv2 = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.norm2 = ActNorm((hidden, 1, 1))
        self.out = ZeroConv2d(hidden, out_channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=HIDDEN_WEIGHT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, out_channels, H, W)."""
        h = torch.relu_(conv_then_actnorm(x, self.conv1, self.norm1))
        h = torch.relu_(conv_then_actnorm(h, self.conv2, self.norm2))
        return self.out(h)


class DenseCouplingNet(nn.Module):
    """Conditioner of the dense ("fully connected") variant: Linear → ReLU → Linear → ReLU → Linear.

    The last layer keeps PyTorch's default initialisation, as the original (not zero-initialised).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, out_features)."""
        return self.net(x)


class FixedOrthogonal(nn.Module):
    """Frozen random orthogonal mixing of features (original 'invconvfixed').

    |det W| = 1 up to the rounding of W to float32; that tiny log-det is computed once (float64) and kept as a
    buffer, so the likelihood stays exact for the stored matrix.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(features, features, dtype=torch.float64))
        weight = q.float()
        self.register_buffer("weight", weight)
        self.register_buffer("log_abs_det", torch.linalg.slogdet(weight.double())[1].float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x Wᵀ, logdet (B,)) for x of shape (B, D)."""
        return x @ self.weight.T, self.log_abs_det.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """y W⁻ᵀ."""
        return y @ torch.linalg.inv(self.weight).T


class AffineCoupling(nn.Module):
    """Coupling layer: the first half of the channels conditions the second (original ``AffineCoefs``).

    affine: ``h = NN(x_a)``; shift = h[:, 0::2], raw = h[:, 1::2] (interleaved); scale = sigmoid(raw + 2);
    ``y_b = (x_b + shift) · scale`` (add first, then multiply); log-det = Σ log scale.
    additive: NN gives C/2 channels and ``y_b = x_b + shift`` (log-det 0).

    Args:
        channels: C (or D features for ``dense``), even.
        hidden: width of the conditioner.
        kind: ``"affine"`` or ``"additive"``.
        dense: a fully connected conditioner on (B, D) inputs instead of the convolutional one.
    """

    def __init__(self, channels: int, hidden: int, kind: CouplingKind = "affine", dense: bool = False) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"channels: coupling needs an even number of channels, got {channels}")
        if kind not in ("affine", "additive"):
            raise ValueError(f"kind: expected 'affine' or 'additive', got {kind!r}")
        self.kind = kind
        half = channels // 2
        net = DenseCouplingNet if dense else CouplingNet
        self.net = net(half, channels if kind == "affine" else half, hidden)

    def _shift_raw(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(shift, raw + 2) with scale = sigmoid(raw + 2); raw is None for the additive coupling."""
        h = self.net(x_a)
        if self.kind == "additive":
            return h, None
        return h[:, 0::2], h[:, 1::2] + COUPLING_SCALE_OFFSET

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(concat(x_a, y_b), logdet (B,))."""
        x_a, x_b = x.chunk(2, dim=1)
        shift, logit = self._shift_raw(x_a)
        if logit is None:
            return torch.cat([x_a, x_b + shift], 1), x.new_zeros(x.shape[0])
        y_b = (x_b + shift) * torch.sigmoid(logit)
        return torch.cat([x_a, y_b], 1), _sum_per_sample(F.logsigmoid(logit))  # log scale, stable for h ≪ 0

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x_b = y_b / scale − shift."""
        y_a, y_b = y.chunk(2, dim=1)
        shift, logit = self._shift_raw(y_a)
        x_b = y_b - shift if logit is None else y_b / torch.sigmoid(logit) - shift
        return torch.cat([y_a, x_b], 1)


class Squeeze(nn.Module):
    """Space-to-depth 2×2: (B, C, H, W) → (B, 4C, H/2, W/2), new channel = 4c + 2·dy + dx (y0ast ``squeeze2d``)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(squeezed, zero logdet (B,))."""
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"x: squeeze needs even height and width, got {h}×{w}")
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Depth-to-space, undoing :meth:`forward`."""
        b, c4, h, w = y.shape
        c = c4 // 4
        return y.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


class FlowStep(nn.Module):
    """One Glow step: ActNorm → invertible 1×1 conv → coupling (original ``flow_block``).

    The dense variant (original ``block_type='dense'``) flattens the (C, H, W) input to D = C·H·W features and runs
    ActNorm per feature → frozen random orthogonal D × D mixing → coupling with a fully connected conditioner.

    Args:
        channels: C.
        hidden: coupling-net width (512 in the paper).
        coupling: ``"affine"`` or ``"additive"``.
        lu: LU-decomposed 1×1 conv.
        dense_shape: (C, H, W) of the input for the dense variant; None for the convolutional step.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        coupling: CouplingKind = "affine",
        lu: bool = True,
        dense_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.dense_shape = dense_shape
        if dense_shape is None:
            layers = [
                ActNorm((channels, 1, 1)),
                InvConv1x1(channels, lu=lu),
                AffineCoupling(channels, hidden, coupling),
            ]
        else:
            features = math.prod(dense_shape)
            layers = [
                ActNorm((features,)),
                FixedOrthogonal(features),
                AffineCoupling(features, hidden, coupling, dense=True),
            ]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, logdet (B,)) summed over the three layers."""
        shape = x.shape
        x = x.flatten(1) if self.dense_shape is not None else x
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
        return x.view(shape), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The layers' inverses in reverse order."""
        shape = y.shape
        y = y.flatten(1) if self.dense_shape is not None else y
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y.view(shape)
