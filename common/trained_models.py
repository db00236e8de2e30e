"""Evaluating trained models instead of training them: ``python main.py PAPER --checkpoints DIR``.

A run whose settings name a folder of trained models (``Settings.checkpoints``) trains nothing. Each cell that
trains a model (:func:`trains`: its cost counts training steps) loads the model it would have trained from DIR
(:func:`load_trained`) and runs its paper's own final evaluation on it; its result names the file it loaded
(:data:`FROM_CHECKPOINT`). The cells that train nothing run as they always do.

Where a cell's model is looked for (:func:`find`), in order:

1. this suite's runs at or under DIR (one run folder, or any folder above runs, e.g. a runs root) of the same paper,
   experiment, scale and smoke setting, newest first (their ``--set`` overrides may differ: that is a re-scoring).
   In the cell's folder of such a run, once the cell has finished (its ``result.json``): :data:`FINAL_MODEL`, or
   else the newest checkpoint (runs from before every training cell left its ``model.pt``);
2. the original code's files, through the experiment's :class:`OriginalModels` readers. Each paper's readers look
   in the cell's :func:`original_folder`, ``DIR/<experiment>/<cell folder>`` (the cell id without its paper), for
   the file as the original code names it (:func:`last_numbered` picks the newest of several).

Before anything runs, :func:`search` sorts the cells about to run: those whose models are missing, and those that
need a cell that cannot run; the others run. :func:`missing_listing` says which file was looked for where.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.cells import Cell, RunContext, Settings, cell_folder, is_finished
from common.errors import DataError, UsageError
from common.handlers import CHECKPOINT_DIR, latest_checkpoint, resume_from
from common.run import CONFIG_FILE
from common.runner import Plan, read_recorded_run, unfinished_cells

FINAL_MODEL = "model.pt"
"""The state_dict of the model a cell trained, in the cell's folder (every cell that trains a model writes it)."""
FROM_CHECKPOINT = "from_checkpoint"
"""The key of a cell's values that names the file of the trained model it was evaluated on."""
LOOKED_FOR = f"<cell folder>/{FINAL_MODEL} (or <cell folder>/{CHECKPOINT_DIR}/checkpoint_<N>.pt) of a finished cell"


@dataclass(frozen=True)
class OriginalModels:
    """A reader of the original code's trained-model files for the cells of one experiment.

    Attributes:
        what: the files, as the missing-models listing names them (e.g. "the original code's Glow files, *.th").
        find: (cell id, DIR) → the file under DIR of that cell's model; None when DIR has none.
        load: (file, cell id, the run's resolved configuration) → this suite's model of the cell holding the file's
            weights: ``<paper>/original_checkpoints.py``'s ``load_original`` given the cell's part of the
            configuration. Its state_dict is loaded into the model the cell builds.
    """

    what: str
    find: Callable[[str, Path], Path | None]
    load: Callable[[Path, str, Any], nn.Module]


@dataclass(frozen=True)
class TrainedModel:
    """A cell's trained model: its file, and how to load it into the cell's untrained model."""

    path: Path
    load_into: Callable[[nn.Module], None]


def original_folder(root: Path, cell_id: str) -> Path:
    """Where the original code's file of cell ``cell_id`` is looked for under ``root``: ``<experiment>/<cell
    folder>``, the cell id without its paper (``invglow/tables/finetune-shapes/plain/seed-0`` →
    ``root/tables/finetune-shapes/plain/seed-0``)."""
    return Path(root) / cell_id.split("/")[1] / cell_folder(Path(), cell_id)


def last_numbered(paths: Iterable[Path]) -> Path | None:
    """The path of ``paths`` whose name has the highest numbers, compared as integers from left to right
    (``10_model.th`` after ``9_model.th``, ``epoch=10.ckpt`` after ``epoch=09.ckpt``), ties by name; None if none."""
    return max(paths, key=lambda path: ([int(n) for n in re.findall(r"\d+", path.name)], path.name), default=None)


def trains(cell: Cell) -> bool:
    """Whether ``cell`` trains a model (its cost counts optimiser steps)."""
    return cell.cost.steps > 0


def source_runs(root: Path, paper: str, experiment: str, settings: Settings) -> list[Path]:
    """The run folders at or under ``root`` of ``paper/experiment`` at the scale and smoke setting of ``settings``,
    newest first."""
    found = []
    for path in Path(root).rglob(CONFIG_FILE):
        try:
            recorded = read_recorded_run(path.parent)
        except UsageError:
            continue  # not the config.json of a run
        same_experiment = (recorded.paper, recorded.experiment) == (paper, experiment)
        if same_experiment and (recorded.settings.scale, recorded.settings.smoke) == (settings.scale, settings.smoke):
            found.append(recorded)
    return [recorded.folder for recorded in sorted(found, key=lambda r: (r.saved, str(r.folder)), reverse=True)]


def in_run(run_dir: Path, cell_id: str) -> TrainedModel | None:
    """The model cell ``cell_id`` trained in run ``run_dir``: :data:`FINAL_MODEL`, else its newest checkpoint; None
    when the cell has not finished there or left neither."""
    if not is_finished(run_dir, cell_id):
        return None
    folder = cell_folder(run_dir, cell_id)
    if (folder / FINAL_MODEL).is_file():
        return TrainedModel(folder / FINAL_MODEL, partial(_load_weights, folder / FINAL_MODEL))
    newest = latest_checkpoint(folder)
    return None if newest is None else TrainedModel(newest, partial(_load_checkpoint, newest))


