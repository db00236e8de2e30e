"""The original codes' trained-model files, written here in their formats, loaded into our models.

InvGlow: pickles of whole models naming the original's classes (``tests/helpers/write_original_invglow.py``);
MCHAD: Lightning checkpoints and pytorch-ood state dicts; MemAE: the official code's state dicts. Every loader
maps the tensors exactly, refuses a pickle calling anything else without calling it, and says in one line which
tensor does not fit.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import DataError
from invglow.config import GlowConfig, InvGlowConfig, LocalSemanticConfig
from invglow.models import ClassConditionalGlow, Glow, PatchGlow
from invglow.original_checkpoints import load_original as load_invglow
from mchad.config import CONFIGS as MCHAD_CONFIGS
from mchad.original_checkpoints import load_original as load_mchad
from memae.config import CONFIGS as MEMAE_CONFIGS
from memae.original_checkpoints import load_original as load_memae
from tests.helpers import write_original_invglow as original
from tests.helpers.write_original_invglow import random_tensors, save_original, shared_zeros
from tests.helpers.write_original_mchad import batch_norm, lightning_checkpoint, pytorch_ood_wrn
from tests.helpers.write_original_memae import official_layers, official_state_dict

SMALL = InvGlowConfig(
    glow=GlowConfig(channels=3, image_size=8, steps=2, hidden=8),
    local_semantic=LocalSemanticConfig(patch_size=8, patch_steps=2, dense_steps=2, dense_hidden=8),
)
EPS = 1e-8  # the original ActNorm's default eps (priors and class heads)


class _Hostile:
    """Pickles as a call of ``os.system`` that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _assert_one_line_error(raised: pytest.ExceptionInfo, path: Path, *parts: str) -> None:
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for part in parts:
        assert part in message, message


def _steps(glow: nn.Module, k: int) -> list[nn.Module]:
    """The flow blocks of scale ``k`` of a written original Glow."""
    flow_node = glow.prev[k].prev[0]
    while "m0-flow" not in flow_node.tags.get("name", ""):
        flow_node = flow_node.prev[0]
    return [m for m in flow_node.module.sequential if isinstance(m, original.InvertibleSequential)]


def _prior_actnorm(glow: nn.Module, k: int) -> nn.Module:
    return glow.prev[k].prev[0].module.sequential[1]


# --- InvGlow -----------------------------------------------------------------------------------------------


