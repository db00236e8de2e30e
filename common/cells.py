"""The experiment contract: a table is a set of **cells** that run in any order, on any machine, and merge.

A cell is one training and/or evaluation. It has a stable id of slash-separated parts that starts with its paper
and experiment (``mchad/main_table/cifar10/g-mchad/seed-3``), the ids of the cells whose outputs it needs, and a
function that runs it and returns its named values (metrics, bits/dim, ...). The runner (:mod:`common.runner`)
writes those values atomically to ``<run>/<id after paper/experiment>/result.json``; a cell is finished exactly
when that file exists. An experiment is ``configure`` (the resolved configuration of a scale), ``cells(config)``
and ``table(config, results) -> list[ResultRow]``, so ``main.py`` needs nothing else of a paper.

A cell's function receives a :class:`RunContext`: the resolved configuration, the device, the cell's own folder
(tensorboard events and checkpoints go there; a training resumes from the newest intact checkpoint it finds in
it), progress, and the results and folders of the cells it needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import DataError
from common.results import ResultRow

if TYPE_CHECKING:  # torch and ignite load in seconds: `python main.py --help` imports this module without them
    import torch
    from ignite.handlers import TensorboardLogger

    from common.preflight import DataNeed
    from common.trained_models import OriginalModels

SCALES = ("demo", "paper")
CELL_RESULT = "result.json"
_ID_PART = re.compile(r"[A-Za-z0-9_.+=-]+")


@dataclass(frozen=True)
class Settings:
    """The options that decide what a run computes; recorded in ``config.json`` and restored by ``--resume``.

    ``seeds=None`` and ``epochs=None`` keep the experiment's own settings for the scale; ``smoke`` runs the scale's
    configuration with every training cut to 2 steps and every evaluation to 2 batches per set (:mod:`common.smoke`).
    ``overrides`` are ``KEY=VALUE`` items applied in order to the configuration after those (:mod:`common.overrides`).
    ``checkpoints`` (``--checkpoints DIR``, an absolute folder) makes the run evaluate only: every cell that trains a
    model loads the one it trained from there instead (:mod:`common.trained_models`).
    """

    scale: str = "demo"
    seeds: tuple[int, ...] | None = None
    epochs: int | None = None
    smoke: bool = False
    overrides: tuple[str, ...] = ()
    checkpoints: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", tuple(self.overrides))
        if self.checkpoints is not None:
            object.__setattr__(self, "checkpoints", str(self.checkpoints))  # a Path given from Python
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.seeds is not None:
            if not self.seeds:
                raise ValueError("seeds: give at least one seed")
            bad = [seed for seed in self.seeds if isinstance(seed, bool) or not 0 <= seed < 2**32]
            if bad:
                raise ValueError(f"seeds must be integers in [0, 2**32), got {bad[0]}")
            if len(set(self.seeds)) < len(self.seeds):
                raise ValueError(f"seeds must differ, got {' '.join(map(str, self.seeds))}")
            object.__setattr__(self, "seeds", tuple(self.seeds))

    def as_record(self) -> dict[str, Any]:
        """The settings as JSON values (seeds as a list)."""
        return {
            item.name: list(value) if isinstance(value := getattr(self, item.name), tuple) else value
            for item in fields(self)
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Settings:
        """Settings from :meth:`as_record`'s output; unknown keys are an error."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"unknown settings {', '.join(unknown)}")
        values = dict(record)
        if values.get("seeds") is not None:
            values["seeds"] = tuple(values["seeds"])
        return cls(**values)


