"""Data-parallel ``fit`` of InvGlow and MCHAD: two gloo processes end where one process ends.

One Glow stage trained from scratch and one finetuned with the outlier loss (InvGlow), and one G-MCHAD training
(WRN with BatchNorm and dropout, ID + outlier batches), each at a tiny size, run once in this process and once in two
gloo processes (``common.launch``) with the same global batches. The final weights agree to 1e-6 and so do the
metrics; both ranks end with the same weights; a two-process run killed mid-epoch and resumed from its checkpoint
ends with the uninterrupted result. Also: ``SyncBatchNorm`` and ``Shards.gather`` against one-process references.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from common.data_parallel import Shards, SyncBatchNorm, convert_batchnorm
from common.datasets import ImageSet
from common.handlers import CHECKPOINT_DIR
from common.launch import launch
from common.run import torch_threads
from invglow import engine as invglow_engine
from invglow.config import TrainConfig
from invglow.data import eval_sets
from invglow.models import Glow
from mchad import engine as mchad_engine
from mchad.config import DEMO_DATASETS, DEMO_METHODS, DEMO_TRAIN

GLOW_TRAIN = TrainConfig(epochs=2, batch_size=16, eval_batch_size=64, init_batches=2, translate_pixels=1)
G_MCHAD = next(method for method in DEMO_METHODS[DEMO_DATASETS[0].name] if method.name == "G-MCHAD")
MCHAD_DATASET = dataclasses.replace(DEMO_DATASETS[0], epochs=2, max_batches=6)
MCHAD_TRAIN = dataclasses.replace(
    DEMO_TRAIN, noise_count=40, outlier_count=200, eval_batch_size=256, checkpoint_every_iterations=4
)
CRASH_AT = 10  # 6 batches per epoch: the newest checkpoint is the mid-epoch one of iteration 8


def glow_stages(folder: Path) -> dict[str, Any]:
    """A tiny Glow trained from scratch, then finetuned from it with the 'class' outlier loss: weights, metrics."""
    images = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    train_set, outliers = ImageSet(images[:64], torch.zeros(64, dtype=torch.int64)), images[64:]
    evaluation = eval_sets("a", images[:24], {"b": images[64:], "c": images[24:40]}, batch_size=8)
    options = {"seed": 3, "flip": True, "device": idist.device(), "progress": False}
    torch.manual_seed(0)
    base = Glow((3, 8, 8), n_scales=2, steps=1, hidden=8).to(idist.device())
    pretrained = invglow_engine.fit(base, train_set, evaluation, GLOW_TRAIN, folder / "pretrain", **options)
    finetuned_model = copy.deepcopy(base)
    base.requires_grad_(False)
    outlier = invglow_engine.OutlierLossConfig("class", weight=50.0, temperature=20.0)
    finetuned = invglow_engine.fit(
        finetuned_model, train_set, evaluation, GLOW_TRAIN, folder / "finetune", base_model=base, outlier=outlier,
        outlier_images=outliers, **options,
    )  # fmt: skip
    return {
        "pretrain": (base.state_dict(), scalars(pretrained)),
        "finetune": (finetuned_model.state_dict(), scalars(finetuned)),
    }


def mchad_fit(folder: Path, crash_at: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """G-MCHAD at a tiny size: final weights (of this rank) and metrics; ``crash_at`` raises at that iteration.

    The network runs in float64. In float32 the two runs differ by about 1e-4 after these 12 steps, and would
    with any data-parallel implementation: the two processes sum a batch's gradients in another order, and
    Adam (eps 1e-8) turns a rounding difference of a gradient that weight decay nearly cancels (5e-5 · w against
    the loss gradient) into a step difference of up to ~1e-5 (measured: an effective gradient of 6e-8 against
    rounding noise of 6e-9 moved a weight by 1.3e-5 in the first step). In float64 the same noise is 1e-16, so a
    difference at 1e-6 means a real divergence: another batch, noise, statistic or gradient scale.
    """
    built: list[nn.Module] = []
    original_build, original_trainer = mchad_engine.build_model, mchad_engine.create_trainer

    def build(*args: Any) -> nn.Module:
        built.append(original_build(*args).double())
        built[-1].register_forward_pre_hook(lambda _, inputs: tuple(x.double() for x in inputs))
        return built[-1]

    def create_trainer(*args: Any, **kwargs: Any) -> Engine:
        trainer = original_trainer(*args, **kwargs)
        if crash_at is not None:

            @trainer.on(Events.ITERATION_STARTED(once=crash_at))
            def crash(_: Engine) -> None:
                raise RuntimeError("simulated crash")

        return trainer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mchad_engine, "build_model", build)
        patch.setattr(mchad_engine, "create_trainer", create_trainer)
        metrics = mchad_engine.fit(
            G_MCHAD, MCHAD_DATASET, MCHAD_TRAIN, 0, folder, device=idist.device(), progress=False
        )
    return built[0].state_dict(), metrics


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers among ``metrics``, nested mappings flattened (the collected per-image tensors left out)."""
    found = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            found.update(scalars(value, f"{prefix}{name}/"))
        elif isinstance(value, (int, float)):
            found[f"{prefix}{name}"] = float(value)
    return found