def _coupling_net_reference(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The original's conv block (Conv2d + ActNorm, ReLU, 1×1 Conv2d + ActNorm, ReLU, Conv2dZeros) computed from
    its written tensors."""
    h = x
    for conv in (net[0], net[2]):
        h = F.conv2d(h, conv.conv.weight, padding=conv.conv.kernel_size[0] // 2)
        h = torch.relu((h + conv.actnorm.loc) * torch.exp(conv.actnorm.log_scale))
    scale = torch.exp(net[4].logs * net[4].logscale_factor)
    return F.conv2d(h, net[4].conv.weight, net[4].conv.bias, padding=1) * scale


def _prior_reference(actnorm: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's m0-act-k ActNorm (scale exp(s) + eps) and m0-dist-k N(0, I): (u, log-det + log N(u))."""
    scale = torch.exp(actnorm.log_scale.flatten()) + EPS
    u = scale * (z.flatten(1) + actnorm.loc.flatten())
    return u, torch.log(scale).sum() - 0.5 * (u.pow(2) + math.log(2 * math.pi)).sum(1)


def test_invglow_glow_weights_map_exactly_onto_ours(tmp_path: Path) -> None:
    written = original.original_glow(3, 8, 2, 8, random_tensors())
    _steps(written, 1)[1].sequential[2].coef_extractor.module[4].logscale_factor = 2.0  # ours is 3: folded
    model = load_invglow(save_original(written, tmp_path / "tiny_model.th"), SMALL)
    assert type(model) is Glow
    step, ours = _steps(written, 1)[1].sequential, model.scales[1][1].layers
    x = torch.randn(4, 24, 2, 2)
    assert torch.allclose(ours[0](x)[0], (x + step[0].loc) * torch.exp(step[0].log_scale))
    p = step[1]
    upper = p.w_u * p.u_mask + torch.diag(p.s_sign * torch.exp(p.w_s))
    assert torch.allclose(ours[1].matrix(), p.w_p @ (p.w_l * p.l_mask + p.l_eye) @ upper)
    net = step[2].coef_extractor.module
    assert torch.allclose(ours[2].net(x[:, :12]), _coupling_net_reference(net, x[:, :12]), atol=1e-6)
    for k, shape in enumerate(model.latent_shapes):
        z = torch.randn(4, *shape)
        u, lp = model.priors[k](z)
        expected_u, expected_lp = _prior_reference(_prior_actnorm(written, k), z)
        assert torch.allclose(u.flatten(1), expected_u) and torch.allclose(lp, expected_lp)
    images = torch.rand(4, 3, 8, 8) - 0.5
    latents, per_scale = model(images)  # ActNorms marked initialised: a forward keeps the loaded values
    assert torch.equal(model.scales[0][0].layers[0].bias, _steps(written, 0)[0].sequential[0].loc)
    assert torch.isfinite(per_scale).all() and torch.allclose(model.inverse(latents), images, atol=1e-4)


def test_invglow_legacy_format_additive_and_plain_permutation_load(tmp_path: Path) -> None:
    written = original.original_glow(3, 8, 2, 8, random_tensors(), coupling="additive", lu=False)
    config = replace(SMALL, glow=replace(SMALL.glow, coupling="additive", lu=False))
    model = load_invglow(save_original(written, tmp_path / "old.th", legacy=True), config)
    assert torch.equal(model.scales[0][0].layers[1].weight, _steps(written, 0)[0].sequential[1].weight)
    net = _steps(written, 2)[1].sequential[2].coef_extractor.module
    x = torch.randn(2, 24, 1, 1)
    assert torch.allclose(model.scales[2][1].layers[2].net(x), _coupling_net_reference(net, x), atol=1e-6)


def test_invglow_local_and_dense_models_load_into_ours(tmp_path: Path) -> None:
    local = load_invglow(
        save_original(original.original_patch_glow(3, 2, 8, random_tensors()), tmp_path / "l.th"), SMALL
    )
    assert type(local) is PatchGlow and torch.isfinite(local(torch.rand(2, 3, 8, 8) - 0.5)[1]).all()
    written = original.original_glow(3, 8, 2, 8, random_tensors(), dense=True)
    dense = load_invglow(save_original(written, tmp_path / "d.th"), SMALL)
    step, ours = _steps(written, 0)[1].sequential, dense.scales[0][1].layers
    assert torch.equal(ours[0].bias, step[0].loc.flatten(1)) and torch.equal(ours[1].weight, step[1].weight)
    assert torch.equal(ours[2].net.net[4].weight, step[2].coef_extractor.module[4].weight)


def test_invglow_supervised_model_maps_its_class_heads(tmp_path: Path) -> None:
    glow = original.original_glow(3, 8, 2, 8, random_tensors())
    sizes = [6 * 4 * 4, 12 * 2 * 2, 48]
    written = original.original_supervised(glow, sizes, 3, random_tensors(1))
    model = load_invglow(save_original(written, tmp_path / "supervised.th"), SMALL)
    assert type(model) is ClassConditionalGlow and model.n_classes == 3
    for c, class_node in enumerate(written.sequential[1].module.module_list):
        for k, dist_node in enumerate(class_node.prev[0].prev):
            actnorm, dist = dist_node.prev[0].module.sequential[1], dist_node.module.dist
            assert torch.equal(model.head_bias[k][c], actnorm.loc.flatten())
            assert torch.allclose(model.head_log_scale[k][c], torch.log(torch.exp(actnorm.log_scale.flatten()) + EPS))
            assert torch.equal(model.mean[k][c], dist.class_means[0])
            assert torch.equal(model.log_std[k][c], dist.class_log_stds[0])
    assert torch.equal(model.glow.scales[0][0].layers[0].bias, _steps(glow, 0)[0].sequential[0].loc)
    assert torch.isfinite(model.class_log_densities(torch.rand(2, 3, 8, 8) - 0.5)).all()


def test_invglow_paper_configuration_maps_44155008_parameters(tmp_path: Path) -> None:
    written = original.original_glow(3, 32, 32, 512, shared_zeros(512 * 512))
    assert sum(parameter.numel() for parameter in written.parameters()) == 44_155_008  # the original's count
    path = save_original(written, tmp_path / "paper.th")
    del written
    model = load_invglow(path, InvGlowConfig())  # every parameter of ours mapped, none of the file's left over
    assert sum(parameter.numel() for parameter in model.parameters()) == 44_155_008


def test_invglow_pickle_calling_os_system_is_refused_unexecuted(tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Hostile(control)))  # the payload works when unpickled without restriction
    assert control.exists()
    written = original.original_glow(3, 8, 1, 4, random_tensors())
    marker = tmp_path / "pwned"
    written.tags["payload"] = _Hostile(marker)
    path = save_original(written, tmp_path / "hostile.th")
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system") as raised:
        load_invglow(path, SMALL)
    _assert_one_line_error(raised, path)
    assert not marker.exists()