def find(
    cell_id: str, runs: Sequence[Path], root: Path, originals: Sequence[OriginalModels], config: Any
) -> TrainedModel | None:
    """The trained model of cell ``cell_id``: from the first of ``runs`` that has it, else from the first reader of
    ``originals`` that finds its file under ``root`` (loaded with the run's ``config``); None if none has it."""
    for run_dir in runs:
        if (found := in_run(run_dir, cell_id)) is not None:
            return found
    for original in originals:
        if (path := original.find(cell_id, root)) is not None:
            return TrainedModel(path, partial(_load_original, original, path, cell_id, config))
    return None


def load_trained(model: nn.Module, ctx: RunContext, originals: Sequence[OriginalModels] = ()) -> dict[str, str]:
    """Load the model that ``ctx``'s cell trained, found under ``ctx.settings.checkpoints``, into ``model``.

    Returns:
        ``{FROM_CHECKPOINT: its file}``, for the cell's values.

    Raises:
        DataError: no model of the cell is there (the run's :func:`search` lists them before any cell runs), or the
            file does not fit ``model`` (a model of another configuration) or cannot be read.
    """
    root = Path(str(ctx.settings.checkpoints))
    runs = source_runs(root, ctx.paper, ctx.experiment, ctx.settings)
    found = find(ctx.cell_id, runs, root, originals, ctx.config)
    if found is None:
        raise DataError(root, f"holds no trained model of cell {ctx.cell_id}: looked for {LOOKED_FOR}")
    try:
        found.load_into(model)
    except DataError:
        raise  # names its file already (a damaged checkpoint)
    except (RuntimeError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as error:
        raise DataError(found.path, f"is not a model of cell {ctx.cell_id} as configured here ({error})") from None
    return {FROM_CHECKPOINT: str(found.path)}


def _load_weights(path: Path, model: nn.Module) -> None:
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _load_checkpoint(path: Path, model: nn.Module) -> None:
    resume_from(path, {"model": model})


def _load_original(original: OriginalModels, path: Path, cell_id: str, config: Any, model: nn.Module) -> None:
    model.load_state_dict(original.load(path, cell_id, config).state_dict())


# ----------------------------------------------------------------------------------------------- before a run
@dataclass(frozen=True)
class Search:
    """Where the trained models of an experiment's cells about to run were looked for, and what is missing.

    Attributes:
        plan: the experiment.
        runs: its runs searched, newest first.
        missing: the cells that train a model and whose model was not found.
        blocked: the other cells that need one of those (directly or not), which cannot run either.
    """

    plan: Plan
    runs: tuple[Path, ...]
    missing: tuple[str, ...]
    blocked: tuple[str, ...]

    def runnable(self, cells: Sequence[Cell]) -> list[Cell]:
        """The cells of ``cells`` that can run: neither missing nor blocked."""
        left_out = {*self.missing, *self.blocked}
        return [cell for cell in cells if cell.id not in left_out]


def search(run_plan: Plan, cells: Sequence[Cell], run_dir: Path | None) -> Search:
    """Look for the trained model of each cell that trains among ``cells`` and their unfinished prerequisites
    (``run_dir``: the run folder, None for a new run), under ``run_plan.settings.checkpoints``.

    Raises:
        UsageError: no cell of the experiment trains a model (there is nothing to load).
    """
    root, settings = Path(str(run_plan.settings.checkpoints)), run_plan.settings
    name = f"{run_plan.paper.name}/{run_plan.experiment.name}"
    if not any(trains(cell) for cell in run_plan.cells):
        raise UsageError(
            f"--checkpoints {root}: no cell of {name} trains a model, so there is none to load; run it without "
            "--checkpoints"
        )
    runs = source_runs(root, run_plan.paper.name, run_plan.experiment.name, settings)
    originals = run_plan.experiment.original_models
    missing: list[str] = []
    blocked: list[str] = []
    for cell in unfinished_cells(run_plan, cells, run_dir):  # each after the cells it needs
        if trains(cell) and find(cell.id, runs, root, originals, run_plan.config) is None:
            missing.append(cell.id)
        elif any(need in missing or need in blocked for need in cell.needs):
            blocked.append(cell.id)
    return Search(run_plan, tuple(runs), tuple(missing), tuple(blocked))


def missing_listing(searches: Sequence[Search]) -> str:
    """One block naming, per experiment, where its models were looked for and, per missing cell, the file it looked
    for in its folder, then the cells that need them; "" when nothing is missing."""
    missing = sum(len(found.missing) for found in searches)
    if not missing:
        return ""
    root = searches[0].plan.settings.checkpoints  # the job's: every experiment of a command has its settings
    lines = [f"missing trained models: {missing} cell(s) that train a model have none under {root}"]
    for found in searches:
        if found.missing or found.blocked:
            lines += _experiment_lines(found)
    return "\n".join(lines)


def _experiment_lines(found: Search) -> list[str]:
    """The lines of one experiment in :func:`missing_listing`."""
    run_plan, root = found.plan, Path(str(found.plan.settings.checkpoints))
    name = f"{run_plan.paper.name}/{run_plan.experiment.name}"
    kind = f"scale {run_plan.settings.scale}" + (", smoke" if run_plan.settings.smoke else "")
    runs = ", ".join(map(str, found.runs)) or "none"
    originals = "".join(f"; then for {original.what}" for original in run_plan.experiment.original_models)
    lines = [f"  {name} ({kind}): looked for {LOOKED_FOR} in its runs at or under {root}: {runs}{originals}"]
    lines += [f"    {cell_id}: {_relative(cell_id)}/{FINAL_MODEL}" for cell_id in found.missing]
    if found.blocked:
        lines.append(f"    not run either, they need a cell above: {', '.join(found.blocked)}")
    return lines


def _relative(cell_id: str) -> str:
    """The cell's folder in its run, ``<id after paper/experiment>``."""
    return cell_folder(Path(), cell_id).as_posix()
