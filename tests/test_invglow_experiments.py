"""InvGlow end to end at a tiny size: create_tiny on a generated binary, pretrain, finetune, scores, table, resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from common.datasets import ImageSet
from common.handlers import CHECKPOINT_DIR
from common.papers import RunOptions
from invglow import experiments, paper
from invglow.config import DEMO, DataConfig, GlowConfig, InvGlowConfig, TrainConfig

_TRAIN = TrainConfig(epochs=1, batch_size=16, eval_batch_size=64, init_batches=1, translate_pixels=1)
TINY = InvGlowConfig(
    glow=GlowConfig(image_size=8, steps=1, hidden=8),
    pretrain=_TRAIN,
    finetune=dataclasses.replace(_TRAIN, outlier_weight=100.0, outlier_temperature=50.0),
    data=DataConfig(
        in_distribution=("shapes", "digits-rgb"),
        ood=("shapes", "digits-rgb", "uniform-noise"),
        no_flip=("digits-rgb",),
        demo_tiny_images=640,
        demo_train=48,
        demo_test=24,
    ),
    grey=DataConfig(
        in_distribution=("shapes", "digits-rgb"),
        ood=("shapes", "digits-rgb"),
        demo_tiny_images=640,
        demo_train=48,
        demo_test=24,
    ),
    seeds=(0,),
)


@pytest.fixture
def tiny_config(monkeypatch: pytest.MonkeyPatch) -> InvGlowConfig:
    monkeypatch.setattr(experiments, "get_config", lambda scale: TINY)
    return TINY


def test_tables_end_to_end_and_resume(tiny_config: InvGlowConfig, tmp_path: Path) -> None:
    options = RunOptions(scale="demo", device="cpu", progress=False)
    rows = experiments.run_tables(options, tmp_path)

    # create_tiny ran on the generated binary of the real format
    assert (tmp_path / "data" / "tiny-images" / "tiny_subset.json").is_file()
    # one cell per (row, in-distribution set, OOD set) plus the Serra table
    unsupervised = [row for row in rows if row.table == paper.UNSUPERVISED_TABLE]
    assert len(unsupervised) == len(paper.UNSUPERVISED_ROWS) * 2 * 2  # 2 in-distribution sets × 2 OOD sets each
    assert {row.row for row in unsupervised} == set(paper.UNSUPERVISED_ROWS)
    assert all(row.paper_value is None and 0.0 <= row.ours <= 100.0 for row in unsupervised)
    supervised = [row for row in rows if row.table == paper.SUPERVISED_TABLE]
    assert len(supervised) == 2 * 2 and all(row.row == paper.SUPERVISED_RATIO for row in supervised)
    grey = [row for row in rows if row.table == paper.GREY_TABLE]
    assert len(grey) == len(paper.GREY_ROWS) * 2  # each grey set against the other
    serra = {(row.row, row.column): row for row in rows if row.table == paper.SERRA_TABLE}
    assert serra[(paper.SERRA_S, paper.ORIGINAL_CODE)].paper_value == 78.4
    assert serra[(paper.SERRA_PNG, paper.SERRA_PAPER)].paper_value == 7.7
    # every stage logged to tensorboard and checkpointed
    stages = ["pretrain-tiny", "finetune-shapes", "finetune-shapes-outlier-loss", "finetune-digits-rgb-margin-loss"]
    stages += ["finetune-digits-rgb-supervised", "pretrain-tiny-grey", "finetune-grey-shapes-outlier-loss"]
    for stage in stages:
        folder = tmp_path / stage / "seed0"
        assert list(folder.glob("events.out.tfevents.*")), stage
        assert list((folder / CHECKPOINT_DIR).glob("checkpoint_*.pt")), stage

    # resuming a finished run reuses every stage's final model and gives the same table
    resumed = experiments.run_tables(dataclasses.replace(options, resume=tmp_path), tmp_path)
    assert [row.ours for row in resumed] == [row.ours for row in rows]


def test_stage_resumed_from_checkpoint_matches_uninterrupted(tiny_config: InvGlowConfig, tmp_path: Path) -> None:
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    train_set = ImageSet(images, torch.zeros(64, dtype=torch.int64))
    evaluation = experiments.eval_sets("a", images[:16], {"b": images[16:32]})

    def stage(folder: str, epochs: int) -> experiments.Stage:
        return experiments.Stage(tmp_path / folder, TINY.pretrain, epochs, 3, True, evaluation)

    def fresh() -> experiments.Glow:
        torch.manual_seed(0)
        return experiments.build_model(TINY)

    options = RunOptions(device="cpu", progress=False)
    whole = fresh()
    experiments.train_stage(stage("whole", 2), whole, train_set, options, torch.device("cpu"))
    interrupted = fresh()
    experiments.train_stage(stage("parts", 1), interrupted, train_set, options, torch.device("cpu"))
    (tmp_path / "parts" / experiments.FINAL_MODEL).unlink()  # as if killed after the first epoch's checkpoint
    resumed = fresh()
    resume_options = dataclasses.replace(options, resume=tmp_path)
    experiments.train_stage(stage("parts", 2), resumed, train_set, resume_options, torch.device("cpu"))
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert not torch.equal(whole.state_dict()["priors.0.norm.bias"], interrupted.state_dict()["priors.0.norm.bias"])


@pytest.mark.slow
def test_demo_scale_runs_within_budget(tmp_path: Path) -> None:
    import time

    start = time.perf_counter()
    rows = experiments.run_tables(RunOptions(scale="demo", device="cpu", progress=False), tmp_path)
    assert time.perf_counter() - start < 180
    ratio = [row for row in rows if row.row == paper.RATIO and row.column == "shapes → digits-rgb"]
    assert ratio and ratio[0].ours > 80.0  # the paper's main point: the ratio to Tiny detects what raw lp misses
    assert DEMO.data.in_distribution[0] == "shapes"


def test_pretraining_does_not_depend_on_the_global_random_state(tiny_config: InvGlowConfig, tmp_path: Path) -> None:
    options = RunOptions(device="cpu", progress=False)
    models = []
    for run, noise in enumerate((1, 2)):
        torch.manual_seed(noise)  # whatever ran before must not change the run
        model, _, _ = experiments.pretrain_tiny(TINY, options, tmp_path / str(run), 0, torch.device("cpu"))
        models.append(model.state_dict())
    for name, tensor in models[0].items():
        assert torch.equal(tensor, models[1][name]), name
