"""Running cells: run folders and their ``config.json``, selection (``--cells``, ``--shard``), locks, tables.

A run folder is ``<runs root>/<paper>/<experiment>/<run>/``. Its ``config.json`` is written once, when the folder is
first used, with the paper, the experiment, the :class:`~common.cells.Settings` and the resolved configuration; any
later use of the folder (``--resume``, another shard, a second machine on a shared file system) must ask for the
same paper, experiment and settings. Each cell lives in ``<run>/<id after paper/experiment>/`` and is finished when
its ``result.json`` exists; while it runs, it holds an exclusive ``flock`` on ``.lock`` in that folder, which the
kernel releases when the process ends however it ends, so a killed run never blocks the next one.

Several processes may work on one run folder at once (shards, two resumes): a cell that another process is running
is skipped, unless a later cell of this process needs it, in which case this process waits for it (and runs it
itself if the other process dies first). ``results.json`` is (re)written by whichever process finds every cell
finished, and by ``report``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import ignite.distributed as idist

from common.cells import (
    CELL_RESULT,
    Cell,
    Cost,
    Experiment,
    Paper,
    RunContext,
    Settings,
    cell_folder,
    checked_cells,
    is_finished,
    read_cell_result,
)
from common.errors import UsageError
from common.files import FileLock, new_file_mode, write_json_atomically
from common.overrides import apply_overrides
from common.progress import CellProgress
from common.results import ResultRow, RunRecord, write_results
from common.run import CONFIG_FILE, plain, run_metadata, torch_threads
from common.smoke import TABLE_MARK, smoke_limits

LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Plan:
    """An experiment at resolved settings: its configuration and its cells in dependency order."""

    paper: Paper
    experiment: Experiment
    settings: Settings
    config: Any
    cells: tuple[Cell, ...]

    @property
    def by_id(self) -> dict[str, Cell]:
        """The cells by id."""
        return {cell.id: cell for cell in self.cells}


def plan(paper: Paper, experiment: Experiment, settings: Settings) -> Plan:
    """Resolve ``experiment`` of ``paper`` at ``settings``, its ``--set`` overrides applied; the cells are checked
    (unique ids, known needs)."""
    if settings.scale not in experiment.scales:
        raise UsageError(
            f"{paper.name}/{experiment.name} has no {settings.scale!r} scale; scales: {', '.join(experiment.scales)}"
        )
    config = experiment.configure(settings)
    if settings.overrides:
        try:
            config = apply_overrides(config, settings.overrides)
        except UsageError as error:  # every chosen experiment must have the keys: say which one has not
            raise UsageError(f"{paper.name}/{experiment.name}: {error}") from None
    try:
        cells = checked_cells(paper.name, experiment.name, experiment.cells(config))
    except ValueError as error:
        raise UsageError(f"{paper.name}/{experiment.name} at {settings.as_record()}: {error}") from None
    return Plan(paper, experiment, settings, config, tuple(cells))


# ----------------------------------------------------------------------------------------------- run folders
@dataclass(frozen=True)
class RecordedRun:
    """What a run folder's ``config.json`` says it is; ``saved``: when it was recorded (ISO date, "" if not)."""

    folder: Path
    paper: str
    experiment: str
    settings: Settings
    saved: str = ""


def read_recorded_run(folder: Path) -> RecordedRun:
    """The paper, experiment, settings and date recorded in ``folder/config.json``.

    Raises:
        UsageError: the folder has no ``config.json`` of a cell run.
    """
    path = Path(folder) / CONFIG_FILE
    try:
        record = json.loads(path.read_text())
        settings = Settings.from_record(record["settings"])
        return RecordedRun(Path(folder), record["paper"], record["experiment"], settings, str(record.get("saved", "")))
    except FileNotFoundError:
        raise UsageError(f"{folder}: not a run folder (it has no {CONFIG_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not the config.json of a run of this suite ({error})") from None


