"""End-to-end: both memae experiments at a tiny size, exact resume, and (slow) the full demo scale."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from common.datasets import load
from common.handlers import latest_checkpoint
from common.loaders import TensorBatchLoader
from common.papers import RunOptions, get_paper
from memae import experiments, paper
from memae.config import (
    SCALES,
    ConditionalSetting,
    DataConfig,
    FewShotConfig,
    ImageSetting,
    MemoryConfig,
    ScaleConfig,
    TrainConfig,
)
from memae.data import normalisation, one_class_test_set, training_set
from memae.engine import Evaluation, create_evaluator, fit
from memae.few_shot import STRATEGIES
from memae.models import build_model
from tests.helpers.write_cifar import write_cifar10
from tests.helpers.write_idx import write_idx_dataset

DIGITS = DataConfig("MNIST", "digits", "digits", (("size", 16),), classes=(0, 1))
TINY_TRAIN = TrainConfig(epochs=2, batch_size=64, learning_rate=1e-3, eval_every=1, checkpoint_every=1, log_every=1)
TINY = ScaleConfig(
    image_table=(ImageSetting(DIGITS, MemoryConfig(10, 0.1), TINY_TRAIN),),
    conditional=(
        ConditionalSetting(
            DataConfig("MNIST", "digits", "digits-flat", (("size", 16),)),
            groups=((0, 1),),
            memory=MemoryConfig(4, 0.3),
            train=TINY_TRAIN,
            few_shot=FewShotConfig(0, (0, 1), (2,), (3,), TrainConfig(epochs=1, batch_size=8)),
        ),
    ),
    cpu_threads=1,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def tiny_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(experiments.SCALES, "demo", TINY)


def test_epochs_override_keeps_evaluation_and_checkpoint_periods_inside_the_run(tmp_path):
    ctx = experiments._context(RunOptions(epochs=3, progress=False), tmp_path)
    train = ctx.train_config(TrainConfig(epochs=100, eval_every=5, checkpoint_every=10))
    assert (train.epochs, train.eval_every, train.checkpoint_every) == (3, 3, 3)
    assert experiments._context(RunOptions(progress=False), tmp_path).train_config(train) == train
    with pytest.raises(ValueError, match="--nproc-per-node is not supported"):
        experiments._context(RunOptions(nproc_per_node=2), tmp_path)


def test_experiments_are_registered():
    memae = get_paper("memae")
    assert [e.name for e in memae.experiments] == ["image_table", "conditional"]


def test_image_table_smoke_and_resume_of_a_finished_run(tiny_scale, tmp_path):
    options = RunOptions(progress=False)
    rows = experiments.image_table(options, tmp_path)
    main = {row.row: row for row in rows if row.table == paper.IMAGE_TABLE}
    assert list(main) == ["AE", "MemAE-nonSpar", "MemAE"]
    assert main["MemAE"].paper_value == pytest.approx(97.51) and main["AE"].paper_value == pytest.approx(96.19)
    assert all(0.0 <= row.ours <= 100.0 for row in rows)
    per_class = [row for row in rows if row.table == "Image table: AUROC (%) per class"]
    assert len(per_class) == 3 * 2
    # The class mean of the per-class rows is the table's value.
    for label, row in main.items():
        assert row.ours == pytest.approx(np.mean([r.ours for r in per_class if r.row == label]))
    run = tmp_path / "MNIST" / "MemAE" / "seed0" / "class1"
    batches = -(-int((load("digits", "train", size=16).labels == 1).sum()) // TINY_TRAIN.batch_size)
    assert latest_checkpoint(run).name == f"checkpoint_{TINY_TRAIN.epochs * batches}.pt"  # the last epoch's
    events = b"".join(path.read_bytes() for path in run.glob("events.out.tfevents.*"))
    for tag in (
        "train/loss",
        "train/entropy",
        "test/AUROC",
        "test/input",
        "test/reconstruction",
        "test/addressing_weights",
        "test/slots_used",
        "test/memory_0_slots",
    ):
        assert tag.encode() in events, tag
    # Resuming a finished run restores the last checkpoint and evaluates it again: the same numbers.
    resumed = experiments.image_table(RunOptions(progress=False, resume=tmp_path), tmp_path)
    assert [row.ours for row in resumed] == pytest.approx([row.ours for row in rows], abs=1e-9)


def test_conditional_smoke(tiny_scale, tmp_path):
    rows = experiments.conditional(RunOptions(progress=False), tmp_path)
    names = {(row.table, row.row, row.column) for row in rows}
    for criterion in ("summed similarity", "best slot"):
        assert (
            experiments.CONDITIONAL_TABLE,
            f"C-MemAE self-selection accuracy ({criterion})",
            "MNIST accuracy",
        ) in names
        assert (experiments.CONDITIONAL_TABLE, f"C-MemAE, self-selection ({criterion})", "MNIST AUROC") in names
    few_shot = [row for row in rows if row.table == experiments.FEW_SHOT_TABLE]
    assert {row.row for row in few_shot} == {strategy.label for strategy in STRATEGIES.values()}
    assert all(row.paper_value is None and 0.0 <= row.ours <= 100.0 for row in rows)
    assert (tmp_path / "MNIST" / "cmemae" / "seed0" / "group0-1" / "checkpoints").is_dir()


def test_paper_scale_runs_on_mnist_and_cifar_files_in_their_original_formats(monkeypatch, tmp_path):
    """The paper's networks, memories and data readers, shrunk to two classes and one epoch."""
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    write_idx_dataset(tmp_path / "data" / "mnist", n_train=60, n_test=200)
    write_cifar10(tmp_path / "data" / "cifar10", n_train=60, n_test=200)
    one_epoch = TrainConfig(epochs=1, batch_size=16)
    settings = tuple(
        replace(setting, data=replace(setting.data, classes=(0, 1)), train=one_epoch)
        for setting in SCALES["paper"].image_table
    )
    monkeypatch.setitem(experiments.SCALES, "paper", replace(SCALES["paper"], image_table=settings, seeds=(0,)))
    rows = experiments.image_table(RunOptions(scale="paper", progress=False), tmp_path / "run")
    main = {(row.row, row.column): row for row in rows if row.table == paper.IMAGE_TABLE}
    assert set(main) == {(row, column) for row in ("AE", "MemAE-nonSpar", "MemAE") for column in ("MNIST", "CIFAR-10")}
    assert main[("MemAE", "CIFAR-10")].paper_value == pytest.approx(60.88)
    assert all(row.scale == "paper" and 0.0 <= row.ours <= 100.0 for row in rows)