def test_invglow_missing_extra_and_mis_shaped_tensors_are_named_in_one_line(tmp_path: Path) -> None:
    written = original.original_glow(3, 8, 2, 8, random_tensors())
    del _steps(written, 0)[1].sequential[1]._parameters["w_s"]
    _steps(written, 2)[0].sequential[0].register_buffer("stray", torch.zeros(3))
    path = save_original(written, tmp_path / "broken.th")
    with pytest.raises(DataError) as raised:
        load_invglow(path, SMALL)
    _assert_one_line_error(raised, path, "missing tensor ", ".sequential.2.sequential.1.w_s", "extra tensor ", ".stray")
    wider = replace(SMALL, glow=replace(SMALL.glow, hidden=16))
    with pytest.raises(DataError) as raised:
        load_invglow(save_original(original.original_glow(3, 8, 2, 8, random_tensors()), path), wider)
    _assert_one_line_error(
        raised, path, "has shape (8, 6, 3, 3), our scales.0.0.layers.2.net.conv1.weight needs (16, 6, 3, 3)", "more"
    )


def test_invglow_constructs_ours_cannot_hold_are_refused_by_name(tmp_path: Path) -> None:
    written = original.original_glow(3, 8, 1, 4, random_tensors())
    _steps(written, 1)[0].sequential[2].modifier.sigmoid_or_exp_scale = "exp"
    path = save_original(written, tmp_path / "exp.th")
    with pytest.raises(DataError) as raised:
        load_invglow(path, SMALL)
    _assert_one_line_error(raised, path, "scale 1, flow step 0", "sigmoid_or_exp_scale='exp'")


# --- MCHAD -------------------------------------------------------------------------------------------------

MCHAD_DEMO = MCHAD_CONFIGS["demo"]
DIGITS = MCHAD_DEMO.datasets[0]
MCHAD_METHODS = {method.name: method for method in MCHAD_DEMO.methods[DIGITS.name]}


def _load_mchad(path: Path, method: str) -> nn.Module:
    return load_mchad(path, MCHAD_DEMO.train, DIGITS, MCHAD_METHODS[method])


def test_mchad_lightning_checkpoint_maps_backbone_and_centers(tmp_path: Path) -> None:
    backbone = pytorch_ood_wrn(16)
    centers = torch.randn(6, 16)
    state = {f"model.{k}": v for k, v in backbone.items()}
    state |= {"soft_margin_loss._centers._params": centers, "regu_loss.margin": torch.tensor([4.0])}
    model = _load_mchad(lightning_checkpoint(state, tmp_path / "last.ckpt"), "G-MCHAD").eval()
    ours = model.state_dict()
    assert all(torch.equal(ours[f"backbone.{key}"], value) for key, value in backbone.items())
    assert torch.equal(model.centers.centers, centers)
    output = model(torch.randn(3, 1, 8, 8))
    assert torch.allclose(output.distances, torch.cdist(output.embedding, centers).pow(2), atol=1e-4)


def test_mchad_other_methods_and_pytorch_ood_state_dicts_load(tmp_path: Path) -> None:
    anchors = 2 * torch.eye(6)
    cac = {f"model.{k}": v for k, v in pytorch_ood_wrn(6).items()} | {"cac_loss.centers._params": anchors}
    assert torch.equal(_load_mchad(lightning_checkpoint(cac, tmp_path / "cac.ckpt"), "CAC").centers.centers, anchors)
    ii = {f"model.{k}": v for k, v in pytorch_ood_wrn(16).items()} | batch_norm("bn", 16, random_tensors(3))
    ii |= {"ii_loss.running_centers.running_centers": torch.randn(6, 16)}
    ii |= {"ii_loss.running_centers.num_batches_tracked": torch.tensor([26.0])}
    model = _load_mchad(lightning_checkpoint(ii, tmp_path / "ii.ckpt"), "II")
    assert model.centers.batches_seen.item() == 26 and torch.equal(model.embedding_norm.bias, ii["bn.bias"])
    center = {f"model.{k}": v for k, v in pytorch_ood_wrn(16).items()} | {
        "center_loss._centers._params": torch.zeros(6, 16)
    }
    center |= {"classifier.weight": torch.randn(6, 16), "classifier.bias": torch.randn(6)}
    model = _load_mchad(lightning_checkpoint(center, tmp_path / "center.ckpt"), "Center")
    assert torch.equal(model.classifier.weight, center["classifier.weight"])
    wrn = pytorch_ood_wrn(6)  # a pytorch-ood WideResNet saved as a plain state dict (from DataParallel)
    torch.save({f"module.{k}": v for k, v in wrn.items()}, tmp_path / "wrn.pt")
    assert torch.equal(_load_mchad(tmp_path / "wrn.pt", "Softmax").backbone.fc.bias, wrn["fc.bias"])
    loss = {"center_loss._centers._params": torch.randn(6, 16), "regu_loss.margin": torch.tensor([4.0])}
    torch.save(pytorch_ood_wrn(16) | loss, tmp_path / "model_and_loss.pt")  # WideResNet + MCHADLoss state dicts
    assert torch.equal(
        _load_mchad(tmp_path / "model_and_loss.pt", "MCHAD").centers.centers, loss["center_loss._centers._params"]
    )


