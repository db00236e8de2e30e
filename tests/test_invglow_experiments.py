"""InvGlow's ``tables`` as cells at a tiny size: cell ids, one cell with its prerequisites, shards, the table."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import main
from common.cells import CELL_RESULT
from common.handlers import CHECKPOINT_DIR
from common.results import RESULTS_FILE
from invglow import base_likelihoods, config, experiments, paper
from invglow.config import DEMO, DataConfig, GlowConfig, InvGlowConfig, TrainConfig
from invglow.engine import FINAL_MODEL

_TRAIN = TrainConfig(epochs=1, batch_size=16, eval_batch_size=64, init_batches=1, translate_pixels=1)
TINY = InvGlowConfig(
    glow=GlowConfig(image_size=8, steps=1, hidden=8),
    pretrain=_TRAIN,
    finetune=dataclasses.replace(_TRAIN, outlier_weight=100.0, outlier_temperature=50.0),
    data=DataConfig(
        in_distribution=("shapes", "digits-rgb"),
        ood=("shapes", "digits-rgb", "uniform-noise"),
        no_flip=("digits-rgb",),
        demo_tiny_images=320,
        demo_train=32,
        demo_test=16,
    ),
    grey=DataConfig(
        in_distribution=("shapes", "digits-rgb"),
        ood=("shapes", "digits-rgb"),
        demo_tiny_images=320,
        demo_train=32,
        demo_test=16,
    ),
    seeds=(0,),
)
PRETRAIN = "invglow/tables/tiny-pretrain/seed-0"


@pytest.fixture
def tiny_config(monkeypatch: pytest.MonkeyPatch) -> InvGlowConfig:
    monkeypatch.setitem(config.CONFIGS, "demo", TINY)
    return TINY


def _cells(options: main.RunOptions) -> list[tuple[str, list[str]]]:
    """(id, needs) of every line of ``--list-cells``."""
    return [
        (cell.id, list(cell.needs)) for _, cells in main.listed_cells("invglow", options=options) for cell, _ in cells
    ]


@pytest.mark.parametrize(
    ("scale", "sets", "n_tables", "n_local"),
    [("demo", ("shapes", "digits-rgb"), 14, 6), ("paper", ("svhn", "mnist"), 18, 9)],
)
def test_cells_are_unique_stable_and_need_listed_cells(
    scale: str, sets: tuple[str, str], n_tables: int, n_local: int
) -> None:
    options = main.RunOptions(scale=scale, seeds=(0, 7))
    cells = _cells(options)
    ids = [cell_id for cell_id, _ in cells]
    assert len(ids) == len(set(ids)) and cells == _cells(options)
    assert all(need in ids for _, needs in cells for need in needs)
    assert sum(i.startswith("invglow/tables/") for i in ids) == 2 * n_tables  # 2 seeds
    assert sum(i.startswith("invglow/local_vs_semantic/") for i in ids) == 2 * n_local
    needs = dict(cells)
    rgb, grey = sets
    assert needs[f"invglow/tables/finetune-{rgb}/supervised/seed-7"] == ["invglow/tables/tiny-pretrain/seed-7"]
    assert needs[f"invglow/tables/finetune-grey-{grey}/outlier-loss/seed-7"] == [
        "invglow/tables/tiny-pretrain-grey/seed-7"
    ]
    full = f"invglow/local_vs_semantic/full-glow-{rgb}/seed-0"
    assert needs[full] == [] and needs[f"invglow/local_vs_semantic/dense-glow-{rgb}/seed-0"] == [full]


def _finished(run_dir: Path) -> set[str]:
    return {str(path.parent.relative_to(run_dir)) for path in run_dir.rglob(CELL_RESULT)}


def test_one_cell_runs_with_its_prerequisite_only(
    tiny_config: InvGlowConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finetune = "invglow/tables/finetune-shapes/outlier-loss/seed-0"
    found = []  # the Tiny model's log-densities the finetuning took from its pretraining cell
    load = base_likelihoods.load

    def recording_load(*args: Any) -> torch.Tensor | None:
        found.append(load(*args))
        return found[-1]

    monkeypatch.setattr(base_likelihoods, "load", recording_load)
    torch.manual_seed(1)  # whatever ran before must not change a cell
    options = main.RunOptions(output=tmp_path, run_name="r", cells=(finetune,), progress=False, device="cpu")
    assert main.run_paper("invglow", ["tables"], options) == []  # the table is not complete
    run_dir = tmp_path / "invglow" / "tables" / "r"
    assert _finished(run_dir) == {"tiny-pretrain/seed-0", "finetune-shapes/outlier-loss/seed-0"}
    for folder in (run_dir / "tiny-pretrain/seed-0", run_dir / "finetune-shapes/outlier-loss/seed-0"):
        assert list(folder.glob("events.out.tfevents.*")) and list((folder / CHECKPOINT_DIR).glob("*.pt"))
        assert (folder / FINAL_MODEL).is_file()
    assert (run_dir / "tiny-pretrain/seed-0/data/tiny-images/tiny_subset.json").is_file()  # create_tiny's output
    assert len(found) == 1 and found[0] is not None and found[0].shape[1] == TINY.glow.n_scales
    values = json.loads((run_dir / "finetune-shapes/outlier-loss/seed-0" / CELL_RESULT).read_text())["values"]
    scores = [
        f"AUROC-{kind}/{ood}" for kind in ("raw", "ratio", "final_scale") for ood in ("digits-rgb", "uniform-noise")
    ]
    assert set(scores) <= set(values)

    # the same cell in another process state and run folder gives the same pretrained model
    torch.manual_seed(2)
    again = dataclasses.replace(options, run_name="again", cells=(PRETRAIN,))
    main.run_paper("invglow", ["tables"], again)
    first, second = (
        torch.load(tmp_path / "invglow/tables" / name / "tiny-pretrain/seed-0" / FINAL_MODEL) for name in ("r", "again")
    )
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_shards_give_the_rows_of_an_unsharded_run(tiny_config: InvGlowConfig, tmp_path: Path) -> None:
    common = {"output": tmp_path, "progress": False, "device": "cpu"}
    whole = main.run_paper("invglow", ["tables"], main.RunOptions(run_name="whole", **common))
    main.run_paper(
        "invglow", ["tables"], main.RunOptions(run_name="r", cells=("invglow/tables/tiny-pretrain*",), **common)
    )
    for shard in ("1/2", "2/2"):
        main.run_paper("invglow", ["tables"], main.RunOptions(run_name="r", shard=shard, **common))
    run_dir = tmp_path / "invglow" / "tables" / "r"
    assert f"- run folder: {run_dir} (saved " in main.report(run_dir)
    rows = [
        json.loads((tmp_path / "invglow/tables" / name / RESULTS_FILE).read_text())["rows"] for name in ("r", "whole")
    ]
    assert rows[0] == rows[1] and len(whole) == len(rows[0])

    # every cell of every table once: 2 sets × 2 OOD sets each; grey: each set against the other; Serra
    cells = {(row.table, row.row, row.column): row for row in whole}
    assert len(cells) == len(whole) == (6 + 1) * 4 + 4 * 2 + 4
    assert all(0.0 <= row.ours <= 100.0 and row.seeds == (0,) and row.scale == "demo" for row in whole)
    serra = cells[(paper.SERRA_TABLE, paper.SERRA_S, paper.ORIGINAL_CODE)]
    assert serra.paper_value == 78.4 and serra.note.endswith("; original repo notebook output 0.7837")
    assert cells[(paper.SERRA_TABLE, paper.SERRA_PNG, paper.SERRA_PAPER)].paper_value == 7.7
    ratio = cells[(paper.UNSUPERVISED_TABLE, paper.RATIO, "shapes → digits-rgb")]
    result = json.loads((run_dir / "finetune-shapes/plain/seed-0" / CELL_RESULT).read_text())["values"]
    assert ratio.ours == result["AUROC-ratio/digits-rgb"] and ratio.paper_value is None


def _results(config_: InvGlowConfig, value_of: Callable[[str, str], float]) -> dict[str, dict[str, float]]:
    """Every cell's values as the table reads them, ``value_of(cell id, value name)``."""
    results = {}
    for cell in [*experiments.tables_cells(config_), *experiments.local_semantic_cells(config_)]:
        names = [f"AUROC-{kind}/{ood}" for kind in ("raw", "ratio", "final_scale") for ood in config_.data.ood]
        names += [f"AUROC-{kind}/{ood}" for kind in ("raw", "ratio", "final_scale") for ood in config_.grey.ood]
        names += ["serra/S", "serra/PNG", "spearman", "bpd"]
        results[cell.id] = {name: value_of(cell.id, name) for name in names}
    return results


