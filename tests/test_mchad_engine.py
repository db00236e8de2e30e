"""MCHAD engines, metrics, pretrained weights, data checks, and ``fit``: its exact resume and its tensorboard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import CosineAnnealingScheduler

from common.errors import DataError, MissingDataError
from common.handlers import count_skipped_steps, latest_checkpoint
from common.loaders import TensorBatchLoader
from common.metrics import ood_metrics
from common.run import torch_threads
from mchad import engine
from mchad.config import DEMO_DATASETS, DEMO_METHODS, DEMO_TRAIN
from mchad.data import ChainedBatches, LimitedLoader, check_ood_labels, fit_images
from mchad.engine import (
    CenterDistance,
    IDAccuracy,
    PerSetOODMetrics,
    build_model,
    build_objective,
    create_trainer,
    fit,
)
from mchad.models import WideResNet
from mchad.pretrained import PRETRAINED_FILE, PRETRAINED_URL, load_pretrained
from tests.helpers.tensorboard import summaries

DIGITS = DEMO_DATASETS[0]
METHODS = {method.name: method for method in DEMO_METHODS[DIGITS.name]}
TINY_TRAIN = dataclasses.replace(DEMO_TRAIN, noise_count=40, outlier_count=200, eval_batch_size=256)
CPU = torch.device("cpu")


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


def test_center_distance_is_the_mean_id_distance_to_the_own_center() -> None:
    generator = torch.Generator().manual_seed(1)
    embeddings, centers = torch.randn(40, 5, generator=generator), torch.randn(3, 5, generator=generator)
    labels = torch.cat([torch.randint(0, 3, (30,), generator=generator), torch.full((10,), -1)])
    squared = torch.cdist(embeddings, centers).pow(2)
    batches = [(squared[i : i + 8], labels[i : i + 8]) for i in range(0, 40, 8)]  # the last batch is OOD only
    expected = torch.stack([(embeddings[i] - centers[labels[i]]).norm() for i in range(30)]).mean()
    assert run_metric(CenterDistance(), batches) == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="no in-distribution sample"):
        run_metric(CenterDistance(), batches[-1:])


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


# fit


def crashing_trainer(monkeypatch: pytest.MonkeyPatch, iteration: int) -> None:
    """Make ``fit``'s trainer raise when it starts ``iteration``."""
    original = engine.create_trainer

    def create(*args: object, **kwargs: object) -> Engine:
        trainer = original(*args, **kwargs)

        @trainer.on(Events.ITERATION_STARTED(once=iteration))
        def crash(_: Engine) -> None:
            raise RuntimeError("simulated crash")

        return trainer

    monkeypatch.setattr(engine, "create_trainer", create)


def test_resumed_fit_ends_with_the_results_of_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    method = METHODS["G-MCHAD"]  # paired ID + outlier batches
    train = dataclasses.replace(TINY_TRAIN, checkpoint_every_iterations=3)
    dataset = dataclasses.replace(DIGITS, epochs=2, max_batches=8)  # also exercises LimitedLoader's resume
    with torch_threads(1):
        reference = fit(method, dataset, train, 0, tmp_path / "uninterrupted", device=CPU, progress=False)
        with monkeypatch.context() as patch:
            crashing_trainer(patch, 14)  # 8 batches per epoch: the checkpoint of 12 is mid-epoch
            with pytest.raises(RuntimeError, match="simulated crash"):
                fit(method, dataset, train, 0, tmp_path / "resumed", device=CPU, progress=False)
        assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint_12.pt"
        resumed = fit(method, dataset, train, 0, tmp_path / "resumed", device=CPU, progress=False)
        assert resumed == reference
        assert set(reference) == {"accuracy", "center_distance", "distance", "steps", "skipped_steps"}  # no tensors
        # A finished training is tested again, not retrained: a step would crash.
        crashing_trainer(monkeypatch, 1)
        again = fit(method, dataset, train, 0, tmp_path / "uninterrupted", device=CPU, progress=False)
    assert again == reference


def test_fit_logs_scalars_and_the_collected_test_outputs_to_tensorboard(tmp_path: Path) -> None:
    dataset = dataclasses.replace(DIGITS, epochs=2, max_batches=3)
    train = dataclasses.replace(TINY_TRAIN, eval_every=1)
    with torch_threads(1):
        fit(METHODS["MCHAD"], dataset, train, 0, tmp_path, device=CPU, progress=False)
    logged = summaries(tmp_path)
    assert set(logged["test/accuracy"]) == {1, 2}  # every evaluation
    assert set(logged["test/distance/Uniform/AUROC"]) == {1, 2}
    assert set(logged["test/center_distance"]) == {1, 2}
    assert not [tag for tag in logged if "outputs" in tag or "embedding" in tag]  # no per-image scalars
    for name in ("ID test", *(name for name, _ in DIGITS.ood_sets)):  # extras of the final evaluation only
        assert set(logged[f"scores/distance/{name.replace(' ', '_')}"]) == {2}
        assert name == "ID test" or set(logged[f"pr/distance/{name}"]) == {2}
    metadata = next((tmp_path / "00002").rglob("metadata.tsv")).read_text().splitlines()
    assert "Uniform" in metadata and [tag for tag in metadata if tag.startswith("center")] == [
        f"center {j}" for j in range(6)
    ]


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


@pytest.mark.slow
def test_demo_mchad_contracts_its_embeddings_onto_their_centers(tmp_path: Path) -> None:
    # The demo's lr and epochs are chosen for this (README): the ID test embeddings end far closer to their own
    # center than the untrained network puts them (at the paper's lr 1e-3 and 12 epochs they kept about 85 %).
    method = METHODS["MCHAD"]
    untrained_dataset = dataclasses.replace(DIGITS, epochs=0)
    with torch_threads(1):
        untrained = fit(method, untrained_dataset, DEMO_TRAIN, 0, tmp_path / "untrained", device=CPU, progress=False)
        trained = fit(method, DIGITS, DEMO_TRAIN, 0, tmp_path / "trained", device=CPU, progress=False)
    assert untrained["steps"] == 0 < trained["steps"]
    assert trained["center_distance"] < 0.4 * untrained["center_distance"]
