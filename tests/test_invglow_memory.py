"""InvGlow's memory option (``GlowConfig.memory_saving="checkpoint"``): activation checkpointing of the flow steps
gives the default path's gradients bit for bit, initialises ActNorms as before, reaches every model built from a
``--set`` configuration, and leaves the flow invertible."""

from __future__ import annotations

import copy

import pytest
import torch

from common import runner
from common.cells import Settings
from invglow import models
from invglow.config import grey_config
from invglow.experiments import PAPER
from invglow.models import CHECKPOINT_SEGMENT, MODEL_KINDS, Glow, PatchGlow, build_model, initialize_actnorms

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _glow(checkpoint_segment: int | None = None) -> Glow:
    """A small three-scale Glow, the same weights for every ``checkpoint_segment`` (seeded)."""
    torch.manual_seed(0)
    return Glow((3, 8, 8), n_scales=3, steps=3, hidden=16, checkpoint_segment=checkpoint_segment)


def _images() -> torch.Tensor:
    return torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)) - 0.5


def _counting_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the checkpointed segments the models run (one entry per call)."""
    calls: list[int] = []
    checkpoint = models.checkpoint

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(models, "checkpoint", counted)
    return calls


def _loss_and_gradients(model: Glow, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The mean NLL of ``images`` and every parameter's gradient of it."""
    model.zero_grad(set_to_none=True)
    loss = -model(images)[1].sum(1).mean()
    loss.backward()
    return loss.detach(), [parameter.grad for parameter in model.parameters()]


def _assert_identical(model: Glow, checkpointed: Glow, images: torch.Tensor) -> None:
    """The two models' losses and gradients on ``images`` are equal, bit for bit."""
    loss, gradients = _loss_and_gradients(model, images)
    checkpointed_loss, checkpointed_gradients = _loss_and_gradients(checkpointed, images)
    assert torch.equal(loss, checkpointed_loss)
    assert len(gradients) == len(checkpointed_gradients) > 0
    for gradient, checkpointed_gradient in zip(gradients, checkpointed_gradients, strict=True):
        assert torch.equal(gradient, checkpointed_gradient)


@pytest.mark.parametrize("segment", [1, 2])  # 2: the last segment of a scale's 3 steps is shorter
def test_checkpointing_gives_bitwise_identical_gradients(monkeypatch, segment):
    """Bitwise: the checkpointed forward is recomputed with the same kernels on the same inputs, and the backward
    runs through the graph of the first forward, in the same order, whatever the segments."""
    model = _glow()
    initialize_actnorms(model, _images())
    checkpointed = copy.deepcopy(model)
    checkpointed.checkpoint_segment = segment
    calls = _counting_checkpoints(monkeypatch)
    _assert_identical(model, checkpointed, _images())
    assert len(calls) == 3 * -(-3 // segment)  # every scale's steps, in segments


def test_actnorm_initialisation_runs_once_then_checkpointing_starts(monkeypatch):
    """An uninitialised model initialises its ActNorms in its first (not checkpointed) forward, as by default."""
    model, checkpointed = _glow(), _glow(CHECKPOINT_SEGMENT)
    calls = _counting_checkpoints(monkeypatch)
    _assert_identical(model, checkpointed, _images())  # the initialising pass
    assert not calls
    assert all(module.initialized for module in checkpointed.modules() if isinstance(module, models.ActNorm))
    torch.testing.assert_close(checkpointed.state_dict(), model.state_dict(), rtol=0, atol=0)
    _assert_identical(model, checkpointed, _images() * 0.5)
    assert calls


def test_round_trip_is_exact_with_checkpointing():
    """Forward with gradients recorded (the checkpointed path), then inverse: the images back, and the default
    path's latents bit for bit."""
    model = _glow().double()
    initialize_actnorms(model, _images().double())
    checkpointed = copy.deepcopy(model)
    checkpointed.checkpoint_segment = CHECKPOINT_SEGMENT
    images = _images().double()
    latents, lp = checkpointed(images)
    assert lp.requires_grad
    for ours, default in zip(latents, model(images)[0], strict=True):
        assert torch.equal(ours, default)
    with torch.no_grad():
        torch.testing.assert_close(checkpointed.inverse(latents), images, rtol=0, atol=1e-12)


def test_set_memory_saving_reaches_every_model_the_cells_build():
    paper, on = PAPER, ("glow.memory_saving=checkpoint",)
    for experiment in paper.experiments:
        config = runner.plan(paper, experiment, Settings("demo", overrides=on)).config
        assert config.glow.memory_saving == "checkpoint"
        for each in (config, grey_config(config)):
            for kind in MODEL_KINDS:
                model = build_model(each, kind)
                glow = model.glow if isinstance(model, PatchGlow) else model
                assert glow.checkpoint_segment == CHECKPOINT_SEGMENT, (experiment.name, kind)
        default = runner.plan(paper, experiment, Settings("demo")).config
        assert build_model(default).checkpoint_segment is None  # the faster path stays the default


def test_checkpoint_segment_must_be_positive():
    with pytest.raises(ValueError, match="checkpoint_segment"):
        Glow((3, 8, 8), n_scales=1, steps=1, hidden=4, checkpoint_segment=0)