def _plus_seed(value: float) -> Callable[[str, str], float]:
    """``value`` + the cell's seed, whatever the value's name."""
    return lambda cell_id, _: value + int(cell_id.rsplit("-", 1)[1])


def test_tables_are_the_mean_and_std_over_seeds_beside_the_paper() -> None:
    resolved = dataclasses.replace(TINY, scale="demo", seeds=(1, 4))
    rows = experiments.tables_table(resolved, _results(resolved, _plus_seed(50.0)))
    assert all(row.ours == 52.5 and row.spread == 1.5 and row.n == 2 for row in rows)  # std, ddof 0: |4 − 1| / 2
    assert {row.spread_kind for row in rows} == {"std (ddof 0) over seeds"}
    tables = {paper.UNSUPERVISED_TABLE, paper.SUPERVISED_TABLE, paper.GREY_TABLE, paper.SERRA_TABLE}
    assert {row.table for row in rows} == tables
    tiny = "generated Tiny-format images for 80M Tiny Images"
    rgb = "stand-ins: shapes for CIFAR-10, digits-rgb for SVHN"
    notes = {row.table: row.note for row in rows}
    assert notes[paper.UNSUPERVISED_TABLE] == notes[paper.SUPERVISED_TABLE] == f"{rgb}, {tiny}"
    assert notes[paper.GREY_TABLE] == f"stand-ins: shapes for Fashion-MNIST, digits-rgb for MNIST, {tiny}"
    assert notes[paper.SERRA_TABLE].startswith(f"{rgb}, {tiny}; ")
    local = experiments.local_semantic_table(resolved, _results(resolved, _plus_seed(0.5)))
    assert len(local) == 2 * (3 * 2 + 2 + 3)  # per set: 3 models × 2 pairs, ρ of local and dense, bpd of each
    assert all(row.ours == 3.0 and row.paper_value is None and row.table == paper.LOCAL_SEMANTIC_TABLE for row in local)
    assert {row.note for row in local} == {f"{rgb}; {paper.NOT_RETRIEVED}"}  # no Tiny model: trained from scratch
    with pytest.raises(KeyError):
        paper.published(paper.UNSUPERVISED_TABLE, "no such row", "cifar10 → svhn")


