"""Seeding, run folders, recorded configs, devices, tensorboard and the non-finite guard."""

from __future__ import annotations

import dataclasses
import io
import platform
import random
import subprocess
from pathlib import Path

import cv2
import ignite
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Loss
from torch import nn
from torch.utils.data import DataLoader

import folder_locations
from common.handlers import (
    attach_progress,
    count_skipped_steps,
    finite_step,
    image_grid,
    log_histogram,
    log_images,
    log_pr_curve,
    output_scalars,
    scalar_metrics,
    setup_handlers,
    setup_tensorboard,
)
from common.metrics import CollectTensors
from common.run import (
    EpochSeededSampler,
    create_run_dir,
    plain,
    resolve_device,
    run_metadata,
    seed_epoch,
    seed_everything,
)
from tests.helpers.tensorboard import summaries


def draw_from_every_generator() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


# Seeding and data order


def test_seed_everything_repeats_every_generator() -> None:
    seed_everything(3)
    first = draw_from_every_generator()
    seed_everything(3)
    again = draw_from_every_generator()
    seed_everything(4)
    other = draw_from_every_generator()
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])
    assert first[0] != other[0] and first[1] != other[1] and not torch.equal(first[2], other[2])


def test_seed_everything_is_manual_seed_on_every_rank() -> None:
    seed_everything(5)
    ours = draw_from_every_generator()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    reference = draw_from_every_generator()
    assert ours[:2] == reference[:2] and torch.equal(ours[2], reference[2])


def test_seed_epoch_depends_only_on_seed_and_epoch() -> None:
    seed_epoch(9, 2)
    first = draw_from_every_generator()
    seed_everything(123)
    draw_from_every_generator()  # whatever ran before must not matter
    seed_epoch(9, 2)
    again = draw_from_every_generator()
    seed_epoch(9, 3)
    next_epoch = draw_from_every_generator()
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])
    assert not torch.equal(first[2], next_epoch[2])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_seeds_must_be_32_bit_non_negative_integers(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        seed_everything(seed)  # type: ignore[arg-type]


def test_epoch_seeded_sampler_permutes_by_seed_plus_epoch_and_skips_once() -> None:
    sampler = EpochSeededSampler(range(50), seed=7)
    sampler.set_epoch(3)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(7 + 3)).tolist()
    assert list(sampler) == expected
    sampler.skip_next(20)
    assert list(sampler) == expected[20:]
    assert list(sampler) == expected  # the skip applies to one iteration only
    assert len(sampler) == 50
    with pytest.raises(ValueError, match="n_samples"):
        sampler.skip_next(51)


# Run folder and recorded config


def test_create_run_dir_makes_a_new_timestamped_folder_per_run(tmp_path: Path) -> None:
    first = create_run_dir("mchad", "table1", output=tmp_path)
    second = create_run_dir("mchad", "table1", output=tmp_path)
    assert first.parent == second.parent == tmp_path / "mchad" / "table1"
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith(first.name[:8])  # YYYYmmdd


def test_create_run_dir_reuses_a_named_run_and_defaults_to_the_runs_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path / "runs"))
    run = create_run_dir("memae", "mnist", run_name="seed0")
    assert run == folder_locations.runs_root() / "memae" / "mnist" / "seed0" == tmp_path / "runs/memae/mnist/seed0"
    (run / "keep.txt").write_text("x")
    assert create_run_dir("memae", "mnist", run_name="seed0") == run
    assert (run / "keep.txt").exists()


@pytest.mark.parametrize(("argument", "value"), [("paper", ""), ("experiment", "a/b"), ("run_name", "..")])
def test_create_run_dir_rejects_names_that_are_not_one_folder(tmp_path: Path, argument: str, value: str) -> None:
    names = {"paper": "invglow", "experiment": "table2", "run_name": None, argument: value}
    with pytest.raises(ValueError, match=argument):
        create_run_dir(names["paper"], names["experiment"], output=tmp_path, run_name=names["run_name"])


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    lr: float = 1e-3
    layers: tuple[int, ...] = (16, 32)
    data: Path = Path("/data/cifar10")


def test_run_metadata_records_versions_and_commit() -> None:
    record = run_metadata()
    assert record["world_size"] == 1
    assert record["versions"]["torch"] == torch.__version__
    assert record["versions"]["ignite"] == ignite.__version__
    assert record["versions"]["numpy"] == np.__version__
    assert record["versions"]["python"] == platform.python_version()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=folder_locations.REPOSITORY, capture_output=True, text=True, check=True
    )
    assert record["git"]["commit"] == head.stdout.strip()


