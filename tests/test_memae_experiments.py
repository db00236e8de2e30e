"""The memae experiments as cells: ids, one cell with its prerequisites, shards, exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboardX.proto.event_pb2 import Event

import main
from common.cells import Settings
from common.datasets import load
from common.handlers import checkpoints_newest_first, latest_checkpoint
from common.loaders import TensorBatchLoader
from memae import config, experiments, paper
from memae.config import (
    CONFIGS,
    ConditionalSetting,
    DataConfig,
    FewShotConfig,
    ImageSetting,
    MemAEConfig,
    MemoryConfig,
    TrainConfig,
    configure,
)
from memae.data import normalisation, one_class_test_set, training_set
from memae.engine import Evaluation, create_evaluator, fit
from memae.few_shot import STRATEGIES
from memae.models import build_model
from tests.helpers.write_cifar import write_cifar10
from tests.helpers.write_idx import write_idx_dataset

REPOSITORY = Path(__file__).resolve().parents[1]
DIGITS = DataConfig("MNIST", "digits", "digits", (("size", 16),), classes=(0, 1))
TINY_TRAIN = TrainConfig(epochs=2, batch_size=64, learning_rate=1e-3, eval_every=1, checkpoint_every=1, log_every=1)
TINY = MemAEConfig(
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
CONDITIONAL = "memae/conditional/MNIST"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def tiny_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo scale shrunk to two classes, one group, one few-shot class and k, two epochs."""
    monkeypatch.setitem(config.CONFIGS, "demo", TINY)


def _options(output: Path, run_name: str, **more: object) -> main.RunOptions:
    return main.RunOptions(output=output, run_name=run_name, progress=False, device="cpu", **more)


def _finished(run: Path) -> set[str]:
    """The cells of a run folder that wrote their result, as paths relative to it."""
    return {path.parent.relative_to(run).as_posix() for path in run.rglob("result.json")}


def rows_of(run: Path) -> list[dict]:
    return json.loads((run / "results.json").read_text())["rows"]


def test_demo_cells_are_unique_stable_and_need_only_listed_cells():
    listing = main.listed_cells("memae")
    assert listing == main.listed_cells("memae")
    cells = {cell.id: cell for _, states in listing for cell, _ in states}
    assert len(cells) == sum(len(states) for _, states in listing) == 30 + 68  # 3 variants × 10 classes; 10 + 2·5 +
    # 6 strategies · 2 k · 4 classes
    needs = {need for cell in cells.values() for need in cell.needs}
    assert needs and needs <= set(cells)
    assert "memae/image_table/MNIST/MemAE-nonSpar/class-7/seed-0" in cells
    few_shot = cells[f"{CONDITIONAL}/few-shot/conditional_copy_best_fitting/k-10/class-9/seed-0"]
    assert few_shot.needs == (f"{CONDITIONAL}/cmemae/group-0-1/seed-0",)


def test_configure_applies_seeds_and_epochs_to_every_training():
    resolved = configure(Settings(seeds=(3, 4), epochs=3))
    trainings = [s.train for s in resolved.image_table] + [
        t for s in resolved.conditional for t in (s.train, s.few_shot.train)
    ]
    assert resolved.seeds == (3, 4)
    assert {(t.epochs, t.eval_every, t.checkpoint_every) for t in trainings} == {(3, 3, 3)}
    assert configure(Settings()) == CONFIGS["demo"] and configure(Settings(scale="paper")).seeds == (0, 1, 2)


def test_one_cell_runs_with_exactly_its_unfinished_prerequisites(tiny_demo, tmp_path):
    transfer = f"{CONDITIONAL}/few-shot/transfer/k-3/class-2/seed-0"
    main.run_paper("memae", ["conditional"], _options(tmp_path, "r", cells=(transfer,)))
    run = tmp_path / "memae" / "conditional" / "r"
    assert _finished(run) == {"MNIST/MemAE/class-0/seed-0", "MNIST/few-shot/transfer/k-3/class-2/seed-0"}
    assert (run / "MNIST/MemAE/class-0/seed-0/model.pt").is_file()
    single = json.loads((run / "MNIST/MemAE/class-0/seed-0/result.json").read_text())
    best_fitting = f"{CONDITIONAL}/few-shot/conditional_copy_best_fitting/k-3/class-2/seed-0"
    main.run_paper("memae", ["conditional"], _options(tmp_path, "r", cells=(best_fitting,)))
    assert _finished(run) == {
        "MNIST/MemAE/class-0/seed-0",
        "MNIST/few-shot/transfer/k-3/class-2/seed-0",
        "MNIST/cmemae/group-0-1/seed-0",
        "MNIST/few-shot/conditional_copy_best_fitting/k-3/class-2/seed-0",
    }
    assert json.loads((run / "MNIST/MemAE/class-0/seed-0/result.json").read_text()) == single  # not run again
    group = json.loads((run / "MNIST/cmemae/group-0-1/seed-0/result.json").read_text())["values"]
    assert set(group) == {f"{mode}_{c}" for mode in ("known", "self_sum", "self_max") for c in (0, 1)} | {"training"}
    assert group["training"]["skipped_steps"] == 0 and group["training"]["steps"] > 0  # the skip count is recorded
    assert 0.0 <= group["self_max_1"]["selection_accuracy"] <= 1.0 and "selection_accuracy" not in group["known_0"]
    events = b"".join(path.read_bytes() for path in (run / "MNIST/MemAE/class-0/seed-0").glob("events.out.tfevents.*"))
    for tag in (
        "train/loss",
        "train/entropy",
        "test/AUROC",
        "test/reconstruction",
        "test/slots_used",
        "test/memory_0_slots",
    ):
        assert tag.encode() in events, tag


