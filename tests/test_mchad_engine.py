"""MCHAD engines, metrics, pretrained weights, data checks, the experiment end to end and its exact resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import CosineAnnealingScheduler

from common.errors import DataError, MissingDataError
from common.handlers import count_skipped_steps, latest_checkpoint
from common.loaders import TensorBatchLoader
from common.metrics import ood_metrics
from common.papers import RunOptions
from common.run import torch_threads
from mchad import experiments
from mchad.config import DEMO_DATASETS, DEMO_METHODS, DEMO_TRAIN, SETTINGS, Setting
from mchad.data import ChainedBatches, LimitedLoader, check_ood_labels, fit_images
from mchad.engine import IDAccuracy, PerSetOODMetrics, build_model, build_objective, create_trainer
from mchad.models import WideResNet
from mchad.pretrained import PRETRAINED_FILE, PRETRAINED_URL, load_pretrained

DIGITS = DEMO_DATASETS[0]
METHODS = {method.name: method for method in DEMO_METHODS[DIGITS.name]}
TINY_TRAIN = dataclasses.replace(DEMO_TRAIN, noise_count=40, outlier_count=200, eval_batch_size=256)
TINY_DIGITS = dataclasses.replace(DIGITS, epochs=1, max_batches=5)


# Pretrained weights


def test_missing_pretrained_file_names_place_name_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_REPRO_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingDataError) as error:
        load_pretrained(WideResNet(16, depth=10, widen_factor=1))
    message = str(error.value)
    assert str(tmp_path / PRETRAINED_FILE) in message and PRETRAINED_URL in message


def test_pretrained_backbone_is_loaded_and_the_head_kept(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = WideResNet(1000, depth=10, widen_factor=2)
    path = tmp_path / PRETRAINED_FILE
    torch.save({f"module.{key}": value for key, value in source.state_dict().items()}, path)  # DataParallel names
    model = WideResNet(16, depth=10, widen_factor=2)
    head = model.fc.weight.clone()
    load_pretrained(model, path)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.block3.layer[0].convShortcut.weight, source.block3.layer[0].convShortcut.weight)
    assert torch.equal(model.bn1.running_var, source.bn1.running_var)
    assert torch.equal(model.fc.weight, head)


def test_pretrained_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / PRETRAINED_FILE
    torch.save(WideResNet(10, depth=16, widen_factor=2).state_dict(), path)
    with pytest.raises(DataError, match="does not fit WRN-10-2"):
        load_pretrained(WideResNet(10, depth=10, widen_factor=2), path)
    torch.save(WideResNet(10, depth=10, widen_factor=3).state_dict(), path)  # same names, other shapes
    with pytest.raises(DataError, match="tensors do not fit"):
        load_pretrained(WideResNet(10, depth=10, widen_factor=2), path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="weights_only"):
        load_pretrained(WideResNet(10, depth=10, widen_factor=2), path)


# Metrics


def run_metric(metric: object, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> object:
    engine = Engine(lambda _, batch: batch)
    metric.attach(engine, "m")  # type: ignore[attr-defined]
    engine.run(batches)
    return engine.state.metrics["m"]


def test_per_set_metrics_equal_ood_metrics_of_each_test_case() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.randint(0, 3, (60,), generator=generator), torch.full((30,), -1), torch.full((20,), -2)])
    scores = torch.randn(len(labels), generator=generator) + (labels < 0) * 1.0
    order = torch.randperm(len(labels), generator=generator)  # mixed batches
    batches = [(scores[order][i : i + 16], labels[order][i : i + 16]) for i in range(0, len(labels), 16)]
    result = run_metric(PerSetOODMetrics(["a", "b"]), batches)
    for k, name in enumerate(["a", "b"]):
        rows = (labels >= 0) | (labels == -(k + 1))
        expected = ood_metrics(scores[rows], labels[rows] < 0)
        assert result[name] == pytest.approx(expected, rel=1e-12)  # type: ignore[index]


def test_id_accuracy_ignores_ood_rows() -> None:
    batches = [(torch.tensor([0, 1, 2]), torch.tensor([0, 1, -1])), (torch.tensor([1, 1]), torch.tensor([0, -2]))]
    assert run_metric(IDAccuracy(), batches) == pytest.approx(2 / 3)


# Data


def test_ood_sets_must_not_carry_class_labels() -> None:
    check_ood_labels(torch.tensor([-1, -1]), "ok")
    with pytest.raises(ValueError, match="cifar10: OOD / outlier images must have negative labels"):
        check_ood_labels(torch.tensor([-1, 3]), "cifar10")


def test_fit_images_resizes_and_repeats_grey() -> None:
    fitted = fit_images(torch.zeros(2, 1, 16, 16, dtype=torch.uint8), 8, 3, "x")
    assert fitted.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="expected 1-channel images, got 3"):
        fit_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 8, 1, "x")


def test_limited_loader_caps_and_skips() -> None:
    loader = TensorBatchLoader(torch.arange(20).view(20, 1), torch.arange(20), 2, shuffle=True, seed=3)
    limited = LimitedLoader(loader, 4)
    limited.set_epoch(1)
    first = [labels.tolist() for _, labels in limited]
    assert len(limited) == len(first) == 4
    limited.set_epoch(1)
    limited.skip_batches(3)
    assert [labels.tolist() for _, labels in limited] == first[3:]
    assert len(ChainedBatches([loader, loader])) == 20


# Engine


def test_trainer_step_reports_every_term_and_ii_resets_its_centers() -> None:
    method = METHODS["II"]
    model = build_model(method, DIGITS, TINY_TRAIN)
    optimizer = torch.optim.Adam(model.parameters())
    trainer = create_trainer(model, build_objective(method, DIGITS.n_classes), optimizer, method)
    count_skipped_steps(trainer)
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(12, 1, 8, 8, generator=generator), torch.arange(12) % 6)
    seen = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: seen.append(model.centers.batches_seen.item()))
    with torch_threads(1):
        trainer.run([batch, batch], max_epochs=2)
    assert set(trainer.state.output) == {"loss", "intra_spread", "inter_separation", "accuracy"}
    assert seen == [0, 0]  # reset at every epoch start, after 2 batches of the first epoch
    assert model.centers.batches_seen.item() == 2


# Experiment end to end


@pytest.fixture
def tiny_setting(monkeypatch: pytest.MonkeyPatch) -> Setting:
    setting = Setting(
        TINY_TRAIN, (TINY_DIGITS,), {TINY_DIGITS.name: DEMO_METHODS[DIGITS.name]}, SETTINGS["demo"].paper_analogue
    )
    monkeypatch.setitem(experiments.SETTINGS, "demo", setting)
    return setting


def test_demo_table_runs_every_method_end_to_end(tmp_path: Path, tiny_setting: Setting) -> None:
    rows = experiments.run_main_table(RunOptions(seeds=(0,), progress=False), tmp_path)
    main = [row for row in rows if row.table.startswith("Table")]
    names = {row.row for row in main}
    assert names == {f"{DIGITS.name} {name}" for name in METHODS if name != "Softmax"} | {
        f"{DIGITS.name} Softmax (msp)",
        f"{DIGITS.name} Softmax (energy)",
    }
    assert all(row.ours is not None and np.isfinite(row.ours) for row in rows)
    mchad_auroc = next(row for row in main if row.row.endswith(" MCHAD") and row.column == "AUROC")
    assert mchad_auroc.paper_value == 99.22  # the SVHN row stands beside the digits demo
    per_set = [row for row in rows if not row.table.startswith("Table")]
    assert {row.column for row in per_set} == {name for name, _ in DIGITS.ood_sets}
    folder = tmp_path / "digits-0-5" / "g-mchad" / "seed-0"
    assert (folder / "result.json").is_file() and list(folder.glob("events.out.tfevents.*"))


def test_resumed_training_ends_with_the_results_of_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    method = METHODS["G-MCHAD"]  # paired ID + outlier batches
    train = dataclasses.replace(TINY_TRAIN, checkpoint_every_iterations=3)
    dataset = dataclasses.replace(DIGITS, epochs=2, max_batches=8)  # also exercises LimitedLoader's resume
    options = RunOptions(seeds=(0,), progress=False, resume=tmp_path / "resumed")
    reference = experiments.train_and_evaluate(method, dataset, train, 0, tmp_path / "uninterrupted", options)

    original = experiments.create_trainer

    def crashing_trainer(*args: object, **kwargs: object) -> Engine:
        trainer = original(*args, **kwargs)

        @trainer.on(Events.ITERATION_STARTED(once=14))  # 8 batches per epoch: the checkpoint of 12 is mid-epoch
        def crash(_: Engine) -> None:
            raise RuntimeError("simulated crash")

        return trainer

    monkeypatch.setattr(experiments, "create_trainer", crashing_trainer)
    with pytest.raises(RuntimeError, match="simulated crash"):
        experiments.train_and_evaluate(method, dataset, train, 0, tmp_path / "resumed", options)
    monkeypatch.setattr(experiments, "create_trainer", original)
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint_12.pt"
    assert not (tmp_path / "resumed" / "result.json").exists()
    resumed = experiments.train_and_evaluate(method, dataset, train, 0, tmp_path / "resumed", options)
    assert resumed == reference
    assert json.loads((tmp_path / "resumed" / "result.json").read_text()) == reference
    # A run that finished training but not its result file is evaluated again, not retrained.
    (tmp_path / "uninterrupted" / "result.json").unlink()
    again = experiments.train_and_evaluate(method, dataset, train, 0, tmp_path / "uninterrupted", options)
    assert again == reference


def test_cosine_schedule_equals_the_originals_per_batch_warm_restarts() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    ours_optimizer, torch_optimizer = torch.optim.Adam([parameter], lr=1e-3), torch.optim.Adam([parameter], lr=1e-3)
    scheduler = CosineAnnealingScheduler(ours_optimizer, "lr", start_value=1e-3, end_value=0.0, cycle_size=10)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(torch_optimizer, T_0=10)
    engine = Engine(lambda *_: None)
    engine.add_event_handler(Events.ITERATION_STARTED, scheduler)
    ours: list[float] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: ours.append(ours_optimizer.param_groups[0]["lr"]))
    engine.run([0] * 12, max_epochs=1)
    expected = []
    for _ in range(12):  # PL steps the torch scheduler after each optimizer step
        expected.append(torch_optimizer.param_groups[0]["lr"])
        reference.step()
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_paper_scale_without_data_names_the_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    with pytest.raises(MissingDataError, match="svhn"):
        experiments.run_main_table(RunOptions(scale="paper", seeds=(1,), progress=False), tmp_path)


@pytest.mark.slow
def test_full_demo_scale_table(tmp_path: Path) -> None:
    rows = experiments.run_main_table(RunOptions(progress=False), tmp_path)
    accuracy = {row.row: row.ours for row in rows if row.column == "Accuracy"}
    assert accuracy[f"{DIGITS.name} MCHAD"] > 85 and accuracy[f"{DIGITS.name} CAC"] > 85


def test_paper_aupr_names_follow_the_old_pytorch_ood_convention() -> None:
    # The paper's "AUPR-IN" has the OOD samples as positives (mchad.md §3.2): for uninformative scores it sits at
    # the OOD prevalence (as II's 27.95 on SVHN), and "AUPR-OUT" at the ID prevalence.
    generator = torch.Generator().manual_seed(0)
    is_ood = torch.arange(1100) >= 1000
    metrics = {"accuracy": 0.5, "distance": {"set": ood_metrics(torch.rand(1100, generator=generator), is_ood)}}
    cells = experiments.final_result(metrics, METHODS["MCHAD"])["scores"]["distance"]["set"]
    assert cells["AUPR-IN"] == pytest.approx(100 * 100 / 1100, abs=4)
    assert cells["AUPR-OUT"] == pytest.approx(100 * 1000 / 1100, abs=4)
    assert experiments.final_result(metrics, METHODS["MCHAD"])["accuracy"] == 50.0
