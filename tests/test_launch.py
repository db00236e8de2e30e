"""``launch``: one process in place, two gloo processes with DDP giving the one-process result, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Engine
from torch import nn

from common.data_parallel import prepare_model
from common.handlers import finite_step, latest_checkpoint, setup_handlers
from common.launch import launch
from common.loaders import TensorBatchLoader
from common.run import create_run_dir, seed_everything

SEED = 5
GLOBAL_BATCH = 16
EPOCHS = 2


def train_linear(local_rank: int, config: dict[str, Any]) -> None:
    """Train a linear regression with DDP on every rank; rank 0 saves the weights, every rank its run folder."""
    torch.set_num_threads(1)
    out, rank, world_size = Path(config["out"]), idist.get_rank(), idist.get_world_size()
    seed_everything(SEED)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=generator)
    # Each rank takes its block of every global batch (8 of 16; 4 of the last 8), so every step sees the same batch.
    loader = TensorBatchLoader(x, torch.arange(200), GLOBAL_BATCH, shuffle=True, seed=SEED)
    targets = x @ torch.randn(8, 1, generator=generator)
    model = nn.Linear(8, 1)
    replica = prepare_model(model, torch.device("cpu"))  # DDP copies rank 0's initial weights to the other ranks
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def train_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        optimizer.zero_grad()
        inputs, rows = batch
        loss = nn.functional.mse_loss(replica("forward", inputs), targets[rows])
        loss.backward()
        finite_step(engine, loss, optimizer)
        return loss.item()

    trainer = Engine(train_step)
    run_dir = create_run_dir("demo", "launch", output=out / f"world{world_size}")
    handlers = setup_handlers(
        trainer, {}, run_dir, {"model": model}, seed=SEED, checkpoint_every_iterations=5, progress=False
    )
    trainer.run(loader, max_epochs=EPOCHS)
    (out / f"run_dir_world{world_size}_rank{rank}.txt").write_text(str(run_dir))
    torch.save(torch.get_rng_state(), out / f"rng_world{world_size}_rank{rank}.pt")
    if rank == 0:
        handlers.tb_logger.close()
        torch.save({"weights": model.state_dict(), "local_rank": local_rank}, out / f"result_world{world_size}.pt")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("launch")
    with pytest.MonkeyPatch.context() as environment:
        environment.delenv("MASTER_PORT", raising=False)  # launch picks a free port
        launch(train_linear, {"out": str(out)}, nproc_per_node=2, backend="gloo")
    launch(train_linear, {"out": str(out)})  # backend None: runs here, in this process
    return out


def test_two_gloo_processes_reach_the_weights_of_one_process(results: Path) -> None:
    one = torch.load(results / "result_world1.pt", weights_only=True)
    two = torch.load(results / "result_world2.pt", weights_only=True)
    assert one["local_rank"] == two["local_rank"] == 0
    torch.testing.assert_close(two["weights"], one["weights"], rtol=0, atol=1e-6)
    start = nn.Linear(8, 1).state_dict()  # the run must have moved the weights away from anything trivial
    assert not torch.allclose(one["weights"]["weight"], start["weight"])


def test_every_rank_gets_rank_0s_run_folder_and_rank_0_checkpoints_the_shared_random_streams(results: Path) -> None:
    folders = {(results / f"run_dir_world2_rank{rank}.txt").read_text() for rank in (0, 1)}
    assert len(folders) == 1
    run_dir = Path(folders.pop())
    assert run_dir.parent == results / "world2" / "demo" / "launch"
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == f"checkpoint_{EPOCHS * -(-200 // GLOBAL_BATCH)}.pt"
    rng = torch.load(checkpoint, weights_only=True)["rng"]
    assert rng["torch"].shape[0] == 1  # every rank's generators are in the same state: saved once
    states = [torch.load(results / f"rng_{run}.pt", weights_only=True) for run in ("world2_rank0", "world2_rank1")]
    assert torch.equal(states[0], states[1])
    assert torch.equal(states[0], torch.load(results / "rng_world1_rank0.pt", weights_only=True))  # as one process


def test_launch_rejects_backends_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'nccl' needs CUDA GPUs"):
        launch(train_linear, {}, nproc_per_node=2, backend="nccl")
    # The CPU build lists ['gloo'], the CUDA build ['nccl', 'gloo'] (and maybe more): gloo is in both.
    with pytest.raises(ValueError, match=r"'no-such-backend' is not available.*available: \[.*'gloo'.*\]"):
        launch(train_linear, {}, nproc_per_node=2, backend="no-such-backend")
    with pytest.raises(ValueError, match="needs a backend"):
        launch(train_linear, {}, nproc_per_node=2)
    with pytest.raises(ValueError, match="positive"):
        launch(train_linear, {}, nproc_per_node=0, backend="gloo")


def fail_on_rank_1(local_rank: int, config: dict[str, Any]) -> None:
    """Rank 1 raises; rank 0 returns and waits at the end-of-run barrier."""
    if idist.get_rank() == 1:
        raise ValueError("rank 1 found bad data")


def test_an_error_on_one_rank_reaches_the_caller_as_that_error_not_an_abort() -> None:
    # Rank 0 fails too, on the group rank 1 left; whichever ends first, the caller gets rank 1's own error, with its
    # traceback (not a SIGABRT exit without text, nor rank 0's broken connection).
    with pytest.raises(ValueError, match=r"^rank 1 found bad data$") as raised:
        launch(fail_on_rank_1, {}, nproc_per_node=2, backend="gloo")
    assert "in fail_on_rank_1" in str(raised.value.__cause__)
