"""Training faults in common.handlers: every step skipped, an update that overflows, a damaged or unwritable checkpoint.

Issue 16, case 5 and the checkpoint cases: a run whose every step was skipped reported the metrics of an untrained
model; a finite step whose update overflowed surfaced much later in the metrics; 39 of 40 single-bit flips of a
checkpoint loaded silently; a full disk during a checkpoint gave torch's ``unexpected pos`` without a path.
"""

from __future__ import annotations

import errno
import math
import warnings
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from torch import nn

from common.errors import DataError
from common.handlers import (
    SKIPPED_STEPS,
    checkpoints_newest_first,
    count_skipped_steps,
    finite_step,
    resume_from,
    resume_from_newest_intact,
    setup_handlers,
)

N_BATCHES = 4


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator)) for _ in range(N_BATCHES)]


def _run(run_dir: Path, poison: float = 1.0, every_iterations: int | None = None, epochs: int = 1) -> tuple:
    """Train a linear model wired by ``setup_handlers``; ``poison`` multiplies every loss (nan: every step skipped)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch[0]), batch[1]) * poison
        loss.backward()
        finite_step(engine, loss, optimizer)
        return loss.item()

    trainer = Engine(step)
    to_save = {"model": model, "optimizer": optimizer}
    handlers = setup_handlers(
        trainer, {}, run_dir, to_save, seed=0, checkpoint_every_iterations=every_iterations, progress=False
    )
    trainer.run(_batches(), max_epochs=epochs)
    return trainer, model, handlers


def test_a_run_in_which_every_step_was_skipped_fails_naming_the_count(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"every one of the 4 training steps .*skipped_steps=4"):
        _run(tmp_path, poison=math.nan)
    trainer, _, _ = _run(tmp_path / "healthy")  # a run with its steps taken is not disturbed
    assert getattr(trainer.state, SKIPPED_STEPS) == 0


def test_an_update_that_overflows_after_a_finite_step_is_caught_at_that_step() -> None:
    weight = nn.Parameter(torch.tensor([1e-3, 0.5]))
    optimizer = torch.optim.SGD([weight], lr=2.0)
    steps = []

    def step(engine: Engine, scale: float) -> None:
        optimizer.zero_grad()
        loss = (weight * torch.tensor([scale, 1.0])).sum()  # finite loss, gradient (scale, 1): finite
        loss.backward()
        steps.append(engine.state.iteration)
        finite_step(engine, loss, optimizer)

    engine = Engine(step)
    count_skipped_steps(engine)
    with pytest.raises(FloatingPointError, match=r"iteration 2: .*made 1 of 1 parameter tensors non-finite"):
        engine.run([0.0, -3e38, 1.0], max_epochs=1)  # loss -3e35, but the second update is 2 × 3e38: beyond float32
    assert steps == [1, 2]


def _flip_a_bit_in_a_tensor(path: Path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    start = bytes(data).find(tensor.detach().numpy().tobytes())
    assert start > 0, "the tensor's bytes are stored as they are"
    data[start + 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_checkpoint_is_refused_and_the_older_intact_one_is_used(tmp_path: Path) -> None:
    _, model, handlers = _run(tmp_path, every_iterations=2)
    newest, older = checkpoints_newest_first(tmp_path)[:2]
    assert [p.name for p in (newest, older)] == ["checkpoint_4.pt", "checkpoint_2.pt"]
    assert newest.with_name(newest.name + ".sha256").is_file()
    _flip_a_bit_in_a_tensor(newest, model.weight)
    with pytest.raises(DataError, match="damaged since it was written") as raised:
        resume_from(newest, handlers.to_save)
    assert raised.value.path == newest
    with pytest.warns(UserWarning, match=r"checkpoint_4\.pt: damaged since it was written.*trying an older"):
        assert resume_from_newest_intact(tmp_path, {**handlers.to_save, "checkpointer": handlers.checkpoint}) == older


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 1232"),
    ],
    ids=["ENOSPC", "torch short write"],
)
def test_a_full_disk_during_a_checkpoint_names_the_file_and_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    _, _, handlers = _run(tmp_path, every_iterations=2)
    real_save = torch.save

    def disk_full(value: object, file: object, **options: object) -> None:
        real_save(value, file, **options)  # bytes went out, then the file system refused the rest
        raise failure

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DataError, match=r"checkpoint_6\.pt: could not be written: the disk is full.*checkpoint_4\.pt"):
        handlers.checkpoint(_engine_at(6))
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint_4.pt", "checkpoint_4.pt.sha256"]  # no temporary left; rotation had dropped 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resume_from_newest_intact(tmp_path, {**handlers.to_save, "checkpointer": handlers.checkpoint})


def _engine_at(iteration: int) -> Engine:
    engine = Engine(lambda engine, batch: None)
    engine.state.iteration, engine.state.epoch = iteration, 2
    return engine