def test_two_shards_and_report_give_the_table_of_an_unsharded_run(tiny_demo, tmp_path):
    experiment_names = ["image_table", "conditional"]
    main.run_paper("memae", experiment_names, _options(tmp_path / "whole", "whole"))
    sharded = tmp_path / "sharded"
    main.run_paper("memae", experiment_names, _options(sharded, "r", shard="1/2"))
    runs = {name: sharded / "memae" / name / "r" for name in experiment_names}
    assert all(not (run / "results.json").exists() for run in runs.values())  # half of the cells are missing
    main.run_paper("memae", experiment_names, _options(sharded, "r", shard="2/2"))
    for run in runs.values():
        (run / "results.json").unlink()
    main.report(sharded)
    for name, run in runs.items():
        rows = json.loads((run / "results.json").read_text())["rows"]
        whole = json.loads((tmp_path / "whole" / "memae" / name / "whole" / "results.json").read_text())["rows"]
        assert rows == whole, name
    image = [row for row in rows_of(runs["image_table"]) if row["table"] == paper.IMAGE_TABLE]
    assert [(row["row"], row["paper_value"]) for row in image] == [
        ("AE", pytest.approx(96.19)),
        ("MemAE-nonSpar", pytest.approx(97.25)),
        ("MemAE", pytest.approx(97.51)),
    ]
    per_class = [row for row in rows_of(runs["image_table"]) if row["table"] == experiments.PER_CLASS_TABLE]
    for row in image:  # the table's value is the class mean of the per-class rows
        assert row["ours"] == pytest.approx(np.mean([r["ours"] for r in per_class if r["row"] == row["row"]]))
    conditional = rows_of(runs["conditional"])
    assert {row["row"] for row in conditional if row["table"] == experiments.FEW_SHOT_TABLE} == {
        strategy.label for strategy in STRATEGIES.values()
    }
    assert all(row["spread_kind"] == "std (ddof 1) over seeds" and row["n"] == 1 for row in image + conditional)
    assert all(0.0 <= row["ours"] <= 100.0 for row in image + per_class + conditional)


def _scalar_steps(events_file: Path, tag: str) -> list[int]:
    """The steps at which ``tag`` was logged in a tensorboard events file (TFRecord: length, crc, event, crc)."""
    data, offset, steps = events_file.read_bytes(), 0, []
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        event = Event.FromString(data[offset + 12 : offset + 12 + length])
        steps += [event.step for value in event.summary.value if value.tag == tag]
        offset += 12 + length + 4
    return steps


def test_a_cell_killed_after_its_first_checkpoint_resumes_to_the_values_of_an_uninterrupted_run(tmp_path):
    cell_id = "memae/image_table/MNIST/MemAE/class-7/seed-0"
    command = [sys.executable, "main.py", "memae", "image_table", "--run-name", "r", "--cells", cell_id]
    command += ["--output", str(tmp_path / "killed"), "--epochs", "10", "--no-progress", "--device", "cpu"]
    cell = tmp_path / "killed" / "memae" / "image_table" / "r" / "MNIST" / "MemAE" / "class-7" / "seed-0"
    process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while latest_checkpoint(cell) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    assert not (cell / "result.json").exists(), "the cell finished before it was killed: raise --epochs"
    newest = int(checkpoints_newest_first(cell)[0].stem.split("_")[1])
    assert newest < 50  # 10 epochs of 5 batches
    before = set(cell.glob("events.out.tfevents.*"))
    subprocess.run(command, cwd=REPOSITORY, check=True, capture_output=True)
    (resumed_events,) = set(cell.glob("events.out.tfevents.*")) - before
    assert _scalar_steps(resumed_events, "train/loss")[0] == newest + 1  # continued, not restarted
    main.run_paper("memae", ["image_table"], _options(tmp_path / "whole", "whole", cells=(cell_id,), epochs=10))
    whole = tmp_path / "whole" / "memae" / "image_table" / "whole" / "MNIST" / "MemAE" / "class-7" / "seed-0"
    resumed = json.loads((cell / "result.json").read_text())["values"]
    assert resumed == json.loads((whole / "result.json").read_text())["values"]
    assert set(resumed) >= {"AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR"}


