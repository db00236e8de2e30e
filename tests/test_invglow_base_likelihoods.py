"""The Tiny model's log-densities computed once: saved per set, found only for the same images, reused by the
evaluator without running the Tiny model, and computed once per evaluator however often it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from invglow import base_likelihoods
from invglow.data import eval_sets
from invglow.engine import LIKELIHOODS, create_evaluator, eval_loader
from invglow.models import Glow, initialize_actnorms


def _model(seed: int) -> Glow:
    torch.manual_seed(seed)
    model = Glow((3, 8, 8), n_scales=2, steps=1, hidden=8)
    initialize_actnorms(model, torch.rand(32, 3, 8, 8) - 0.5)
    return model


def _images(count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


class CountingGlow(Glow):
    """A Glow that counts its forward passes and can be told to refuse them."""

    calls = 0
    refuse = False

    def forward(self, x: torch.Tensor):  # type: ignore[override]
        if self.refuse:
            raise AssertionError("the Tiny model ran although its log-densities were given")
        self.calls += 1
        return super().forward(x)


def _counting_base() -> CountingGlow:
    torch.manual_seed(1)
    base = CountingGlow((3, 8, 8), n_scales=2, steps=1, hidden=8)
    initialize_actnorms(base, torch.rand(32, 3, 8, 8) - 0.5)
    base.calls = 0
    return base


def test_saved_log_densities_come_back_in_the_order_of_another_evaluation(tmp_path: Path) -> None:
    a, b, c = _images(12, 0), _images(10, 1), _images(9, 2)
    pretraining = eval_sets("tiny", _images(5, 3), {"a": a, "b": b, "c": c}, batch_size=64)
    log_densities = torch.randn(len(pretraining.set_ids), 3, dtype=torch.float64)
    base_likelihoods.save(tmp_path, pretraining, log_densities)

    finetuning = eval_sets("b", b, {"c": c, "a": a}, batch_size=64)  # another set first, "tiny" left out
    found = base_likelihoods.load(tmp_path, finetuning)
    by_set = {name: log_densities[pretraining.set_ids == k] for k, name in enumerate(pretraining.names)}
    expected = torch.cat([by_set[name] for name in finetuning.names])
    assert found is not None and torch.equal(found, expected)


@pytest.mark.parametrize("change", ["other images", "a set it lacks", "no file"])
def test_log_densities_of_other_images_are_not_used(tmp_path: Path, change: str) -> None:
    a, b = _images(12, 0), _images(10, 1)
    if change != "no file":
        base_likelihoods.save(tmp_path, eval_sets("a", a, {"b": b}, batch_size=64), torch.randn(22, 3))
    if change == "other images":
        b = b.clone()
        b[3, 0, 0, 0] ^= 1  # one bit of one pixel
    others = {"b": b, "d": _images(4, 5)} if change == "a set it lacks" else {"b": b}
    assert base_likelihoods.load(tmp_path, eval_sets("a", a, others, batch_size=64)) is None


def test_evaluator_computes_the_tiny_log_densities_once_or_takes_them_given() -> None:
    model, base = _model(0), _counting_base()
    evaluation = eval_sets("in", _images(16, 0), {"out": _images(8, 1)}, batch_size=8)
    loader = eval_loader(evaluation, 8, torch.device("cpu"))  # 3 batches
    evaluator = create_evaluator(model, evaluation, base)
    evaluator.run(loader)
    first = {name: value for name, value in evaluator.state.metrics.items() if name != LIKELIHOODS}
    computed = evaluator.state.metrics[LIKELIHOODS]["base"]
    assert base.calls == 3
    evaluator.run(loader)  # the next epoch's evaluation: the Tiny model is fixed, its densities are reused
    assert base.calls == 3 and torch.equal(evaluator.state.metrics[LIKELIHOODS]["base"], computed)
    assert {name: evaluator.state.metrics[name] for name in first} == first

    base.refuse = True
    given = create_evaluator(model, evaluation, base, base_likelihoods=computed)
    given.run(loader)
    assert torch.equal(given.state.metrics[LIKELIHOODS]["base"], computed)
    assert {name: given.state.metrics[name] for name in first} == first
