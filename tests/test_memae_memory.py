"""MemAE's memory module, losses, scores and models against hand computations, numpy and autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from memae.losses import addressing_entropy, memae_loss
from memae.memory import (
    ConditionalMemory,
    MemoryModule,
    check_shrink_threshold,
    cosine_weight_bounds,
    hard_shrink,
)
from memae.models import ARCHITECTURES, Autoencoder, build_model
from memae.scores import anomaly_scores, reconstruction_error


def numpy_read(z: np.ndarray, memory: np.ndarray, threshold: float, similarity: str) -> tuple[np.ndarray, np.ndarray]:
    """Independent float64 read-out of flat queries (P, C): ideal hard shrinkage (w if w > λ else 0), L1 norm."""
    if similarity == "cosine":
        d = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (memory / np.linalg.norm(memory, axis=1, keepdims=True)).T
    else:
        d = z @ memory.T
    w = np.exp(d - d.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    if threshold > 0:
        w = np.where(w > threshold, w, 0.0)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return w @ memory, w


def test_hard_shrink_and_renormalisation_on_hand_computed_weights():
    weights = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    shrunk = hard_shrink(weights, 0.1)
    # max(w − λ, 0) · w / (|w − λ| + ε): w for w > λ (up to ε), exactly 0 at or below λ.
    torch.testing.assert_close(shrunk, torch.tensor([[0.5, 0.3, 0.15, 0.0]], dtype=torch.float64))
    assert shrunk[0, 3] == 0.0
    assert hard_shrink(torch.tensor([0.1], dtype=torch.float64), 0.1).item() == 0.0  # at λ: 0
    memory = MemoryModule(4, 3, shrink_threshold=0.1, similarity="dot").double()
    similarity = torch.log(weights)  # softmax(log w) = w since Σ w = 1
    expected = torch.tensor([[0.5, 0.3, 0.15, 0.0]], dtype=torch.float64) / 0.95
    torch.testing.assert_close(memory.address(similarity), expected)


def test_no_shrinkage_leaves_the_softmax_and_all_zero_weights_stay_zero():
    similarity = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    plain = MemoryModule(3, 2, shrink_threshold=0.0, similarity="dot").double()
    torch.testing.assert_close(plain.address(similarity), similarity.softmax(dim=1))
    flat = torch.zeros(1, 3, dtype=torch.float64)  # uniform 1/3 each, all below λ = 0.5
    zeroed = MemoryModule(3, 2, shrink_threshold=0.5, similarity="dot").double().address(flat)
    assert torch.equal(zeroed, torch.zeros_like(zeroed))


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("threshold", [0.0, 0.02])
def test_read_out_matches_numpy(similarity, threshold):
    torch.manual_seed(0)
    module = MemoryModule(30, 5, shrink_threshold=threshold, similarity=similarity).double()
    with torch.no_grad():
        module.memory.mul_(3.0)  # peakier dot-product weights, so the threshold cuts some slots
    z = torch.randn(7, 5, dtype=torch.float64)
    out = module(z)
    readout, weights = numpy_read(z.numpy(), module.memory.detach().numpy(), threshold, similarity)
    np.testing.assert_allclose(out.latent.detach().numpy(), readout, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out.attention.detach().numpy(), weights, rtol=1e-9, atol=1e-9)
    if threshold > 0:
        assert (weights == 0).any() and (weights > 0).any()


def test_every_position_of_a_feature_map_is_its_own_query():
    torch.manual_seed(1)
    module = MemoryModule(12, 4, shrink_threshold=0.05, similarity="dot").double()
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    out = module(z)
    assert out.latent.shape == z.shape
    assert out.attention.shape == out.similarity.shape == (2, 12, 3, 5)
    for b, h, w in [(0, 0, 0), (1, 2, 4), (0, 1, 3)]:
        single = module(z[b, :, h, w][None])
        torch.testing.assert_close(out.latent[b, :, h, w], single.latent[0])
        torch.testing.assert_close(out.attention[b, :, h, w], single.attention[0])


def test_spatio_temporal_latents_are_addressed_per_position():
    torch.manual_seed(4)
    module = MemoryModule(9, 3, shrink_threshold=0.05, similarity="dot").double()
    z = torch.randn(2, 3, 2, 3, 4, dtype=torch.float64)  # (B, C, T, H, W), the video model's layout
    out = module(z)
    flat = module(z.movedim(1, -1).reshape(-1, 3))
    torch.testing.assert_close(out.latent.movedim(1, -1).reshape(-1, 3), flat.latent)
    torch.testing.assert_close(out.attention.movedim(1, -1).reshape(-1, 9), flat.attention)


def test_memory_gradients_match_finite_differences():
    torch.manual_seed(2)
    module = MemoryModule(6, 3, shrink_threshold=0.1, similarity="cosine").double()
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    # Away from w = λ the shrinkage is smooth, so autograd must agree with central differences.
    assert torch.autograd.gradcheck(lambda q, m: module.address(module.scores(q)) @ m, (z, module.memory))
    module(z).latent.sum().backward()
    assert module.memory.grad is not None and module.memory.grad.abs().sum() > 0


def test_entropy_loss_on_hand_computed_cases_and_scipy():
    half = torch.tensor([[0.5, 0.5], [1.0, 0.0]])[:, :, None, None]  # 2 queries, N = 2 slots
    assert addressing_entropy(half).item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(7), size=(3, 2, 2))  # (B, H, W, N)
    attention = torch.from_numpy(weights).permute(0, 3, 1, 2)
    expected = scipy_entropy(weights.reshape(-1, 7), axis=1).mean()
    assert addressing_entropy(attention).item() == pytest.approx(expected, rel=1e-9)


def test_memae_loss_is_mse_plus_weighted_entropy():
    x, x_hat = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2) * 0.5
    attention = torch.full((2, 4, 1, 1), 0.25)
    terms = memae_loss(x, x_hat, attention, entropy_weight=0.1)
    assert terms.reconstruction.item() == pytest.approx(0.25)
    assert terms.entropy.item() == pytest.approx(math.log(4))
    assert terms.total.item() == pytest.approx(0.25 + 0.1 * math.log(4))
    assert memae_loss(x, x_hat, None, 2e-4).total.item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="entropy_weight"):
        memae_loss(x, x_hat, attention, -1.0)


def test_conditional_memory_gradients_reach_the_selected_memory_only():
    torch.manual_seed(3)
    bank = ConditionalMemory(3, 8, 4, shrink_threshold=0.0, similarity="dot")
    out = bank(torch.randn(5, 4, 2, 2), torch.tensor([1, 1, 1, 1, 1]))
    assert torch.equal(out.selection, torch.ones(5, dtype=torch.int64))
    out.latent.pow(2).sum().backward()
    grads = [memory.memory.grad for memory in bank.memories]
    assert grads[1].abs().sum() > 0
    assert all(g is None or torch.equal(g, torch.zeros_like(g)) for g in (grads[0], grads[2]))


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_self_selection_picks_the_memory_most_similar_to_the_query(similarity):
    bank = ConditionalMemory(3, 4, 3, shrink_threshold=0.0, similarity=similarity)
    with torch.no_grad():
        for index, memory in enumerate(bank.memories):
            memory.memory.copy_(torch.eye(3)[index].expand(4, 3) + 0.01 * torch.randn(4, 3))
    z = torch.tensor([[0.0, 2.0, 0.1], [3.0, 0.0, 0.2], [0.1, 0.0, 1.0]])[:, :, None, None]
    out = bank(z)
    assert out.selection.tolist() == [1, 0, 2]
    assert out.selection_logits.shape == (3, 3)
    known = bank(z, torch.tensor([2, 2, 2]))
    torch.testing.assert_close(known.latent, bank.memories[2](z).latent)


def test_summed_and_best_slot_self_selection_differ_on_a_constructed_case():
    bank = ConditionalMemory(2, 3, 2, shrink_threshold=0.0, similarity="cosine")
    with torch.no_grad():
        # Memory 0: one slot equal to the query, two opposite to it; memory 1: three slots at 60 degrees.
        bank.memories[0].memory.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]]))
        bank.memories[1].memory.copy_(torch.tensor([[0.5, 3**0.5 / 2]] * 3))
    z = torch.tensor([[1.0, 0.0]])
    assert bank(z, selection="sum").selection.tolist() == [1]  # Σ cos: −1 for memory 0, 1.5 for memory 1
    assert bank(z, selection="max").selection.tolist() == [0]  # best slot: cos 1 beats cos 0.5
    torch.testing.assert_close(bank(z, selection="max").selection_logits, torch.tensor([[1.0, 0.5]]))
    with pytest.raises(ValueError, match="selection must be one of"):
        bank(z, selection="min")


def test_conditional_memory_rejects_bad_conditions():
    bank = ConditionalMemory(2, 4, 3, similarity="dot")
    with pytest.raises(ValueError, match=r"memory index in \[0, 2\)"):
        bank(torch.randn(2, 3), torch.tensor([0, 2]))


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("variant", ["ae", "memae", "cmemae", "cae"])
def test_every_variant_reconstructs_its_input_shape(architecture, variant):
    spec = ARCHITECTURES[architecture]
    if variant == "cae" and spec.latent_shape[1:] != (1, 1):
        with pytest.raises(ValueError, match="flat architecture"):
            build_model(architecture, variant, num_conditions=2)
        return
    model = build_model(architecture, variant, num_slots=16, shrink_threshold=0.05, num_conditions=2)
    x = torch.randn(3, *spec.input_shape)
    assert model.encoder(x).shape == (3, *spec.latent_shape)
    condition = torch.tensor([0, 1, 0]) if model.conditional else None
    reconstruction, out = model(x, condition)
    assert reconstruction.shape == x.shape
    if variant in ("memae", "cmemae"):
        assert out.attention.shape == (3, 16, *spec.latent_shape[1:])
        torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(3, *spec.latent_shape[1:]))


def test_bad_arguments_get_clear_messages():
    with pytest.raises(ValueError, match=r"expected \(B, 64, \.\.\.\) with 64 channels"):
        MemoryModule(10, 64, shrink_threshold=0.1)(torch.randn(2, 32, 2, 2))
    with pytest.raises(ValueError, match=r"shrink_threshold must be in \[0, 1\)"):
        MemoryModule(10, 4, shrink_threshold=-0.1)
    with pytest.raises(ValueError, match=r"shrink_threshold must be in \[0, 1\)"):
        MemoryModule(10, 4, shrink_threshold=1.0, similarity="dot")
    with pytest.raises(ValueError, match="every addressing weight would be zero"):
        MemoryModule(500, 4, shrink_threshold=0.02, similarity="cosine")
    with pytest.raises(ValueError, match="similarity"):
        MemoryModule(10, 4, similarity="euclidean")
    with pytest.raises(ValueError, match="no self-selection"):
        build_model("mnist-flat", "cae", num_conditions=2)(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="not conditional"):
        build_model("mnist", "memae")(torch.randn(2, 1, 28, 28), torch.tensor([0, 0]))


def test_cosine_bounds_and_the_inert_threshold_warning():
    smallest, largest = cosine_weight_bounds(10)
    assert smallest == pytest.approx(0.0148, abs=1e-4) and largest == pytest.approx(0.451, abs=1e-3)  # note §1.2
    # The largest weight: one slot at cos +1, nine at −1; the smallest: one slot at −1, nine at +1.
    largest_case = torch.tensor([[1.0] + [-1.0] * 9], dtype=torch.float64).softmax(dim=1)
    smallest_case = torch.tensor([[-1.0] + [1.0] * 9], dtype=torch.float64).softmax(dim=1)
    assert largest_case[0, 0].item() == pytest.approx(largest) and smallest_case[0, 0].item() == pytest.approx(smallest)
    with pytest.warns(UserWarning, match="never zeroes anything"):
        check_shrink_threshold(0.0025, 10, "cosine")  # C-MemAE's default on MNIST (N = 10)


def test_score_is_the_per_image_mse_and_higher_means_worse_reconstruction():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.stack([torch.zeros(1, 2, 2), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])])
    assert reconstruction_error(x, x_hat).tolist() == [0.0, 0.5]

    class Halve(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z / 2

    model = Autoencoder(torch.nn.Identity(), Halve())
    images = torch.tensor([[[[0.0]]], [[[2.0]]]])
    scores, reconstruction, _ = anomaly_scores(model, images)
    # x̂ = x/2: the far image reconstructs worse and must score higher (no sign flip anywhere).
    assert scores.tolist() == [0.0, 1.0]
    assert torch.equal(reconstruction, images / 2)