# (table, row) → (finetuned variant, score) as the original's pipeline scores them (reference note §4.1), plus the
# margin-loss model's raw likelihood, an extra row
ROW_SOURCES = {
    (paper.UNSUPERVISED_TABLE, paper.RAW): ("plain", "raw"),
    (paper.UNSUPERVISED_TABLE, paper.RATIO): ("plain", "ratio"),
    (paper.UNSUPERVISED_TABLE, paper.RATIO_OUTLIER_LOSS): ("outlier-loss", "ratio"),
    (paper.UNSUPERVISED_TABLE, paper.FINAL_SCALE): ("plain", "final_scale"),
    (paper.UNSUPERVISED_TABLE, paper.MARGIN_LOSS): ("margin-loss", "ratio"),
    (paper.UNSUPERVISED_TABLE, paper.MARGIN_LOSS_RAW): ("margin-loss", "raw"),
    (paper.SUPERVISED_TABLE, paper.SUPERVISED_RATIO): ("supervised", "ratio"),
    (paper.GREY_TABLE, paper.RAW): ("plain", "raw"),
    (paper.GREY_TABLE, paper.RATIO): ("plain", "ratio"),
    (paper.GREY_TABLE, paper.RATIO_OUTLIER_LOSS): ("outlier-loss", "ratio"),
    (paper.GREY_TABLE, paper.FINAL_SCALE): ("plain", "final_scale"),
}


def test_rows_are_labelled_as_they_ran_and_only_demo_tables_name_stand_ins() -> None:
    assert experiments.row_label(DEMO, paper.FINAL_SCALE) == "final-scale (2×2) contribution"  # 16×16, 3 scales
    assert experiments.row_label(DEMO, paper.LOCAL_GLOW) == "local Glow (16 patches, 4×4 at 16×16)"
    labels = [*paper.UNSUPERVISED_ROWS, *paper.LOCAL_SEMANTIC_ROWS]
    assert [experiments.row_label(config.PAPER, row) for row in labels] == labels
    assert experiments.demo_data(config.PAPER, experiments.RGB) == experiments.demo_data(config.PAPER, experiments.GREY)
    assert experiments.demo_data(config.PAPER, experiments.GREY) == ""


