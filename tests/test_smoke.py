"""Smoke runs: trainings stop after 2 steps and are still evaluated; evaluations keep 2 batches of every set."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

import main
from common import smoke
from common.handlers import setup_handlers
from common.loaders import TensorBatchLoader, evaluation_loaders
from invglow.data import eval_sets


def _training(tmp_path, epochs: int = 3) -> tuple[Engine, list[int], TensorBatchLoader]:
    loader = TensorBatchLoader(torch.zeros(40, 1), torch.zeros(40, dtype=torch.int64), 4, shuffle=True)
    trainer = Engine(lambda engine, batch: 0.0)
    evaluated: list[int] = []
    evaluator = Engine(lambda engine, batch: None)
    evaluator.add_event_handler(Events.COMPLETED, lambda _: evaluated.append(trainer.state.iteration))
    setup_handlers(trainer, {"test": (evaluator, [0])}, tmp_path, {}, seed=0, progress=False)
    return trainer, evaluated, loader


@pytest.mark.parametrize("enabled", [True, False])
def test_a_smoke_training_stops_after_two_steps_and_is_evaluated(tmp_path, enabled):
    with smoke.smoke_limits(enabled):
        trainer, evaluated, loader = _training(tmp_path)
        trainer.run(loader, max_epochs=3)
    steps = smoke.TRAINING_STEPS if enabled else 3 * len(loader)
    assert trainer.state.iteration == steps
    assert evaluated[-1] == steps  # the final weights are evaluated


def test_the_limits_hold_only_inside_the_context():
    assert not smoke.active()
    with smoke.smoke_limits(True):
        assert smoke.active()
        with smoke.smoke_limits(False):
            assert not smoke.active()
        assert smoke.active()
    assert not smoke.active()


def test_a_smoke_initialisation_reads_as_many_batches_as_the_training_steps():
    assert smoke.training_batches(11) == 11
    with smoke.smoke_limits(True):
        assert smoke.training_batches(11) == smoke.TRAINING_STEPS
        assert smoke.training_batches(1) == 1


def test_an_evaluation_subset_is_two_batches_spread_over_the_set():
    assert smoke.evaluation_subset(100, 4) == slice(None)
    with smoke.smoke_limits(True):
        assert smoke.evaluation_subset(8, 4) == slice(None)
        subset = smoke.evaluation_subset(100, 4)
        assert len(subset) == 8 and subset[0] == 0 and subset[-1] == 99
        assert torch.all(subset.diff() >= 14)  # evenly spread: 99 / 7 = 14.1 apart
        assert torch.equal(smoke.evaluation_subset(100, 512), subset)  # batches of the capped size


def test_a_smoke_batch_holds_at_most_four_images_and_a_share_for_every_process():
    assert smoke.capped_batch_size(512) == 512
    with smoke.smoke_limits(True):
        assert [smoke.capped_batch_size(size) for size in (1, 3, 4, 64, 512)] == [1, 3, 4, 4, 4]
        assert [smoke.capped_batch_size(64, world) for world in (2, 3, 16)] == [4, 3, 16]
        subset = smoke.evaluation_subset(1000, 512)  # two batches of the capped size
        assert len(subset) == 2 * smoke.BATCH_IMAGES


def test_a_smoke_loader_delivers_capped_batches_and_its_ranks_split_them():
    images, labels = torch.arange(100.0).reshape(100, 1), torch.zeros(100)
    with smoke.smoke_limits(True):
        loader = TensorBatchLoader(images, labels, 64, shuffle=True, drop_last=True)
        ranks = [TensorBatchLoader(images, labels, 64, drop_last=True, rank=r, world_size=2) for r in (0, 1)]
    assert len(loader) == 100 // smoke.BATCH_IMAGES
    assert {len(batch) for batch, _ in loader} == {smoke.BATCH_IMAGES}
    first = torch.cat([next(iter(rank))[0] for rank in ranks])
    assert first.flatten().tolist() == list(range(smoke.BATCH_IMAGES))


def test_smoke_evaluation_loaders_keep_two_batches_of_every_set():
    sets = [(torch.arange(50.0).reshape(50, 1), torch.zeros(50)), (torch.arange(30.0).reshape(30, 1), -torch.ones(30))]
    with smoke.smoke_limits(True):
        loaders = evaluation_loaders(sets, batch_size=3)
    batches = [batch for loader in loaders for batch in loader]
    labels = torch.cat([labels for _, labels in batches])
    assert len(batches) == 4 and (labels == 0).sum() == 6 and (labels == -1).sum() == 6
    assert [loader.images[-1].item() for loader in loaders] == [49.0, 29.0]


def test_a_smoke_run_of_a_real_paper_trains_two_steps_per_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path))
    cell = "mchad/main_table/digits-0-5/softmax/seed-0"
    assert main.main(["mchad", "--smoke", "--run-name", "s", "--cells", cell, "--no-progress"]) == 0
    result = json.loads((tmp_path / "mchad/main_table/s/digits-0-5/softmax/seed-0/result.json").read_text())
    assert result["values"]["steps"] == smoke.TRAINING_STEPS
    assert 0 <= result["values"]["accuracy"] <= 100


def test_invglow_evaluation_sets_keep_two_batches_of_each_set_with_their_ids():
    images = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1, 1)
    with smoke.smoke_limits(True):
        evaluation = eval_sets("a", images[:30], {"b": images[30:], "a": images[:1]}, batch_size=4)
    assert evaluation.names == ("a", "b")
    assert evaluation.set_ids.tolist() == [0] * 8 + [1] * 8
    assert evaluation.images[:8].flatten().tolist() == [0, 4, 8, 12, 17, 21, 25, 29]  # spread over set a
    assert evaluation.images[8:].flatten().min() >= 30