def find_run_folder(path: Path) -> Path:
    """The run folder that ``path`` is or lies in (a cell folder or a checkpoint inside a run are accepted).

    Raises:
        UsageError: ``path`` does not exist or is not inside a run folder.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"--resume {path}: no such run folder")
    start = path if path.is_dir() else path.parent
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise UsageError(f"--resume {path}: not inside a run folder (no {CONFIG_FILE} in it or above it)")


def merge_settings(recorded: RecordedRun, given: Mapping[str, Any]) -> Settings:
    """The recorded settings, checked against the options given on the command line (None = not given).

    Raises:
        UsageError: a given option differs from the recorded one; the message names both values.
    """
    for name, value in given.items():
        if value is None:
            continue
        kept = getattr(recorded.settings, name)
        value = tuple(value) if isinstance(value, list) else value
        if value != kept:
            raise UsageError(
                f"{_option(name, value)} conflicts with the run's recorded {name} {_show(kept)} in {recorded.folder};"
                f" leave it out to continue the run as it was started"
            )
    return recorded.settings


def _option(name: str, value: Any) -> str:
    """A setting as given on the command line: ``--smoke``, ``--epochs 3``, ``--set a=1 --set b=2``."""
    if name == "overrides":
        return " ".join(f"--set {item}" for item in value)
    return f"--{name}" if isinstance(value, bool) else f"--{name} {_show(value)}"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "(none)"
    return "(the experiment's default)" if value is None else str(value)


def check_same_run(recorded: RecordedRun, run_plan: Plan) -> None:
    """Refuse a run folder of another paper, experiment or settings than ``run_plan``'s."""
    wanted = f"{run_plan.paper.name}/{run_plan.experiment.name}"
    if f"{recorded.paper}/{recorded.experiment}" != wanted:
        raise UsageError(
            f"{recorded.folder} is a run of {recorded.paper}/{recorded.experiment}, not {wanted}; nothing in it was "
            "touched"
        )
    if recorded.settings != run_plan.settings:
        raise UsageError(
            f"{recorded.folder} was started with {recorded.settings.as_record()}, not "
            f"{run_plan.settings.as_record()}; nothing in it was touched"
        )


def open_run_folder(run_plan: Plan, folder: Path) -> Path:
    """Make ``folder`` the run folder of ``run_plan``: record its ``config.json`` if new, else check it matches.

    The record is created exclusively, so two processes starting the same new run folder agree on one record.
    """
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "paper": run_plan.paper.name,
        "experiment": run_plan.experiment.name,
        "settings": run_plan.settings.as_record(),
        "config": plain(run_plan.config),
        **run_metadata(),
    }
    if not _create_exclusively(folder / CONFIG_FILE, record):
        check_same_run(read_recorded_run(folder), run_plan)
    return folder


def _create_exclusively(path: Path, content: Any) -> bool:
    """Write JSON ``content`` to ``path`` whole, unless ``path`` exists; return whether it was written."""
    if path.exists():
        return False
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(descriptor, new_file_mode())  # readable as any new file is (mkstemp makes it 0600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2, default=str)
            handle.write("\n")
        os.link(temporary, path)  # atomic, and fails if another process created the file first
        return True
    except FileExistsError:
        return False
    finally:
        Path(temporary).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- selection
def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 1 ≤ I ≤ N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text}: expected I/N, e.g. 2/8") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text}: expected 1 ≤ I ≤ N")
    return index, count


def select(
    plans: Sequence[Plan],
    patterns: Sequence[str] = (),
    shard: tuple[int, int] | None = None,
) -> list[list[Cell]]:
    """The cells to run of each plan: those matching any of ``patterns`` (all when empty), then the ``shard``-th of
    ``N`` parts of them (cells in order, dealt round-robin over all plans together).

    The prerequisites of the chosen cells are not added here: :func:`run_cells` runs those that are unfinished.

    Raises:
        UsageError: a pattern matches no cell.
    """
    chosen = [
        [cell for cell in p.cells if not patterns or any(fnmatch.fnmatchcase(cell.id, pat) for pat in patterns)]
        for p in plans
    ]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(cell.id, pattern) for p in plans for cell in p.cells):
            names = ", ".join(f"{p.paper.name}/{p.experiment.name}" for p in plans)
            raise UsageError(f"--cells {pattern}: matches no cell of {names}; --list-cells lists them")
    if shard is None:
        return chosen
    index, count = shard
    position = 0
    dealt: list[list[Cell]] = []
    for cells in chosen:
        mine = []
        for cell in cells:
            if position % count == index - 1:
                mine.append(cell)
            position += 1
        dealt.append(mine)
    return dealt


def with_prerequisites(run_plan: Plan, cells: Sequence[Cell], run_dir: Path | None) -> list[Cell]:
    """``cells`` plus every unfinished cell they need (transitively), in the plan's order."""
    by_id, wanted = run_plan.by_id, {cell.id for cell in cells}
    stack = [need for cell in cells for need in cell.needs]
    while stack:
        need = stack.pop()
        if need in wanted or (run_dir is not None and is_finished(run_dir, need)):
            continue
        wanted.add(need)
        stack.extend(by_id[need].needs)
    return [cell for cell in run_plan.cells if cell.id in wanted]


