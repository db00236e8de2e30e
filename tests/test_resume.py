"""A run killed mid-epoch and resumed from its checkpoint ends with the weights of an uninterrupted run."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import LRScheduler
from ignite.metrics import Loss
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.errors import DataError, MissingDataError
from common.handlers import (
    TrainingHandlers,
    finite_step,
    latest_checkpoint,
    resume_from,
    setup_handlers,
)
from common.run import EpochSeededSampler, RandomStates, seed_everything

SEED = 11
N_SAMPLES, BATCH, EPOCHS = 200, 16, 3
EPOCH_LENGTH = -(-N_SAMPLES // BATCH)  # 13 batches, the last one of 8 samples
TOTAL_ITERATIONS = EPOCHS * EPOCH_LENGTH


class NoisyPairs(Dataset):
    """Regression pairs with random augmentation drawn from python's and numpy's generators."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = self.x @ torch.randn(8, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sign = -1.0 if random.random() < 0.5 else 1.0
        noise = torch.from_numpy(np.random.normal(scale=0.1, size=8).astype(np.float32))
        return sign * self.x[index] + noise, sign * self.y[index]


class ShuffledBatches:
    """The smallest loader with the ``set_epoch`` / ``skip_batches`` protocol of ``make_reproducible``."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.epoch = self.skip = 0

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_batches(self, n: int) -> None:
        self.skip = n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        batches, self.skip = order.split(self.batch_size)[self.skip :], 0
        for indices in batches:
            pairs = [self.dataset[i] for i in indices.tolist()]
            yield torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def make_loader(kind: str, dataset: Dataset) -> Iterable:
    if kind == "sampler":
        return DataLoader(dataset, batch_size=BATCH, sampler=EpochSeededSampler(dataset, seed=SEED))
    if kind == "batch loader":
        return ShuffledBatches(dataset, BATCH, SEED)
    return DataLoader(dataset, batch_size=BATCH, shuffle=True)  # cannot skip the batches already seen


def build_run(
    run_dir: Path, kind: str, resume: bool | Path = False
) -> tuple[Engine, Iterable, nn.Module, TrainingHandlers]:
    """Fresh model, optimizer, scheduler, data and engines, as a new process would build them."""
    seed_everything(SEED)
    loader = make_loader(kind, NoisyPairs(N_SAMPLES))
    # The evaluation loader shuffles with the global torch generator, so evaluations draw random numbers too.
    val_loader = DataLoader(NoisyPairs(40), batch_size=BATCH, shuffle=True)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = LRScheduler(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.97))

    def train_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        model.train()
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        loss.backward()
        finite_step(engine, loss, optimizer)
        return {"loss": loss.item()}

    @torch.no_grad()
    def eval_step(_: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        return model(batch[0]), batch[1]

    trainer, evaluator = Engine(train_step), Engine(eval_step)
    Loss(nn.functional.mse_loss).attach(evaluator, "mse")
    handlers = setup_handlers(
        trainer,
        {"val": (evaluator, val_loader)},
        run_dir,
        {"model": model, "optimizer": optimizer},
        seed=SEED,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        checkpoint_every_iterations=5,
        progress=False,
        resume=resume,
    )
    return trainer, loader, model, handlers


def train(run_dir: Path, kind: str, resume: bool | Path = False, crash_at: int | None = None) -> tuple[nn.Module, int]:
    """Train to EPOCHS; return the model and how many iterations this call ran."""
    trainer, loader, model, handlers = build_run(run_dir, kind, resume)
    ran = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: ran.append(engine.state.iteration))
    if crash_at is not None:

        @trainer.on(Events.ITERATION_STARTED(once=crash_at))
        def crash(_: Engine) -> None:
            raise RuntimeError("simulated crash")

    try:
        trainer.run(loader, max_epochs=EPOCHS)
    finally:
        handlers.tb_logger.close()
    return model, len(ran)


@pytest.fixture(scope="module", params=["sampler", "batch loader"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, kind: str) -> dict[str, torch.Tensor]:
    model, iterations = train(tmp_path_factory.mktemp("uninterrupted"), kind)
    assert iterations == TOTAL_ITERATIONS
    return model.state_dict()


def crash(run_dir: Path, crash_at: int, kind: str = "sampler") -> Path:
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(run_dir, kind, crash_at=crash_at)
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None
    return checkpoint


@pytest.mark.parametrize(
    ("crash_at", "resumed_at"),
    [(23, 20), (28, 26)],  # 20 is part-way through epoch 2 (7 of 13 batches); 26 ends epoch 2
)
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, kind: str, uninterrupted: dict[str, torch.Tensor], crash_at: int, resumed_at: int
) -> None:
    checkpoint = crash(tmp_path, crash_at, kind)
    assert checkpoint.name == f"checkpoint_{resumed_at}.pt"

    model, iterations = train(tmp_path, kind, resume=checkpoint)

    assert iterations == TOTAL_ITERATIONS - resumed_at
    for name, value in model.state_dict().items():
        assert torch.equal(value, uninterrupted[name]), name


def test_a_truncated_newest_checkpoint_is_passed_over_for_the_newest_intact_one(
    tmp_path: Path, kind: str, uninterrupted: dict[str, torch.Tensor]
) -> None:
    newest = crash(tmp_path, 23, kind)  # checkpoints at 15 and 20
    newest.write_bytes(newest.read_bytes()[:1000])  # a crash while it was written by something non-atomic
    with pytest.warns(UserWarning, match=r"checkpoint_20\.pt: not a checkpoint.*trying an older checkpoint"):
        model, iterations = train(tmp_path, kind, resume=True)
    assert iterations == TOTAL_ITERATIONS - 15
    for name, value in model.state_dict().items():
        assert torch.equal(value, uninterrupted[name]), name


def test_resume_true_without_checkpoints_starts_from_scratch(tmp_path: Path) -> None:
    _, iterations = train(tmp_path, "sampler", resume=True)
    assert iterations == TOTAL_ITERATIONS


def test_resume_without_the_random_states_diverges(
    tmp_path: Path, kind: str, uninterrupted: dict[str, torch.Tensor]
) -> None:
    # Control: the equality above depends on restoring the generators, so the comparison can fail.
    checkpoint = crash(tmp_path, 23, kind)
    trainer, loader, model, handlers = build_run(tmp_path, kind)
    resume_from(checkpoint, {key: value for key, value in handlers.to_save.items() if key != "rng"})
    trainer.run(loader, max_epochs=EPOCHS)
    handlers.tb_logger.close()
    assert not torch.equal(model.state_dict()["0.weight"], uninterrupted["0.weight"])


def test_checkpoint_loads_with_weights_only_and_holds_everything_to_resume(tmp_path: Path) -> None:
    checkpoint = crash(tmp_path, 23)
    saved = torch.load(checkpoint, weights_only=True)
    assert set(saved) == {"trainer", "model", "optimizer", "rng", "lr_scheduler", "checkpointer"}
    assert saved["trainer"]["iteration"] == 20
    assert saved["trainer"]["skipped_steps"] == 0
    assert all(value.shape[0] == 1 for value in saved["rng"].values())  # one row per process
    assert [name for _, name in saved["checkpointer"]["_saved"]] == ["checkpoint_15.pt", "checkpoint_20.pt"]
    on_disk = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())  # each beside its checksum
    assert on_disk == ["checkpoint_15.pt", "checkpoint_15.pt.sha256", "checkpoint_20.pt", "checkpoint_20.pt.sha256"]


def test_resume_part_way_through_an_epoch_warns_when_the_data_cannot_skip(tmp_path: Path) -> None:
    checkpoint = crash(tmp_path, 23, "plain shuffled DataLoader")
    with pytest.warns(UserWarning, match="cannot skip the 7 batches already trained on"):
        train(tmp_path, "plain shuffled DataLoader", resume=checkpoint)


def test_resumed_run_keeps_rotating_the_old_checkpoints(tmp_path: Path) -> None:
    train(tmp_path, "sampler", resume=crash(tmp_path, 23))
    remaining = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    kept = [f"checkpoint_{TOTAL_ITERATIONS - 4}.pt", f"checkpoint_{TOTAL_ITERATIONS}.pt"]
    assert remaining == sorted(kept + [name + ".sha256" for name in kept])  # rotation removes checksums too


def test_random_states_survive_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.random(), np.random.normal(), torch.rand(1)  # leave every generator mid-stream
    states = RandomStates().state_dict()
    torch.save(states, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    torch.testing.assert_close(loaded, states, rtol=0, atol=0, equal_nan=True)  # NaN: python's cached gauss unset


def test_latest_checkpoint_picks_the_highest_iteration(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ["checkpoint_9.pt", "checkpoint_100.pt", "checkpoint_20.pt", "best_model_500.pt"]:
        (folder / name).touch()
    assert latest_checkpoint(tmp_path) == folder / "checkpoint_100.pt"


def test_resume_from_names_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"nothing\.pt"):
        resume_from(tmp_path / "nothing.pt", {})
    truncated = tmp_path / "truncated.pt"
    torch.save({"model": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(DataError, match=r"truncated\.pt"):
        resume_from(truncated, {})
    pickled = tmp_path / "pickled.pt"
    torch.save({"rng": np.random.get_state()}, pickled)  # an ndarray: refused by weights_only
    with pytest.raises(DataError, match="weights_only"):
        resume_from(pickled, {})


def test_setup_handlers_refuses_entries_it_adds_itself(tmp_path: Path) -> None:
    trainer = Engine(lambda engine, batch: 0.0)
    with pytest.raises(ValueError, match="trainer"):
        setup_handlers(trainer, {}, tmp_path, {"trainer": trainer}, seed=0, progress=False)