@dataclass(frozen=True)
class RunContext:
    """What a cell receives: the run's resolved configuration and where and how it runs.

    ``folder`` is the cell's own folder (its tensorboard events and checkpoints); ``result_of`` and ``folder_of``
    give the values and files of the cells it needs.
    """

    paper: str
    experiment: str
    settings: Settings
    config: Any
    run_dir: Path
    device: torch.device
    progress: bool = True
    cell_id: str = ""

    @property
    def folder(self) -> Path:
        """This cell's folder, ``<run>/<id after paper/experiment>/``."""
        if not self.cell_id:
            raise RuntimeError("the run context is not bound to a cell")
        return self.folder_of(self.cell_id)

    def folder_of(self, cell_id: str) -> Path:
        """The folder of cell ``cell_id`` of this run."""
        return cell_folder(self.run_dir, cell_id)

    def result_of(self, cell_id: str) -> dict[str, Any]:
        """The values cell ``cell_id`` of this run returned (it must be finished)."""
        return read_cell_result(self.run_dir, cell_id)

    def for_cell(self, cell_id: str) -> RunContext:
        """This context bound to cell ``cell_id``."""
        return replace(self, cell_id=cell_id)

    def tensorboard(self) -> TensorboardLogger:
        """A tensorboard logger (tensorboardX) writing into the cell's folder; close it when done."""
        from common.handlers import open_tensorboard

        self.folder.mkdir(parents=True, exist_ok=True)
        return open_tensorboard(self.folder)


