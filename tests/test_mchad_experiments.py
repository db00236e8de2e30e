"""The MCHAD main table as cells: ids, running one cell, shards merging bit for bit, the table's statistics and its
published numbers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from common.errors import MissingDataError
from common.metrics import ood_metrics
from common.results import Published
from mchad import experiments, paper
from mchad.config import CONFIGS, DEMO_DATASETS, DEMO_METHODS, DEMO_TRAIN, MainTableConfig

DIGITS = DEMO_DATASETS[0]
METHODS = {method.name: method for method in DEMO_METHODS[DIGITS.name]}
TINY = MainTableConfig(
    dataclasses.replace(DEMO_TRAIN, noise_count=40, outlier_count=200, eval_batch_size=256),
    (dataclasses.replace(DIGITS, epochs=1, max_batches=5),),
    {DIGITS.name: DEMO_METHODS[DIGITS.name]},
    CONFIGS["demo"].paper_analogue,
    seeds=(0,),
)
G_MCHAD = "mchad/main_table/digits-0-5/g-mchad/seed-0"


def tiny_demo(monkeypatch: pytest.MonkeyPatch, methods: tuple[str, ...] | None = None) -> None:
    """The demo scale shrunk to 1 epoch of 5 batches (and to ``methods`` if given), with an empty image cache."""
    chosen = DEMO_METHODS[DIGITS.name] if methods is None else tuple(METHODS[name] for name in methods)
    monkeypatch.setitem(CONFIGS, "demo", dataclasses.replace(TINY, methods={DIGITS.name: chosen}))
    monkeypatch.setattr(experiments, "_images", {})


def options(tmp_path: Path, **kwargs: object) -> main.RunOptions:
    return main.RunOptions(output=tmp_path, progress=False, device="cpu", **kwargs)


def finished_cells(run_dir: Path) -> list[str]:
    return sorted(str(path.parent.relative_to(run_dir)) for path in run_dir.rglob("result.json"))


def rows_of(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["rows"]


@pytest.mark.parametrize(("scale", "count"), [("demo", 8), ("paper", 3 * 7 * 21)])
def test_cell_ids_are_unique_stable_and_need_only_listed_cells(scale: str, count: int) -> None:
    listing = main.listed_cells("mchad", options=main.RunOptions(scale=scale))
    assert listing == main.listed_cells("mchad", options=main.RunOptions(scale=scale))
    ((_, cells),) = listing
    ids = [cell.id for cell, _ in cells]
    assert len(ids) == len(set(ids)) == count
    assert all(state == "pending" and not cell.needs for cell, state in cells)  # no cell needs another
    if scale == "paper":
        assert "mchad/main_table/cifar10/g-mchad/seed-3" in ids and "mchad/main_table/cifar100/ii/seed-21" in ids
    else:
        assert G_MCHAD in ids and "mchad/main_table/digits-0-5/softmax/seed-0" in ids


def test_one_cell_runs_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_demo(monkeypatch)
    rows = main.run_paper("mchad", ["main_table"], options(tmp_path, run_name="r", cells=(G_MCHAD,)))
    run_dir = tmp_path / "mchad" / "main_table" / "r"
    assert rows == [] and finished_cells(run_dir) == ["digits-0-5/g-mchad/seed-0"]
    assert list((run_dir / "digits-0-5" / "g-mchad" / "seed-0").glob("events.out.tfevents.*"))
    values = json.loads((run_dir / "digits-0-5" / "g-mchad" / "seed-0" / "result.json").read_text())["values"]
    assert set(values["scores"]["distance"]) == {name for name, _ in DIGITS.ood_sets}
    assert values["skipped_steps"] == 0 and values["steps"] > 0  # the training's counts are in the result


def test_shards_and_report_give_the_table_of_an_unsharded_run_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_demo(monkeypatch, ("G-MCHAD", "Softmax"))  # paired outlier batches; no centers and two scores
    main.run_paper("mchad", ["main_table"], options(tmp_path / "whole", run_name="whole"))
    monkeypatch.setattr(experiments, "_images", {})
    sharded = tmp_path / "sharded" / "mchad" / "main_table" / "r"
    torch.manual_seed(1)  # as another process would, each shard starts from another random state
    assert main.run_paper("mchad", ["main_table"], options(tmp_path / "sharded", run_name="r", shard="1/2")) == []
    assert finished_cells(sharded) == ["digits-0-5/g-mchad/seed-0"]
    torch.manual_seed(2)
    main.run_paper("mchad", ["main_table"], options(tmp_path / "sharded", run_name="r", shard="2/2"))
    (sharded / "results.json").unlink()  # report assembles it again from the cell results
    assert "G-MCHAD" in main.report(tmp_path / "sharded")
    whole = rows_of(tmp_path / "whole" / "mchad" / "main_table" / "whole")
    assert len(whole) == 2 * (5 + 3) + 5 + 3 and rows_of(sharded) == whole


def test_demo_table_runs_every_method_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_demo(monkeypatch)
    rows = main.run_paper("mchad", ["main_table"], options(tmp_path))
    main_rows = [row for row in rows if row.table == paper.TABLE_NAME]
    assert {row.row for row in main_rows} == {f"{DIGITS.name} {name}" for name in METHODS if name != "Softmax"} | {
        f"{DIGITS.name} Softmax (msp)",
        f"{DIGITS.name} Softmax (energy)",
    }
    assert all(row.ours is not None and np.isfinite(row.ours) for row in rows)
    auroc = next(row for row in main_rows if row.row.endswith(" MCHAD") and row.column == "AUROC")
    assert (auroc.paper_value, auroc.paper_spread) == (99.22, 0.04)  # the SVHN row stands beside the digits demo
    assert auroc.spread_kind == "SEM (ddof 1) over seeds × OOD sets" and auroc.n == 3
    per_set = [row for row in rows if row.table == paper.PER_SET_TABLE_NAME]
    assert {row.column for row in per_set} == {name for name, _ in DIGITS.ood_sets}
    assert {row.spread_kind for row in per_set} == {"SEM (ddof 1) over seeds"}


def test_table_takes_mean_and_sem_over_seeds_times_ood_sets() -> None:
    config = dataclasses.replace(TINY, methods={DIGITS.name: (METHODS["MCHAD"],)}, seeds=(4, 7))
    sets = [name for name, _ in DIGITS.ood_sets]
    aurocs = {4: [60.0, 70.0, 95.0], 7: [50.0, 80.0, 90.0]}
    results = {}
    for seed in (4, 7):
        per_set = {
            name: dict.fromkeys(experiments.COLUMN_KEYS, value) for name, value in zip(sets, aurocs[seed], strict=True)
        }
        results[f"mchad/main_table/digits-0-5/mchad/seed-{seed}"] = {
            "accuracy": 90.0 + seed,
            "scores": {"distance": per_set},
        }
    rows = {(row.table, row.column): row for row in experiments.table(config, results)}
    pooled = aurocs[4] + aurocs[7]
    auroc = rows[paper.TABLE_NAME, "AUROC"]
    assert auroc.ours == pytest.approx(np.mean(pooled)) and auroc.n == 6
    assert auroc.spread == pytest.approx(np.std(pooled, ddof=1) / math.sqrt(6))
    accuracy = rows[paper.TABLE_NAME, "Accuracy"]  # repeated in each (seed, OOD set) row, as the notebook
    assert accuracy.ours == pytest.approx(95.5) and accuracy.spread == pytest.approx(
        np.std([94] * 3 + [97] * 3, ddof=1) / math.sqrt(6)
    )
    uniform = rows[paper.PER_SET_TABLE_NAME, "Uniform"]
    assert (uniform.ours, uniform.n) == (75.0, 2) and uniform.spread == pytest.approx(5.0)
    assert auroc.seeds == (4, 7) and auroc.note == uniform.note  # the SVHN row beside the digits: said in both tables
    assert auroc.note.startswith("stand-ins: Digits 0-5 for SVHN, Held-out digits 6-9 for Texture/")
    assert "outliers" not in auroc.note  # MCHAD trains without them


def test_published_numbers_carry_the_manuscripts_spread() -> None:
    assert paper.published(paper.TABLE_NAME, "SVHN MCHAD", "AUROC") == Published(99.22, 0.04)
    assert paper.published(paper.TABLE_NAME, "CIFAR100 G-CAC", "FPR95") == Published(66.95, 1.85)
    assert paper.published(paper.TABLE_NAME, "SVHN Softmax (msp)", "AUROC") == Published(None)
    assert paper.published(paper.PER_SET_TABLE_NAME, "CIFAR10 MCHAD", "Texture") == Published(93, None)
    assert paper.published(paper.PER_SET_TABLE_NAME, "SVHN MCHAD", "Uniform") == Published(None)  # "≈ 100"
    with pytest.raises(KeyError, match="unknown table"):
        paper.published("Table 9", "SVHN MCHAD", "AUROC")


def test_paper_aupr_names_follow_the_old_pytorch_ood_convention() -> None:
    # The paper's "AUPR-IN" has the OOD samples as positives (mchad.md §3.2): for uninformative scores it sits at
    # the OOD prevalence (as II's 27.95 on SVHN), and "AUPR-OUT" at the ID prevalence.
    generator = torch.Generator().manual_seed(0)
    is_ood = torch.arange(1100) >= 1000
    metrics = {"accuracy": 0.5, "steps": 9, "skipped_steps": 0}
    metrics["distance"] = {"set": ood_metrics(torch.rand(1100, generator=generator), is_ood)}
    values = experiments.cell_values(metrics, METHODS["MCHAD"])
    assert values["scores"]["distance"]["set"]["AUPR-IN"] == pytest.approx(100 * 100 / 1100, abs=4)
    assert values["scores"]["distance"]["set"]["AUPR-OUT"] == pytest.approx(100 * 1000 / 1100, abs=4)
    assert values["accuracy"] == 50.0


def test_paper_scale_without_data_names_the_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    with pytest.raises(MissingDataError, match="svhn"):
        main.run_paper("mchad", ["main_table"], options(tmp_path, scale="paper", seeds=(1,)))


@pytest.mark.slow
def test_full_demo_scale_table(tmp_path: Path) -> None:
    rows = main.run_paper("mchad", [], options(tmp_path))
    accuracy = {row.row: row.ours for row in rows if row.column == "Accuracy"}
    assert accuracy[f"{DIGITS.name} MCHAD"] > 85 and accuracy[f"{DIGITS.name} CAC"] > 85
