"""InvGlow flow layers and model: inversion, log-determinants against autograd, likelihood by brute force."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from invglow.flows import (
    ActNorm,
    AffineCoupling,
    FixedOrthogonal,
    FlowStep,
    InvConv1x1,
    Squeeze,
    ZeroConv2d,
    conv_then_actnorm,
)
from invglow.models import (
    ClassConditionalGlow,
    Glow,
    PatchGlow,
    ScalePrior,
    initialize_actnorms,
    standard_normal_log_prob,
)

torch.set_default_dtype(torch.float32)


def _perturb(module: nn.Module, generator: torch.Generator, scale: float = 0.3) -> None:
    """Move every parameter off its (often trivial) initial value so the checks cannot pass by accident."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale)


class _PriorAsLayer(nn.Module):
    """ScalePrior seen as a layer: its log-det alone (log N is not part of the Jacobian)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.prior = ScalePrior(shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, lp = self.prior(x)
        return u, lp - standard_normal_log_prob(u)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.prior.inverse(y)


LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "actnorm-channel": (lambda: ActNorm((4, 1, 1)), (4, 3, 3)),
    "actnorm-dimension": (lambda: ActNorm((2, 2, 2)), (2, 2, 2)),
    "invconv-lu": (lambda: InvConv1x1(4, lu=True), (4, 3, 3)),
    "invconv-plain": (lambda: InvConv1x1(4, lu=False), (4, 3, 3)),
    "coupling-affine": (lambda: AffineCoupling(4, hidden=8, kind="affine"), (4, 3, 3)),
    "coupling-additive": (lambda: AffineCoupling(4, hidden=8, kind="additive"), (4, 3, 3)),
    "squeeze": (Squeeze, (2, 4, 4)),
    "flow-step": (lambda: FlowStep(4, hidden=8), (4, 3, 3)),
    "flow-step-additive-plain": (lambda: FlowStep(4, hidden=8, coupling="additive", lu=False), (4, 3, 3)),
    "scale-prior": (lambda: _PriorAsLayer((2, 2, 2)), (2, 2, 2)),
    "glow-2-scales": (lambda: _GlowAsLayer(Glow((2, 4, 4), n_scales=2, steps=2, hidden=8)), (2, 4, 4)),
    "fixed-orthogonal": (lambda: FixedOrthogonal(6), (6,)),
    "coupling-dense": (lambda: AffineCoupling(6, hidden=8, dense=True), (6,)),
    "flow-step-dense": (lambda: FlowStep(4, hidden=8, dense_shape=(4, 2, 2)), (4, 2, 2)),
    "glow-dense": (lambda: _GlowAsLayer(Glow((2, 4, 4), n_scales=2, steps=2, hidden=8, dense=True)), (2, 4, 4)),
    "patch-glow": (lambda: _GlowAsLayer(PatchGlow((1, 4, 8), patch=4, steps=2, hidden=8)), (1, 4, 8)),
}


class _GlowAsLayer(nn.Module):
    """A whole Glow (or PatchGlow) as one layer x → concat(u): log-det = log p(x) − log N(u)."""

    def __init__(self, glow: Glow | PatchGlow) -> None:
        super().__init__()
        self.glow = glow

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents, lp = self.glow(x)
        u = torch.cat([latent.reshape(len(x), -1) for latent in latents], 1)
        return u, lp.sum(1) - standard_normal_log_prob(u)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if isinstance(self.glow, PatchGlow):
            shape = self.glow.glow.latent_shapes[0]
            return self.glow.inverse([y.reshape(-1, *shape)])
        latents, start = [], 0
        for shape in self.glow.latent_shapes:
            size = math.prod(shape)
            latents.append(y[:, start : start + size].view(-1, *shape))
            start += size
        return self.glow.inverse(latents)


def _prepared(name: str) -> tuple[nn.Module, torch.Tensor]:
    factory, shape = LAYERS[name]
    generator = torch.Generator().manual_seed(0)
    layer = factory().double()
    x = torch.randn((5, *shape), generator=generator, dtype=torch.float64) * 0.7 + 0.2
    layer(x)  # data-dependent initialisation of every ActNorm
    _perturb(layer, generator, scale=0.05 if name.startswith("glow") else 0.1)  # deep stacks amplify
    return layer, x


@pytest.mark.parametrize("name", LAYERS)
def test_layer_inverts(name: str) -> None:
    layer, x = _prepared(name)
    y, logdet = layer(x)
    assert logdet.shape == (x.shape[0],)
    assert torch.allclose(layer.inverse(y).reshape(x.shape), x, atol=1e-5, rtol=0)
    assert not torch.allclose(y.reshape(x.shape), x, atol=1e-3) or name == "squeeze"


@pytest.mark.parametrize("name", LAYERS)
def test_layer_logdet_matches_autograd_jacobian(name: str) -> None:
    layer, x = _prepared(name)
    _, logdet = layer(x)
    for i in range(x.shape[0]):
        jacobian = torch.autograd.functional.jacobian(lambda sample: layer(sample[None])[0].flatten(), x[i])
        sign, expected = torch.linalg.slogdet(jacobian.reshape(jacobian.shape[0], -1))
        assert sign != 0
        assert logdet[i].item() == pytest.approx(expected.item(), abs=1e-8)


def test_actnorm_data_init_normalises_batch_and_keeps_flag_in_state_dict() -> None:
    layer = ActNorm((3, 1, 1))
    x = torch.randn(16, 3, 5, 5) * torch.tensor([2.0, 0.5, 3.0])[:, None, None] + 4
    y, _ = layer(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    fresh = ActNorm((3, 1, 1))
    fresh.load_state_dict(layer.state_dict())
    assert fresh.initialized.item() == 1
    assert torch.equal(fresh(x * 10)[0], layer(x * 10)[0])  # no re-initialisation on new data


def test_coupling_scale_is_sigmoid_of_h_plus_two_at_init() -> None:
    coupling = AffineCoupling(4, hidden=8)
    x = torch.randn(3, 4, 2, 2)
    y, logdet = coupling(x)
    scale = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(y[:, 2:], x[:, 2:] * scale)  # zero-initialised net: shift 0, raw 0
    assert torch.allclose(y[:, :2], x[:, :2])
    assert torch.allclose(logdet, torch.full((3,), 8 * math.log(scale)))


@pytest.mark.parametrize("kernel", [1, 3])
def test_folded_conv_actnorm_equals_conv_then_actnorm(kernel: int) -> None:
    """The coupling net's fused convolutions give the unfused values and gradients (ActNorm and zero-conv scale)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, kernel, padding=kernel // 2, bias=False)
    norm = ActNorm((10, 1, 1))
    norm.initialize(conv(torch.randn(16, 6, 5, 5)).detach())
    with torch.no_grad():
        norm.log_scale.add_(0.3 * torch.randn_like(norm.log_scale))
        norm.bias.add_(torch.randn_like(norm.bias))
    x = torch.randn(4, 6, 5, 5, requires_grad=True)
    fused, plain = conv_then_actnorm(x, conv, norm), norm(conv(x))[0]
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(plain)
    parameters = [x, conv.weight, norm.bias, norm.log_scale]
    for ours, reference in zip(
        torch.autograd.grad((fused * weights).sum(), parameters),
        torch.autograd.grad((plain * weights).sum(), parameters),
        strict=True,
    ):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)

    zero = ZeroConv2d(6, 4)
    with torch.no_grad():
        for parameter in zero.parameters():
            parameter.copy_(0.2 * torch.randn_like(parameter))
    expected = zero.conv(x) * torch.exp(3 * zero.logs)
    torch.testing.assert_close(zero(x), expected, rtol=1e-5, atol=1e-6)