def test_each_row_reads_its_variant_and_score() -> None:
    resolved = dataclasses.replace(TINY, scale="demo")
    counter = itertools.count()
    results = _results(resolved, lambda *_: float(next(counter)))  # a different value in every cell
    rows = [row for row in experiments.tables_table(resolved, results) if row.table != paper.SERRA_TABLE]
    paper_rows = {experiments.row_label(resolved, row): row for _, row in ROW_SOURCES}  # final scale: 1×1 at 8×8
    assert {(row.table, paper_rows[row.row]) for row in rows} == set(ROW_SOURCES)
    for row in rows:
        variant, kind = ROW_SOURCES[(row.table, paper_rows[row.row])]
        in_name, ood = row.column.split(" → ")
        grey = "-grey" if row.table == paper.GREY_TABLE else ""
        cell = f"invglow/tables/finetune{grey}-{in_name}/{variant}/seed-0"
        assert row.ours == results[cell][f"AUROC-{kind}/{ood}"], (row.table, row.row, row.column)
    margin = [row for row in rows if row.row in (paper.MARGIN_LOSS, paper.MARGIN_LOSS_RAW)]
    assert len(margin) == 2 * 2 * 2  # two rows × 2 sets × 2 OOD sets each
    assert "raw likelihood" in paper.MARGIN_LOSS_RAW and "ratio to Tiny" in paper.MARGIN_LOSS


@pytest.mark.parametrize("scaling", ["per-dimension", "original-code"])
def test_grey_outlier_loss_is_scaled_by_dimension_or_as_the_original_code(scaling: config.GreyOutlierScaling) -> None:
    paper_config = dataclasses.replace(config.PAPER, grey_outlier_scaling=scaling)
    grey = experiments.group_config(paper_config, experiments.GREY)  # what the grey cells finetune with
    assert grey.glow.channels * grey.glow.image_size**2 == 1 * 32 * 32
    factor = (1 * 32 * 32) / (3 * 32 * 32) if scaling == "per-dimension" else 1.0  # D_grey / D_rgb, or as the code
    outlier = experiments.outlier_loss("outlier-loss", grey.finetune)
    assert outlier is not None and outlier.kind == "class"
    assert outlier.weight == pytest.approx(6000.0 * factor)  # the original main.py's λ and T
    assert outlier.temperature == pytest.approx(1000.0 * factor)
    unscaled = dataclasses.replace(grey.finetune, outlier_weight=6000.0, outlier_temperature=1000.0)
    assert unscaled == paper_config.finetune == TrainConfig()  # nothing else changes, and RGB keeps λ and T


def test_demo_grey_outlier_loss_is_scaled_by_both_resolution_and_channels() -> None:
    grey = config.grey_config(DEMO)
    assert grey.finetune.outlier_weight == pytest.approx(6000.0 * (1 * 16 * 16) / (3 * 32 * 32))
    assert grey.finetune.outlier_temperature == pytest.approx(1000.0 * (1 * 16 * 16) / (3 * 32 * 32))


def test_cifar_free_tiny_is_a_paper_scale_switch() -> None:
    assert not config.PAPER.exclude_cifar_from_tiny  # the manuscript's results kept CIFAR in Tiny
    with pytest.raises(ValueError, match="exclude_cifar_from_tiny"):
        dataclasses.replace(DEMO, exclude_cifar_from_tiny=True)


def test_configure_applies_seeds_and_epochs_to_every_training() -> None:
    from common.cells import Settings

    resolved = config.configure(Settings("demo", seeds=(3, 5), epochs=7))
    assert resolved.scale == "demo" and resolved.seeds == (3, 5)
    assert resolved.pretrain.epochs == resolved.finetune.epochs == resolved.local_semantic.train.epochs == 7
    assert config.configure(Settings("paper")) == dataclasses.replace(config.PAPER, scale="paper")
    assert config.cpu_threads(resolved) == config.DEMO_THREADS and config.cpu_threads(config.PAPER) is None
    assert config.configure(Settings("demo")).pretrain == DEMO.pretrain


@pytest.mark.slow
def test_demo_scale_tables_run_and_the_ratio_detects_what_raw_likelihood_misses(tmp_path: Path) -> None:
    rows = main.run_paper("invglow", ["tables"], main.RunOptions(output=tmp_path, progress=False, device="cpu"))
    ratio = [row for row in rows if row.row == paper.RATIO and row.column == "shapes → digits-rgb"]
    assert ratio and ratio[0].ours > 80.0  # the paper's main point: the ratio to Tiny detects what raw lp misses
    assert DEMO.data.in_distribution[0] == "shapes" and all(math.isfinite(row.ours) for row in rows)