def _train(folder: Path, epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
    train_data = training_set(load("digits", "train", size=16), [3])
    test = one_class_test_set(load("digits", "test", size=16), 3, np.random.default_rng(0))
    torch.manual_seed(0)
    model = build_model("digits", "memae", num_slots=10, shrink_threshold=0.1)
    loader = TensorBatchLoader(
        train_data.images, train_data.labels, 32, shuffle=True, transform=normalisation(1), seed=5
    )
    test_loader = TensorBatchLoader(test.images, test.labels, 100, transform=normalisation(1))
    # checkpoint_every > epochs: only the checkpoint fit writes at the end of a training
    train = TrainConfig(epochs=epochs, batch_size=32, learning_rate=1e-3, eval_every=1, checkpoint_every=3)
    evaluation = Evaluation("test", create_evaluator(model, 3), test_loader)
    metrics = fit(model, loader, [evaluation], train, 2e-4, folder, seed=5, progress=False)
    return {key: value.clone() for key, value in model.state_dict().items()}, metrics


def test_fit_resumes_from_its_folder_and_does_not_rerun_a_finished_training(tmp_path):
    uninterrupted, metrics = _train(tmp_path / "whole", 2)
    _train(tmp_path / "parts", 1)  # stops after epoch 1, checkpoint written
    resumed, _ = _train(tmp_path / "parts", 2)  # a fresh model continues from that checkpoint
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
    checkpoint = latest_checkpoint(tmp_path / "whole")
    written = checkpoint.stat().st_mtime_ns
    again, metrics_again = _train(tmp_path / "whole", 2)  # finished: restored and evaluated, not trained
    assert latest_checkpoint(tmp_path / "whole") == checkpoint and checkpoint.stat().st_mtime_ns == written
    assert all(torch.equal(again[key], value) for key, value in uninterrupted.items())
    assert metrics_again == metrics and set(metrics["test"]) >= {"AUROC", "FPR95TPR"}


def test_paper_scale_runs_on_mnist_and_cifar_files_in_their_original_formats(monkeypatch, tmp_path):
    """The paper's networks, memories and data readers, shrunk to two classes and one epoch."""
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    write_idx_dataset(tmp_path / "data" / "mnist", n_train=60, n_test=200)
    write_cifar10(tmp_path / "data" / "cifar10", n_train=60, n_test=200)
    one_epoch = TrainConfig(epochs=1, batch_size=16)
    settings = tuple(
        replace(setting, data=replace(setting.data, classes=(0, 1)), train=one_epoch)
        for setting in CONFIGS["paper"].image_table
    )
    monkeypatch.setitem(config.CONFIGS, "paper", replace(CONFIGS["paper"], image_table=settings, seeds=(0,)))
    rows = main.run_paper("memae", ["image_table"], _options(tmp_path / "runs", "r", scale="paper"))
    table = {(row.row, row.column): row for row in rows if row.table == paper.IMAGE_TABLE}
    assert set(table) == {(row, column) for row in ("AE", "MemAE-nonSpar", "MemAE") for column in ("MNIST", "CIFAR-10")}
    assert table[("MemAE", "CIFAR-10")].paper_value == pytest.approx(60.88)
    assert all(row.scale == "paper" and 0.0 <= row.ours <= 100.0 for row in rows)
    assert (tmp_path / "runs/memae/image_table/r/CIFAR-10/MemAE-nonSpar/class-1/seed-0/result.json").is_file()


@pytest.mark.slow
def test_demo_scale_runs_both_tables(tmp_path):
    rows = main.run_paper("memae", [], _options(tmp_path, "demo"))
    table = {row.row: row.ours for row in rows if row.table == paper.IMAGE_TABLE}
    assert set(table) == {"AE", "MemAE-nonSpar", "MemAE"} and all(value > 90 for value in table.values())
    assert CONFIGS["demo"].cpu_threads == 1