CellFunction = Callable[[RunContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Cost:
    """What a cell computes, counted from its configuration and the sizes of its datasets, to size a job.

    Attributes:
        steps: optimiser steps of its training (0: nothing is trained).
        images: images passed through a network, training (each epoch's) and evaluation together.
    """

    steps: int = 0
    images: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.steps + other.steps, self.images + other.images)


@dataclass(frozen=True)
class Cell:
    """One training and/or evaluation of a table.

    Args:
        id: ``<paper>/<experiment>/<part>/...``: slash-separated parts of letters, digits and ``_ . + = -``.
        run: runs the cell with its bound :class:`RunContext`; returns its named values (JSON: numbers, strings,
            lists and mappings of them).
        needs: ids of the cells whose outputs it reads; they run first.
        cost: its training steps and images (``--list-cells`` prints them and their totals).
    """

    id: str
    run: CellFunction = field(compare=False)
    needs: tuple[str, ...] = ()
    cost: Cost = field(default=Cost(), compare=False)

    def __post_init__(self) -> None:
        check_cell_id(self.id)
        object.__setattr__(self, "needs", tuple(self.needs))


def id_part(name: object) -> str:
    """``name`` as one part of a cell id: runs of characters other than letters, digits and ``_.+=-`` become ``-``.

    Example: ``id_part("Held-out digits 6-9")`` is ``"Held-out-digits-6-9"``.
    """
    part = re.sub(r"[^A-Za-z0-9_.+=-]+", "-", str(name)).strip("-")
    if not part or part in {".", ".."}:
        raise ValueError(f"{name!r} has no characters a cell id can keep")
    return part


def check_cell_id(cell_id: str) -> None:
    """Raise ValueError unless ``cell_id`` has at least three parts, each a safe folder name."""
    parts = cell_id.split("/")
    if len(parts) < 3 or any(not _ID_PART.fullmatch(part) or part in {".", ".."} for part in parts):
        raise ValueError(
            f"cell id {cell_id!r}: expected <paper>/<experiment>/<part>[/...], parts of letters, digits and _.+=-"
        )


def cell_folder(run_dir: Path, cell_id: str) -> Path:
    """``<run_dir>/<the id's parts after paper and experiment>``."""
    check_cell_id(cell_id)
    return Path(run_dir).joinpath(*cell_id.split("/")[2:])


def read_cell_result(run_dir: Path, cell_id: str) -> dict[str, Any]:
    """The values of a finished cell; DataError names the file if it is missing or not a cell result."""
    path = cell_folder(run_dir, cell_id) / CELL_RESULT
    try:
        record = json.loads(path.read_text())
        if record["id"] != cell_id:
            raise ValueError(f"it belongs to cell {record['id']!r}")
        return record["values"]
    except FileNotFoundError:
        raise DataError(path, f"cell {cell_id} has not finished (no result file)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(path, f"not a cell result written by this suite ({error})") from None


def is_finished(run_dir: Path, cell_id: str) -> bool:
    """Whether cell ``cell_id`` of the run has written its result."""
    return (cell_folder(run_dir, cell_id) / CELL_RESULT).is_file()


ConfigureFunction = Callable[[Settings], Any]
CellsFunction = Callable[[Any], Sequence[Cell]]
TableFunction = Callable[[Any, Mapping[str, Mapping[str, Any]]], list[ResultRow]]


def _no_batches(config: Any) -> Mapping[str, int]:
    return {}


def _no_threads(config: Any) -> int | None:
    return None


def _no_data(config: Any) -> Sequence[DataNeed]:
    return ()


@dataclass(frozen=True)
class Experiment:
    """One table or figure of a paper as cells.

    Args:
        name: the experiment's name, the second part of its cell ids.
        description: one line for ``python main.py list``.
        configure: the resolved configuration of ``Settings`` (scale, seeds, epochs applied); recorded in
            ``config.json``.
        cells: the cells of a resolved configuration, each after the cells it needs.
        table: the result rows, from the configuration and every cell's values by id.
        scales: the scales the experiment exists at.
        cpu_threads: torch intra-op threads for the cells on a CPU (None: torch's default).
        data_parallel: whether its trainings run data-parallel over several processes (``--nproc-per-node``,
            torchrun): each of its cells is then run by every rank together.
        global_batches: the global batch sizes of its trainings by configuration key; each must be a multiple of
            the number of data-parallel processes, which is checked before any is started.
        data: the dataset and weight files its cells read (:mod:`common.preflight`), each for the cells that read
            it, checked before any cell runs (default: none, e.g. generated sets).
        original_models: readers of the original code's trained-model files, where ``--checkpoints DIR`` also
            looks for a cell's model (:mod:`common.trained_models`; default: this suite's run folders only).
    """

    name: str
    description: str
    configure: ConfigureFunction
    cells: CellsFunction
    table: TableFunction
    scales: tuple[str, ...] = SCALES
    cpu_threads: Callable[[Any], int | None] = _no_threads
    data_parallel: bool = False
    global_batches: Callable[[Any], Mapping[str, int]] = _no_batches
    data: Callable[[Any], Sequence[DataNeed]] = _no_data
    original_models: tuple[OriginalModels, ...] = ()


@dataclass(frozen=True)
class Paper:
    """A reproduced paper: its package name, citation and experiments in the order they are run."""

    name: str
    citation: str
    experiments: tuple[Experiment, ...]

    def experiment(self, name: str) -> Experiment:
        """The experiment called ``name``; a clear error lists the known ones otherwise."""
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        known = ", ".join(e.name for e in self.experiments)
        raise KeyError(f"paper {self.name!r} has no experiment {name!r}; experiments: {known}")


def checked_cells(paper: str, experiment: str, cells: Iterable[Cell]) -> list[Cell]:
    """``cells`` in an order where every cell comes after the cells it needs.

    Raises:
        ValueError: an id is repeated, does not start with ``<paper>/<experiment>/``, or names a prerequisite that
            is not a cell of the experiment, or the prerequisites form a cycle.
    """
    cells = list(cells)
    by_id: dict[str, Cell] = {}
    prefix = f"{paper}/{experiment}/"
    for cell in cells:
        if not cell.id.startswith(prefix):
            raise ValueError(f"cell {cell.id!r} is not under {prefix}")
        if cell.id in by_id:
            raise ValueError(f"cell id {cell.id!r} is declared twice")
        by_id[cell.id] = cell
    ordered: list[Cell] = []
    state: dict[str, str] = {}

    def visit(cell: Cell, path: tuple[str, ...]) -> None:
        if state.get(cell.id) == "done":
            return
        if state.get(cell.id) == "visiting":
            raise ValueError(f"cells need each other in a cycle: {' → '.join((*path, cell.id))}")
        state[cell.id] = "visiting"
        for need in cell.needs:
            if need not in by_id:
                raise ValueError(f"cell {cell.id!r} needs {need!r}, which is not a cell of {prefix[:-1]}")
            visit(by_id[need], (*path, cell.id))
        state[cell.id] = "done"
        ordered.append(cell)

    for cell in cells:
        visit(cell, ())
    return ordered