def test_plain_turns_dataclasses_also_inside_mappings_into_objects() -> None:
    assert plain({"epochs": 3, "model": ToyConfig(lr=0.5), "nested": {"inner": ToyConfig()}}) == {
        "epochs": 3,
        "model": {"lr": 0.5, "layers": (16, 32), "data": Path("/data/cifar10")},
        "nested": {"inner": {"lr": 1e-3, "layers": (16, 32), "data": Path("/data/cifar10")}},
    }  # dataclasses inside a mapping are objects, not their repr; JSON writes tuples and paths as lists and text


# Device


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    expected_auto = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == expected_auto
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")


# Non-finite guard


def guarded_setup(lr: float = 0.1) -> tuple[Engine, nn.Linear, torch.optim.SGD]:
    torch.manual_seed(0)
    engine = Engine(lambda engine, batch: None)
    count_skipped_steps(engine)
    model = nn.Linear(3, 2)
    return engine, model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def backward(model: nn.Linear, scale: float = 1.0) -> torch.Tensor:
    loss = model(torch.ones(4, 3)).pow(2).mean()
    (loss * scale).backward()
    return loss


def test_finite_step_steps_like_sgd_when_everything_is_finite() -> None:
    engine, model, optimizer = guarded_setup(lr=0.1)
    loss = backward(model)
    expected = {name: p.detach() - 0.1 * p.grad for name, p in model.named_parameters()}
    assert finite_step(engine, loss, optimizer)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.detach(), expected[name], rtol=0, atol=1e-7)
    assert engine.state.skipped_steps == 0


def test_finite_step_skips_a_nan_loss_and_an_infinite_gradient() -> None:
    engine, model, optimizer = guarded_setup()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    assert not finite_step(engine, backward(model) * torch.tensor(float("nan")), optimizer)
    assert all(p.grad is None for p in model.parameters())  # the gradients are dropped
    loss = backward(model)
    model.bias.grad[1] = float("inf")
    assert not finite_step(engine, loss, optimizer)

    assert engine.state.skipped_steps == 2
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert not optimizer.state  # no momentum buffer was created: the optimizer never stepped


def test_finite_step_needs_the_counter() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="count_skipped_steps"):
        finite_step(Engine(lambda e, b: None), backward(model), torch.optim.SGD(model.parameters(), lr=0.1))


# Progress and tensorboard


def test_output_scalars() -> None:
    assert output_scalars({"nll": torch.tensor(2.5), "kl": 1}) == {"nll": 2.5, "kl": 1.0}
    assert output_scalars(0.25) == output_scalars(torch.tensor([0.25])) == {"loss": 0.25}
    with pytest.raises(TypeError, match="tuple"):
        output_scalars((1.0, 2.0))


def test_progress_bar_writes_when_enabled_and_not_when_the_environment_disables_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown, hidden = io.StringIO(), io.StringIO()
    engine = Engine(lambda engine, batch: {"loss": 0.5})
    attach_progress(engine, output_transform=output_scalars, desc="fitting", disable=False, file=shown)
    engine.run(range(3), max_epochs=1)
    monkeypatch.setenv("OOD_REPRO_PROGRESS", "0")
    quiet = Engine(lambda engine, batch: 0.5)
    attach_progress(quiet, desc="fitting", file=hidden)
    quiet.run(range(3), max_epochs=1)
    assert "fitting" in shown.getvalue() and "loss=0.5" in shown.getvalue()
    assert hidden.getvalue() == ""