def test_mchad_checkpoint_calling_os_system_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = lightning_checkpoint({}, tmp_path / "hostile.ckpt", loops=_Hostile(marker))
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system") as raised:
        _load_mchad(path, "MCHAD")
    _assert_one_line_error(raised, path)
    assert not marker.exists()


def test_mchad_missing_extra_and_mis_shaped_tensors_are_named_in_one_line(tmp_path: Path) -> None:
    state = {f"model.{k}": v for k, v in pytorch_ood_wrn(8).items()} | {"model.stray.weight": torch.zeros(1)}
    path = lightning_checkpoint(state, tmp_path / "broken.ckpt")
    with pytest.raises(DataError) as raised:
        _load_mchad(path, "MCHAD")
    _assert_one_line_error(
        raised,
        path,
        "missing tensor soft_margin_loss._centers._params",
        "extra tensor model.stray.weight",
        "tensor model.fc.weight has shape (8, 64), our backbone.fc.weight needs (16, 64); and 1 more",
    )


# --- MemAE -------------------------------------------------------------------------------------------------

MEMAE_DIGITS = MEMAE_CONFIGS["demo"].image_table[0]  # "digits" networks, N = 100, λ = 0.01


def _official_forward(
    encoder: nn.Module, memory: torch.Tensor, decoder: nn.Module, x: torch.Tensor, shrink: float
) -> torch.Tensor:
    """The official ``MemModule`` between encoder and decoder: dot-product softmax addressing per position, hard
    shrinkage ``relu(w − λ) · w / (|w − λ| + 1e-12)``, L1 re-normalisation."""
    features = encoder(x)
    b, c, h, w = features.shape
    queries = features.permute(0, 2, 3, 1).reshape(-1, c)
    weights = F.softmax(queries @ memory.T, dim=1)
    weights = F.normalize(F.relu(weights - shrink) * weights / ((weights - shrink).abs() + 1e-12), p=1, dim=1)
    return decoder((weights @ memory).view(b, h, w, c).permute(0, 3, 1, 2))


def test_memae_official_state_dict_gives_the_official_reconstruction(tmp_path: Path) -> None:
    encoder, decoder = official_layers("digits")
    memory = torch.randn(100, 64)
    state = official_state_dict(encoder, decoder, memory)
    torch.save(state, tmp_path / "MemAE_epoch_0020_final.pt")
    model = load_memae(tmp_path / "MemAE_epoch_0020_final.pt", MEMAE_DIGITS).eval()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        expected = _official_forward(encoder.eval(), memory, decoder.eval(), x, MEMAE_DIGITS.memory.shrink_threshold)
        assert torch.allclose(model(x)[0], expected, atol=1e-5)
    torch.save(official_state_dict(encoder, decoder), tmp_path / "AE.pt")
    assert load_memae(tmp_path / "AE.pt", MEMAE_DIGITS).bottleneck is None


def test_memae_state_dict_calling_os_system_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"encoder.0.weight": torch.zeros(1), "x": _Hostile(marker)}, tmp_path / "hostile.pt")
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system") as raised:
        load_memae(tmp_path / "hostile.pt", MEMAE_DIGITS)
    _assert_one_line_error(raised, tmp_path / "hostile.pt")
    assert not marker.exists()


def test_memae_missing_extra_and_video_shaped_tensors_are_named_in_one_line(tmp_path: Path) -> None:
    encoder, decoder = official_layers("digits")
    state = official_state_dict(encoder, decoder, torch.zeros(100, 64)) | {"stray": torch.zeros(1)}
    del state["decoder.6.bias"]
    state["encoder.0.weight"] = torch.zeros(16, 1, 3, 3, 3)  # the released video models are 3-D
    torch.save(state, tmp_path / "video.pt")
    with pytest.raises(DataError) as raised:
        load_memae(tmp_path / "video.pt", MEMAE_DIGITS)
    _assert_one_line_error(
        raised,
        tmp_path / "video.pt",
        "missing tensor decoder.6.bias",
        "extra tensor stray",
        "tensor encoder.0.weight has shape (16, 1, 3, 3, 3), our encoder.0.weight needs (16, 1, 3, 3)",
    )