def test_folded_conv_actnorm_initialises_an_uninitialised_norm() -> None:
    conv, norm = nn.Conv2d(3, 8, 3, padding=1, bias=False), ActNorm((8, 1, 1))
    y = conv_then_actnorm(torch.randn(32, 3, 6, 6), conv, norm)
    assert bool(norm.initialized)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(8), atol=1e-4, rtol=0)


def test_squeeze_channel_order_is_4c_plus_2dy_plus_dx() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y, _ = Squeeze()(x)
    for c in range(2):
        for dy in range(2):
            for dx in range(2):
                assert torch.equal(y[0, 4 * c + 2 * dy + dx], x[0, c, dy::2, dx::2])


def _tiny_glow() -> tuple[Glow, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    glow = Glow((3, 8, 8), n_scales=3, steps=2, hidden=8).double()
    x = torch.rand((6, 3, 8, 8), generator=generator, dtype=torch.float64) - 0.5
    initialize_actnorms(glow, x)
    _perturb(glow, generator, scale=0.05)
    return glow, x


def test_glow_log_likelihood_equals_brute_force_change_of_variables() -> None:
    glow, x = _tiny_glow()
    _, lp = glow(x)
    assert lp.shape == (6, 3)

    def to_latent(sample: torch.Tensor) -> torch.Tensor:
        return torch.cat([u.flatten(1) for u in glow(sample[None])[0]], 1)[0]

    for i in range(2):
        jacobian = torch.autograd.functional.jacobian(to_latent, x[i]).reshape(192, 192)
        u = to_latent(x[i])
        expected = torch.linalg.slogdet(jacobian)[1] - 0.5 * (u.pow(2) + math.log(2 * math.pi)).sum()
        assert lp[i].sum().item() == pytest.approx(expected.item(), abs=1e-7)


def test_final_scale_term_is_its_own_change_of_variables() -> None:
    """lp_2 = log N(u_2) + log|det ∂u_2/∂h| with h the half passed on from scale 1: computed directly, no mixing."""
    glow, x = _tiny_glow()
    _, lp = glow(x)
    h = x
    for k in range(2):  # run scales 0 and 1 by hand to get the input of scale 2
        h, _ = glow.squeeze(h)
        for step in glow.scales[k]:
            h, _ = step(h)
        h = h.chunk(2, dim=1)[1]

    def last_scale(sample: torch.Tensor) -> torch.Tensor:
        y, _ = glow.squeeze(sample[None])
        for step in glow.scales[2]:
            y, _ = step(y)
        return glow.priors[2](y)[0].flatten()

    for i in range(2):
        jacobian = torch.autograd.functional.jacobian(last_scale, h[i])
        u = last_scale(h[i])
        expected = torch.linalg.slogdet(jacobian.reshape(48, 48))[1] + standard_normal_log_prob(u[None])[0]
        assert lp[i, 2].item() == pytest.approx(expected.item(), abs=1e-7)


def test_glow_shapes_match_the_paper_layout() -> None:
    glow = Glow((3, 32, 32), n_scales=3, steps=1, hidden=4)
    assert glow.latent_shapes == [(6, 16, 16), (12, 8, 8), (48, 4, 4)]
    assert sum(math.prod(shape) for shape in glow.latent_shapes) == glow.n_dims == 3072
    samples = glow.sample(2, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 32, 32) and torch.isfinite(samples).all()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 1, 32, 32), "RGB model expects"),
        (torch.zeros(2, 3, 28, 28), "RGB model expects"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "dequantized"),
    ],
)
def test_glow_rejects_wrong_images(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Glow((3, 32, 32), n_scales=3, steps=1, hidden=4)(images)


def test_glow_rejects_sizes_not_divisible_by_scales() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Glow((3, 12, 12), n_scales=3)


def test_class_conditional_density_equals_brute_force_per_class() -> None:
    glow, x = _tiny_glow()
    model = ClassConditionalGlow(glow, n_classes=3).double()
    _perturb(model.head_bias, torch.Generator().manual_seed(5), scale=0.3)
    for parameters in (model.head_log_scale, model.mean, model.log_std):
        _perturb(parameters, torch.Generator().manual_seed(6), scale=0.3)
    class_lp = model.class_log_densities(x)
    assert class_lp.shape == (6, 3)

    def whitened(sample: torch.Tensor, c: int) -> torch.Tensor:
        """x → ((head_c(u) − μ_c) / σ_c), an invertible map onto N(0, I) under class c."""
        parts = []
        for k, u in enumerate(glow(sample[None])[0]):
            v = (u.flatten(1) + model.head_bias[k][c]) * torch.exp(model.head_log_scale[k][c])
            parts.append((v - model.mean[k][c]) * torch.exp(-model.log_std[k][c]))
        return torch.cat(parts, 1)[0]

    for c in range(3):
        jacobian = torch.autograd.functional.jacobian(lambda sample, c=c: whitened(sample, c), x[0])
        w = whitened(x[0], c)
        expected = torch.linalg.slogdet(jacobian.reshape(192, 192))[1] + standard_normal_log_prob(w[None])[0]
        assert class_lp[0, c].item() == pytest.approx(expected.item(), abs=1e-7)
    marginal = model(x)[1]
    assert marginal.shape == (6, 1)
    assert torch.allclose(marginal[:, 0], torch.logsumexp(class_lp, 1) - math.log(3))


def test_paper_configuration_has_the_original_parameter_count() -> None:
    """44,155,008 parameters, as counted for the original's create_glow_model(512, K=32, L=3) (bench_invglow)."""
    from invglow.config import PAPER
    from invglow.experiments import build_model

    model = build_model(PAPER)
    assert sum(parameter.numel() for parameter in model.parameters()) == 44_155_008


def test_patch_glow_sums_the_patch_log_densities() -> None:
    torch.manual_seed(0)
    model = PatchGlow((3, 16, 16), patch=8, steps=1, hidden=8)
    x = torch.rand(2, 3, 16, 16) - 0.5
    _, lp = model(x)
    assert lp.shape == (2, 1)
    expected = sum(model.glow(x[:, :, r : r + 8, c : c + 8])[1][:, 0] for r in (0, 8) for c in (0, 8))
    assert torch.allclose(lp[:, 0], expected, atol=1e-3)
    assert torch.equal(model.from_patches(model.to_patches(x)), x)