def test_tensorboard_logs_losses_learning_rates_evaluations_and_histograms(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(5)]
    losses: dict[int, float] = {}

    def train_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        finite_step(engine, loss, optimizer)
        losses[engine.state.iteration] = loss.item()
        return {"loss": loss.item(), "half": loss.item() / 2}

    trainer = Engine(train_step)
    count_skipped_steps(trainer)
    evaluator = Engine(lambda engine, batch: (model(batch[0]), batch[1]))
    Loss(nn.functional.mse_loss).attach(evaluator, "mse")
    CollectTensors(lambda output: {"predictions": output[0]}).attach(evaluator, "outputs")  # not numbers: not logged
    evaluated: dict[int, float] = {}
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run(batches[:2]))
    evaluator.add_event_handler(
        Events.COMPLETED, lambda engine: evaluated.update({trainer.state.epoch: engine.state.metrics["mse"]})
    )
    tb_logger = setup_tensorboard(tmp_path, trainer, optimizer, {"val": evaluator}, log_every=2, histogram_model=model)
    trainer.run(batches, max_epochs=2)
    tb_logger.close()

    logged = summaries(tmp_path)
    every_other = range(2, 11, 2)
    assert {step: v.simple_value for step, v in logged["train/loss"].items()} == pytest.approx(
        {step: losses[step] for step in every_other}, rel=1e-6
    )
    assert {step: v.simple_value for step, v in logged["train/half"].items()} == pytest.approx(
        {step: losses[step] / 2 for step in every_other}, rel=1e-6
    )
    assert {step: v.simple_value for step, v in logged["train/skipped_steps"].items()} == dict.fromkeys(
        every_other, 0.0
    )
    assert {step: v.simple_value for step, v in logged["lr/group_0"].items()} == pytest.approx(
        dict.fromkeys(every_other, 0.05)
    )
    assert {step: v.simple_value for step, v in logged["val/mse"].items()} == pytest.approx(evaluated, rel=1e-6)
    assert set(logged["weights/weight"]) == set(logged["weights/bias"]) == {1, 2}
    assert logged["weights/bias"][2].histo.max == pytest.approx(model.bias.item())
    assert not [tag for tag in logged if "predictions" in tag or "outputs" in tag]


def test_scalar_metrics_keeps_the_numbers_of_nested_metrics() -> None:
    metrics = {"AUROC": 0.9, "ood": {"AUROC": 0.9, "n": torch.tensor(3)}, "flag": True, "x": torch.zeros(4)}
    assert scalar_metrics(metrics, "test") == {"test/AUROC": 0.9, "test/ood/AUROC": 0.9, "test/ood/n": 3.0}


def test_tensorboard_writes_the_metrics_the_tables_print_in_percent_in_percent(tmp_path: Path) -> None:
    trainer = Engine(lambda engine, batch: {"loss": 0.5, "accuracy": 0.75})
    evaluator = Engine(lambda engine, batch: None)
    metrics = {"AUROC": 0.9, "mse": 0.25, "distance": {"Uniform": {"FPR95TPR": 0.125}}, "AUROC-raw": {"svhn": 91.0}}
    evaluator.add_event_handler(Events.COMPLETED, lambda engine: engine.state.metrics.update(metrics))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run([0]))
    tb_logger = setup_tensorboard(tmp_path, trainer, evaluators={"test": evaluator}, log_every=1)
    trainer.run([0], max_epochs=1)
    tb_logger.close()
    logged = {tag: steps[1].simple_value for tag, steps in summaries(tmp_path).items() if 1 in steps}
    assert logged == pytest.approx(
        {
            "train/loss": 0.5,
            "train/accuracy": 75.0,
            "test/AUROC": 90.0,
            "test/mse": 0.25,
            "test/distance/Uniform/FPR95TPR": 12.5,
            "test/AUROC-raw/svhn": 91.0,  # already in percent (InvGlow's scores)
        }
    )


def test_image_grid_places_each_image_in_reading_order() -> None:
    images = torch.arange(5 * 3 * 4 * 6, dtype=torch.uint8).reshape(5, 3, 4, 6)
    grid = image_grid(images, nrow=2, padding=1, pad_value=255)
    assert grid.shape == (3, 3 * (4 + 1) + 1, 2 * (6 + 1) + 1)
    canvas = torch.full_like(grid, 255)
    for k, image in enumerate(images):
        row, column = divmod(k, 2)
        top, left = 1 + row * 5, 1 + column * 7
        canvas[:, top : top + 4, left : left + 6] = image
    assert torch.equal(grid, canvas)  # images in place; padding and the empty sixth tile are pad_value
    assert image_grid(images[:2], nrow=8).shape == (3, 4 + 4, 2 * 6 + 6)
    with pytest.raises(ValueError, match="N, C, H, W"):
        image_grid(images[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_log_images_writes_the_grid_as_a_png(tmp_path: Path, channels: int) -> None:
    images = torch.rand(3, channels, 5, 7, generator=torch.Generator().manual_seed(1))
    tb_logger = setup_tensorboard(tmp_path, Engine(lambda e, b: 0.0))
    log_images(tb_logger, "samples", images, step=4, nrow=2)
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        log_images(tb_logger, "two channels", images[:, :1].expand(3, 2, 5, 7), step=4)
    tb_logger.close()
    image = summaries(tmp_path)["samples"][4].image
    decoded = cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8), cv2.IMREAD_UNCHANGED)
    decoded = decoded.reshape(*decoded.shape[:2], -1)[..., ::-1]  # OpenCV reads BGR
    expected = image_grid((images * 255).round().to(torch.uint8), nrow=2).permute(1, 2, 0).numpy()
    assert (image.height, image.width, image.colorspace) == expected.shape
    assert np.array_equal(decoded, expected)


