"""A small paper under the cell contract, for testing the runner and the command line without a real paper.

``table1`` has a "pretraining" cell per seed and, per (method, seed), a cell that needs it; ``table9`` exists at the
paper scale only. A cell's value depends on its seed and its prerequisite's value, so a wrong order, a missing
prerequisite or a mixed-up seed changes the table. ``CALLS`` records every cell run in this process;
``TOY_CELL_HOOK`` (an environment variable naming a file) makes a cell wait for that file to exist, so tests can
hold a cell running while another process looks at it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from common.cells import Cell, Cost, Experiment, Paper, RunContext, Settings
from common.results import Published, ResultRow, Spread, summary_row

CALLS: list[str] = []
METHODS = ("alpha", "beta")
SEEDS = (0, 1)
SPREAD = Spread(statistic="std", ddof=1, over="seeds")
TABLE = "Table 1: toy AUROC (%)"


@dataclass(frozen=True)
class ToyConfig:
    seeds: tuple[int, ...]
    epochs: int


def configure(settings: Settings) -> ToyConfig:
    return ToyConfig(seeds=settings.seeds or SEEDS, epochs=settings.epochs or 3)


def _pretrain(seed: int, context: RunContext) -> dict[str, Any]:
    CALLS.append(context.cell_id)
    _wait_for_hook()
    context.folder.mkdir(parents=True, exist_ok=True)
    (context.folder / "model.txt").write_text(str(seed * 10 + context.config.epochs))
    return {"base": seed * 10 + context.config.epochs}


def _method(method: str, seed: int, context: RunContext) -> dict[str, Any]:
    CALLS.append(context.cell_id)
    _wait_for_hook()
    pretrained = f"toy/table1/pretrain/seed-{seed}"
    base = context.result_of(pretrained)["base"]
    assert (context.folder_of(pretrained) / "model.txt").read_text() == str(base)
    return {"AUROC": 0.5 + 0.01 * base + (0.1 if method == "beta" else 0.0), "scale": context.settings.scale}


def _wait_for_hook() -> None:
    hook = os.environ.get("TOY_CELL_HOOK")
    if hook:
        Path(hook + ".started").touch()
        while not Path(hook).exists():
            time.sleep(0.01)


def cells(config: ToyConfig) -> list[Cell]:
    pretraining = Cost(steps=10 * config.epochs, images=40 * config.epochs)
    found = [Cell(f"toy/table1/pretrain/seed-{s}", partial(_pretrain, s), cost=pretraining) for s in config.seeds]
    found += [
        Cell(f"toy/table1/{m}/seed-{s}", partial(_method, m, s), (f"toy/table1/pretrain/seed-{s}",), Cost(images=50))
        for m in METHODS
        for s in config.seeds
    ]
    return found


def table(config: ToyConfig, results: Mapping[str, Mapping[str, Any]]) -> list[ResultRow]:
    return [
        summary_row(
            [100 * results[f"toy/table1/{m}/seed-{s}"]["AUROC"] for s in config.seeds],
            SPREAD,
            Published(90.0, 1.5) if m == "alpha" else Published(None),
            paper="toy",
            table=TABLE,
            row=m,
            column="AUROC",
            seeds=config.seeds,
        )
        for m in METHODS
    ]


def _paper_only_cells(config: ToyConfig) -> list[Cell]:
    return [Cell("toy/table9/only/seed-0", lambda context: {"x": 1.0})]


PAPER = Paper(
    "toy",
    "Toy et al. 2024",
    (
        Experiment("table1", "the toy table", configure, cells, table, data_parallel=True),
        Experiment("table9", "needs the real data", configure, _paper_only_cells, lambda c, r: [], scales=("paper",)),
    ),
)