def train_everything(local_rank: int, config: dict[str, Any]) -> None:
    """Every training of this module in this process group; each rank saves what it ended with."""
    world_size, rank = idist.get_world_size(), idist.get_rank()
    out = Path(config["out"]) / f"world{world_size}"
    with torch_threads(1):
        results: dict[str, Any] = glow_stages(out / "glow")
        weights, metrics = mchad_fit(out / "mchad")
        results["mchad"] = (weights, scalars(metrics))
        if world_size == 2:  # killed mid-epoch, resumed from its newest checkpoint (of iteration 8)
            try:
                mchad_fit(out / "mchad-resumed", crash_at=CRASH_AT)
            except RuntimeError as error:
                assert "simulated crash" in str(error)
            weights, metrics = mchad_fit(out / "mchad-resumed")
            results["mchad-resumed"] = (weights, scalars(metrics))
        else:  # the two-process run's mid-epoch checkpoint, resumed in one process
            checkpoints = out / "mchad-from-two-processes" / CHECKPOINT_DIR
            checkpoints.mkdir(parents=True)
            two = Path(config["out"]) / "world2" / "mchad-resumed" / CHECKPOINT_DIR / "checkpoint_8.pt"
            shutil.copy(two, checkpoints)
            weights, metrics = mchad_fit(out / "mchad-from-two-processes")
            results["mchad-resumed"] = (weights, scalars(metrics))
    torch.save(results, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data-parallel")
    launch(train_everything, {"out": str(out)}, nproc_per_node=2, backend="gloo")
    launch(train_everything, {"out": str(out)})  # one process, here
    return out


def load(runs: Path, world_size: int, rank: int = 0) -> dict[str, Any]:
    return torch.load(runs / f"world{world_size}" / f"rank{rank}.pt", weights_only=True)


@pytest.mark.parametrize("training", ["pretrain", "finetune", "mchad"])
def test_two_processes_end_with_the_weights_and_metrics_of_one(runs: Path, training: str) -> None:
    one_weights, one_metrics = load(runs, 1)[training]
    two_weights, two_metrics = load(runs, 2)[training]
    assert two_weights.keys() == one_weights.keys()
    for name, value in one_weights.items():
        torch.testing.assert_close(two_weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert two_metrics.keys() == one_metrics.keys() and len(one_metrics) > 5
    assert two_metrics == pytest.approx(one_metrics, rel=0, abs=1e-6)


def test_both_ranks_end_with_the_same_weights(runs: Path) -> None:
    first, second = load(runs, 2, 0), load(runs, 2, 1)
    for training, (weights, metrics) in first.items():
        for name, value in weights.items():
            assert torch.equal(second[training][0][name], value), (training, name)
        assert second[training][1] == metrics


def test_a_two_process_run_resumed_mid_epoch_ends_as_the_uninterrupted_one(runs: Path) -> None:
    checkpoints = sorted(path.name for path in (runs / "world2" / "mchad-resumed" / CHECKPOINT_DIR).glob("*.pt"))
    assert checkpoints == ["checkpoint_12.pt", "checkpoint_8.pt"]  # rotated past the one it resumed from
    whole_weights, whole_metrics = load(runs, 2)["mchad"]
    resumed_weights, resumed_metrics = load(runs, 2)["mchad-resumed"]
    for name, value in whole_weights.items():
        assert torch.equal(resumed_weights[name], value), name
    assert resumed_metrics == whole_metrics


def test_a_two_process_checkpoint_resumes_in_one_process(runs: Path) -> None:
    """The random streams and batches do not depend on the number of processes, so neither does a resume."""
    whole_weights, whole_metrics = load(runs, 1)["mchad"]
    resumed_weights, resumed_metrics = load(runs, 1)["mchad-resumed"]
    for name, value in whole_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert resumed_metrics == pytest.approx(whole_metrics, rel=0, abs=1e-6)


def test_only_rank_0_writes_the_run_files(runs: Path) -> None:
    folder = runs / "world2" / "glow" / "pretrain"
    assert (folder / invglow_engine.FINAL_MODEL).is_file()
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1


# One-process references of the pieces, with a fake second rank


def test_sync_batchnorm_in_one_process_is_batchnorm() -> None:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(144))
    converted = convert_batchnorm(copy.deepcopy(reference))
    assert isinstance(converted[1], SyncBatchNorm) and isinstance(converted[4], SyncBatchNorm)
    assert converted.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(6, 3, 8, 8)
    assert torch.equal(converted(x), reference(x))
    for name, value in reference.state_dict().items():
        assert torch.equal(converted.state_dict()[name], value), name


def test_shards_select_and_gather_in_one_process() -> None:
    shards = Shards((3, 2, 4), rank=1)
    assert shards.total == 9 and shards.mine == slice(3, 5)
    kept = shards.select(torch.tensor([1, 0, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool))
    assert kept.sizes == (2, 2, 2) and kept.mine == slice(2, 4)
    alone = Shards((4,), rank=0)
    x = torch.randn(4, 2)
    assert alone.gather(x, None)[0] is x and alone.gather(x, None)[1] is None