@pytest.mark.parametrize("values", [[1e300, -1e300], [1e20, 1e20], [5.0, 5.0], [1.7e308, -1.7e308, 0.0]])
def test_log_histogram_bins_values_of_any_finite_magnitude(tmp_path: Path, values: list[float]) -> None:
    tb_logger = setup_tensorboard(tmp_path, Engine(lambda e, b: 0.0))
    log_histogram(tb_logger, "scores", torch.tensor(values, dtype=torch.float64), step=0)
    tb_logger.close()
    histogram = summaries(tmp_path)["scores"][0].histo
    assert (histogram.min, histogram.max, histogram.num) == (min(values), max(values), len(values))
    assert sum(histogram.bucket) == len(values)


def test_log_histogram_and_pr_curve(tmp_path: Path) -> None:
    tb_logger = setup_tensorboard(tmp_path, Engine(lambda e, b: 0.0))
    values = torch.tensor([3.0, -1.0, float("nan"), 0.5, float("inf"), 8.0])
    log_histogram(tb_logger, "scores", values, step=1)  # the finite values
    log_histogram(tb_logger, "diverged", torch.tensor([float("nan"), -float("inf")]), step=1)  # nothing
    # Scores 2s - 3 for s in 0..10: after min-max scaling, tensorboard's 11 thresholds sit at s = 0, 1, ..., 10.
    s = torch.tensor([0.0, 2.5, 4.5, 7.5, 10.0, 2.5, 5.5, 1.5])
    anomalous = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0])
    log_pr_curve(tb_logger, "pr", 2 * s - 3, anomalous, step=2, num_thresholds=11)
    tb_logger.close()
    logged = summaries(tmp_path)

    histogram = logged["scores"][1].histo
    assert (histogram.min, histogram.max, histogram.num, histogram.sum) == (-1.0, 8.0, 4, 10.5)
    assert histogram.sum_squares == 1 + 9 + 0.25 + 64
    counts, edges = np.histogram([3.0, -1.0, 0.5, 8.0], bins=64)
    assert list(histogram.bucket) == counts.tolist()
    assert np.allclose(histogram.bucket_limit, edges[1:])
    assert "diverged" not in logged
    curve = np.array(logged["pr"][2].tensor.float_val).reshape(6, 11)
    thresholds = np.arange(11)[:, None]
    flagged = s.numpy()[None, :] >= thresholds
    positive = anomalous.numpy().astype(bool)
    assert np.array_equal(curve[0], (flagged & positive).sum(1))  # true positives
    assert np.array_equal(curve[1], (flagged & ~positive).sum(1))  # false positives


# The whole wiring


@pytest.mark.parametrize(("epochs", "evaluated_at"), [(3, [2, 3]), (4, [2, 4])])
def test_setup_handlers_orders_epochs_evaluates_every_n_epochs_and_at_the_end(
    tmp_path: Path, epochs: int, evaluated_at: list[int]
) -> None:
    dataset = torch.arange(10)
    loader = DataLoader(dataset, batch_size=4, sampler=EpochSeededSampler(dataset, seed=3))
    seen: list[int] = []

    def train_step(_: Engine, batch: torch.Tensor) -> float:
        seen.extend(batch.tolist())
        return 0.0

    trainer = Engine(train_step)
    evaluator = Engine(lambda engine, batch: None)
    evaluations: list[int] = []
    evaluator.add_event_handler(Events.COMPLETED, lambda _: evaluations.append(trainer.state.epoch))
    handlers = setup_handlers(
        trainer, {"val": (evaluator, [0])}, tmp_path, {}, seed=3, eval_every=2, log_every=2, progress=False
    )
    trainer.run(loader, max_epochs=epochs)
    handlers.tb_logger.close()

    expected = [
        i for e in range(epochs) for i in torch.randperm(10, generator=torch.Generator().manual_seed(3 + e)).tolist()
    ]
    assert seen == expected  # epoch e is permutation (seed, e): the sampler was told its epoch
    assert evaluations == evaluated_at
    assert set(summaries(tmp_path)["train/loss"]) == set(range(2, 3 * epochs + 1, 2))
    assert set(handlers.to_save) == {"trainer", "rng"}


def test_torch_threads_sets_and_restores_the_thread_count():
    from common.run import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive number of threads"), torch_threads(0):
        pass