def unfinished_cells(run_plan: Plan, cells: Sequence[Cell], run_dir: Path | None) -> list[Cell]:
    """The cells a run of ``cells`` runs: those of ``cells`` and of the cells they need (transitively) that are not
    finished in ``run_dir`` (every one when it is None: a new run), in the plan's order."""
    cells = with_prerequisites(run_plan, cells, run_dir)
    return cells if run_dir is None else [cell for cell in cells if not is_finished(run_dir, cell.id)]


# ----------------------------------------------------------------------------------------------- locks and states
def cell_lock(run_dir: Path, cell_id: str) -> FileLock:
    """The lock a process holds while it runs cell ``cell_id``: ``.lock`` in the cell's folder."""
    return FileLock(cell_folder(run_dir, cell_id) / LOCK_FILE)


def cell_state(run_dir: Path | None, cell: Cell) -> str:
    """``done``, ``running`` (locked by a live process) or ``pending``."""
    if run_dir is None:
        return "pending"
    if is_finished(run_dir, cell.id):
        return "done"
    return "running" if cell_lock(run_dir, cell.id).is_held_elsewhere() else "pending"


def cell_line(cell: Cell, state: str) -> str:
    """``--list-cells``' line of a cell: id, state, training steps and images (when counted), the ids it needs."""
    cost = describe_cost(cell.cost)
    needs = f"  needs {', '.join(cell.needs)}" if cell.needs else ""
    return f"{cell.id}  {state}{'  ' + cost if cost else ''}{needs}"


def describe_cost(cost: Cost) -> str:
    """``"12,345 steps, 1,234,567 images"`` (the parts that are not zero; ``""`` if both are)."""
    return ", ".join(f"{count:,} {name}" for count, name in ((cost.steps, "steps"), (cost.images, "images")) if count)


# ----------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Outcome:
    """What one :func:`run_cells` call did, and the table if every cell of the run is finished."""

    ran: tuple[str, ...]
    running_elsewhere: tuple[str, ...]
    rows: list[ResultRow] | None


def _say(line: str) -> None:
    print(line, flush=True)


def run_cells(run_plan: Plan, cells: Sequence[Cell], context: RunContext, log=_say) -> Outcome:
    """Run ``cells`` of ``run_plan`` (and their unfinished prerequisites) in ``context.run_dir``.

    The cells are tried in the plan's order, again and again while any of them can be taken: a cell runs once the
    cells it needs are finished and nobody else holds its lock. When nothing can be taken, this process waits for
    the first cell another process is running that a cell here needs (and runs it itself if that process dies);
    a cell that another process is running and nothing here needs is left to it. Each cell runs bound to its
    folder, with the experiment's CPU threads, and writes its result file atomically.

    Under data parallelism (several processes in an ``ignite.distributed`` group) the ranks run each cell together:
    rank 0 chooses it, holds its lock and writes its result, and never waits for a cell another run is running (the
    other ranks would wait in a collective that times out): it leaves it.

    With ``context.progress``, rank 0 shows one bar over the cells with an ETA
    (:class:`~common.progress.CellProgress`), the trainings' bars below it; without, each cell starts with an
    ``[i/N] <cell id>`` line.

    Returns:
        What ran here, what was left to other processes, and the table when every cell of the run is finished
        (on rank 0; other ranks get no table).
    """
    lead = idist.get_rank() == 0
    pending = unfinished_cells(run_plan, cells, context.run_dir)
    desc = f"{run_plan.paper.name}/{run_plan.experiment.name}"
    with CellProgress(desc, len(pending), bar=context.progress and lead, log=log) as progress:
        ran = _run_pending(run_plan, pending, context, progress)
    if not lead:
        return Outcome(tuple(ran), (), None)
    return Outcome(tuple(ran), tuple(cell.id for cell in pending), assemble(run_plan, context.run_dir))


def _run_pending(run_plan: Plan, pending: list[Cell], context: RunContext, progress: CellProgress) -> list[str]:
    """Run the cells of ``pending`` that this process can take (:func:`run_cells`), removing each from it once
    finished (on rank 0); return the ids of those that ran."""
    run_dir, ran, finished = context.run_dir, [], set()
    distributed, lead = idist.get_world_size() > 1, idist.get_rank() == 0
    threads = run_plan.experiment.cpu_threads(run_plan.config) if context.device.type == "cpu" else None
    while True:
        chosen, lock = _choose(run_dir, pending, not distributed, progress.say, finished) if lead else (None, None)
        cell_id = "" if chosen is None else chosen.id
        if distributed:
            cell_id = idist.broadcast(cell_id, src=0, safe_mode=True)
        if not cell_id:
            return ran
        cell = run_plan.by_id[cell_id]
        try:
            if lead:
                progress.start(cell.id)
            started = time.perf_counter()
            with torch_threads(threads), smoke_limits(context.settings.smoke):
                values = cell.run(context.for_cell(cell.id))
            if lead:
                _write_cell_result(run_dir, cell, values, time.perf_counter() - started)
                pending.remove(cell)
                progress.finish()
            ran.append(cell.id)
            if distributed:
                idist.barrier()  # every rank is done with the cell before its lock goes
        finally:
            if lock is not None:
                lock.release()


