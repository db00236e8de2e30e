"""A small paper whose cells train models, for testing ``--checkpoints`` (evaluation only) without a real paper.

``table``: per seed, a cell that "trains" a 1×1 linear model (its weight becomes seed + 1) and leaves it in
``model.pt``, or with ``--checkpoints`` loads it (``common.trained_models.load_trained``); and a cell that needs it
and trains nothing: it scores with that ``model.pt``. ``TRAININGS`` records every training run in this process;
``ORIGINAL_MODELS`` (also the experiment's ``original_models``) are the readers of "original" files a test sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from common.cells import Cell, Cost, Experiment, Paper, RunContext, Settings
from common.files import torch_save_atomically
from common.results import Published, ResultRow, Spread, summary_row
from common.trained_models import FINAL_MODEL, OriginalModels, load_trained

TRAININGS: list[str] = []
ORIGINAL_MODELS: tuple[OriginalModels, ...] = ()
TABLE = "Toy table: scores"


@dataclass(frozen=True)
class ToyConfig:
    seeds: tuple[int, ...]


def configure(settings: Settings) -> ToyConfig:
    return ToyConfig(seeds=settings.seeds or (0, 1))


def fit_id(seed: int) -> str:
    return f"toymodels/table/fit/seed-{seed}"


def _fit(seed: int, ctx: RunContext) -> dict[str, Any]:
    model = nn.Linear(1, 1, bias=False)
    source = {}
    if ctx.settings.checkpoints is None:
        TRAININGS.append(ctx.cell_id)
        with torch.no_grad():
            model.weight.fill_(seed + 1.0)
    else:
        source = load_trained(model, ctx, ORIGINAL_MODELS)
    torch_save_atomically(model.state_dict(), ctx.folder / FINAL_MODEL)
    return {"weight": float(model.weight.detach()), **source}


def _score(seed: int, ctx: RunContext) -> dict[str, Any]:
    weights = torch.load(ctx.folder_of(fit_id(seed)) / FINAL_MODEL, weights_only=True)
    return {"score": 10 * float(weights["weight"])}


def cells(config: ToyConfig) -> list[Cell]:
    found = [Cell(fit_id(s), partial(_fit, s), cost=Cost(steps=5)) for s in config.seeds]
    return found + [Cell(f"toymodels/table/score/seed-{s}", partial(_score, s), (fit_id(s),)) for s in config.seeds]


def table(config: ToyConfig, results: Mapping[str, Mapping[str, Any]]) -> list[ResultRow]:
    values = [results[f"toymodels/table/score/seed-{s}"]["score"] for s in config.seeds]
    spread = Spread(statistic="std", ddof=0, over="seeds")
    where = {"paper": "toymodels", "table": TABLE, "row": "toy", "column": "score", "seeds": config.seeds}
    return [summary_row(values, spread, Published(None), **where)]


def _nothing_trained(config: ToyConfig) -> list[Cell]:
    return [Cell("toymodels/fitted/only/seed-0", lambda context: {"x": 1.0})]


PAPER = Paper(
    "toymodels",
    "Toy et al. 2025",
    (
        Experiment("table", "cells that train models", configure, cells, table, original_models=ORIGINAL_MODELS),
        Experiment("fitted", "trains nothing", configure, _nothing_trained, lambda c, r: []),
    ),
)