def _train(run_dir: Path, epochs: int, resume: bool) -> dict[str, torch.Tensor]:
    train_data = training_set(load("digits", "train", size=16), [3])
    test = one_class_test_set(load("digits", "test", size=16), 3, np.random.default_rng(0))
    torch.manual_seed(0)
    model = build_model("digits", "memae", num_slots=10, shrink_threshold=0.1)
    loader = TensorBatchLoader(
        train_data.images, train_data.labels, 32, shuffle=True, transform=normalisation(1), seed=5
    )
    test_loader = TensorBatchLoader(test.images, test.labels, 100, transform=normalisation(1))
    train = TrainConfig(epochs=epochs, batch_size=32, learning_rate=1e-3, eval_every=1, checkpoint_every=1)
    evaluation = Evaluation("test", create_evaluator(model, 3), test_loader)
    fit(model, loader, [evaluation], train, 2e-4, run_dir, seed=5, resume=resume, progress=False)
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    uninterrupted = _train(tmp_path / "whole", 2, resume=False)
    _train(tmp_path / "parts", 1, resume=False)  # stops after epoch 1, checkpoint written
    resumed = _train(tmp_path / "parts", 2, resume=True)  # a fresh model continues from that checkpoint
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.slow
def test_demo_scale_runs_both_tables_in_three_minutes(tmp_path):
    start = time.perf_counter()
    rows = experiments.image_table(RunOptions(progress=False), tmp_path / "image")
    rows += experiments.conditional(RunOptions(progress=False), tmp_path / "conditional")
    assert time.perf_counter() - start < 180
    main = {row.row: row.ours for row in rows if row.table == paper.IMAGE_TABLE}
    assert set(main) == {"AE", "MemAE-nonSpar", "MemAE"} and all(value > 90 for value in main.values())
    assert SCALES["demo"].cpu_threads == 1