def _choose(
    run_dir: Path, pending: list[Cell], wait: bool, log, finished: set[str]
) -> tuple[Cell | None, FileLock | None]:
    """The next cell to run and its lock, taken; (None, None) when nothing is left to this process.

    ``finished`` remembers the cells found finished (a finished cell stays finished), across calls.
    """

    def is_done(cell_id: str) -> bool:
        if cell_id not in finished and is_finished(run_dir, cell_id):
            finished.add(cell_id)
        return cell_id in finished

    while pending:
        ready = []  # cells whose needs are finished but that another process holds, before the one taken
        for cell in pending:  # in plan order, stopping at the first cell that can be taken
            if all(map(is_done, cell.needs)):
                if (lock := _try_lock(run_dir, cell)) is not None:
                    break
                ready.append(cell)
        else:
            needed = {need for cell in pending for need in cell.needs}
            blocking = [cell for cell in ready if cell.id in needed]
            if not blocking or not wait:  # what is left runs elsewhere
                for cell in ready:
                    log(f"{cell.id}: running in another process ({cell_lock(run_dir, cell.id).holder()}); left to it")
                return None, None
            cell, lock = blocking[0], cell_lock(run_dir, blocking[0].id)
            log(f"{cell.id}: running in another process ({lock.holder()}); waiting for it, a cell here needs it")
            lock.acquire(wait=True)
        if not is_finished(run_dir, cell.id):
            return cell, lock
        lock.release()  # another process finished it meanwhile
        pending.remove(cell)
    return None, None


def _try_lock(run_dir: Path, cell: Cell) -> FileLock | None:
    lock = cell_lock(run_dir, cell.id)
    return lock if lock.acquire(wait=False) else None


def _write_cell_result(run_dir: Path, cell: Cell, values: Mapping[str, Any], seconds: float) -> None:
    if not isinstance(values, Mapping):
        raise TypeError(f"cell {cell.id} returned {type(values).__name__}, not a mapping of named values")
    record = {
        "id": cell.id,
        "values": dict(values),
        "seconds": round(seconds, 3),
        "finished": datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }
    json.dumps(record, allow_nan=True)  # a value JSON cannot hold is a bug of the cell: fail before writing
    write_json_atomically(cell_folder(run_dir, cell.id) / CELL_RESULT, record)


def assemble(run_plan: Plan, run_dir: Path) -> list[ResultRow] | None:
    """The table of a run whose cells are all finished (also written as ``results.json``); None otherwise.

    The titles of a smoke run's tables say so (:data:`TABLE_MARK`), those of a run with ``--set`` overrides name
    them, and those of a run evaluated from trained models (``--checkpoints``) say where they were found."""
    if not all(is_finished(run_dir, cell.id) for cell in run_plan.cells):
        return None
    results = {cell.id: read_cell_result(run_dir, cell.id) for cell in run_plan.cells}
    mark = table_mark(run_plan.settings)
    rows = [
        replace(row, scale=run_plan.settings.scale, table=row.table + mark)
        for row in run_plan.experiment.table(run_plan.config, results)
    ]
    record = RunRecord(run_plan.paper.name, run_plan.experiment.name, rows, run_plan.settings.as_record())
    write_results(run_dir, record)
    return rows


def table_mark(settings: Settings) -> str:
    """What the titles of a run's tables add to say how it ran: smoke, ``--set`` overrides, ``--checkpoints``."""
    overrides = " ".join(settings.overrides)
    return (
        (TABLE_MARK if settings.smoke else "")
        + (f" [--set {overrides}]" if overrides else "")
        + (f" [evaluated from the trained models in {settings.checkpoints}]" if settings.checkpoints else "")
    )


def pending(run_plan: Plan, run_dir: Path) -> list[str]:
    """Ids of the cells of the run that have not finished."""
    return [cell.id for cell in run_plan.cells if not is_finished(run_dir, cell.id)]
