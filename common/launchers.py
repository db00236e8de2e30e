"""Running many cells at once: a pool of processes on this machine, or Slurm jobs submitted through submitit.

Both stand on the cell contract (:mod:`common.cells`, :mod:`common.runner`): a cell runs exactly as
``python main.py PAPER EXPERIMENT --resume RUN --cells ID`` would run it (same locks, same result file), so a cell
that a launcher ran, a shard ran or a person re-ran by hand is the same cell.

- ``local``: ``--max-parallel K`` worker processes, started once each (torch is imported K times, not once per
  cell), fed cells by this process as soon as the cells they need have finished. With GPUs, worker ``k`` sees only
  GPU ``k mod #GPUs`` (``CUDA_VISIBLE_DEVICES``), so K = #GPUs runs one cell per GPU. We chose a plain process pool
  over submitit's local executor because the latter starts a fresh interpreter per job and has neither dependency
  scheduling nor per-slot GPU assignment.
- ``slurm``: one job per cell through submitit, the cells grouped in stages by dependency depth, each stage one job
  array that starts after every job of the stage before it succeeded (``--dependency=afterok``). Finished cells are
  not submitted.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

import folder_locations
from common.cells import Cell, RunContext, Settings, is_finished
from common.errors import UsageError
from common.files import write_text_atomically
from common.runner import Plan, unfinished_cells
from common.slurm import SlurmOptions

Log = Callable[[str], None]


@dataclass(frozen=True)
class Batch:
    """Cells of one experiment to run in its run folder."""

    plan: Plan
    cells: tuple[Cell, ...]
    run_dir: Path


def cell_arguments(plan: Plan, run_dir: Path, cell_id: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``main.py`` arguments that run cell ``cell_id`` of ``run_dir`` (and only it, or what it needs)."""
    return [plan.paper.name, plan.experiment.name, "--resume", str(run_dir), "--cells", cell_id, *extra]


def cell_command(arguments: Sequence[str]) -> list[str]:
    """The command line of ``python main.py <arguments>`` with this interpreter."""
    return [sys.executable, str(folder_locations.REPOSITORY / "main.py"), *arguments]


def unfinished(batch: Batch) -> list[Cell]:
    """The batch's cells and the cells they need that have not finished, in the plan's order."""
    return unfinished_cells(batch.plan, batch.cells, batch.run_dir)


# ----------------------------------------------------------------------------------------------- local pool
_GPU: list[str | None] = [None]  # the GPU of this worker process (None: the CPU or every GPU)


def _start_worker(slots: multiprocessing.Queue) -> None:
    gpu = slots.get()
    if gpu is not None:  # before anything in this process touches CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _GPU[0] = gpu


@lru_cache(maxsize=8)
def _plan_in_worker(module: str, experiment: str, settings: Settings) -> Plan:
    import importlib

    from common.runner import plan

    paper = importlib.import_module(module).PAPER
    return plan(paper, paper.experiment(experiment), settings)


def _run_in_worker(module: str, experiment: str, settings: Settings, run_dir: str, cell_id: str, device: str) -> str:
    """Run one cell in a worker process, as ``main.py --cells`` would; return what it reported."""
    from common.run import resolve_device
    from common.runner import run_cells

    plan = _plan_in_worker(module, experiment, settings)
    context = RunContext(
        paper=plan.paper.name,
        experiment=experiment,
        settings=settings,
        config=plan.config,
        run_dir=Path(run_dir),
        device=resolve_device(device),
        progress=False,
    )
    lines: list[str] = []
    run_cells(plan, [plan.by_id[cell_id]], context, log=lines.append)
    return "\n".join(lines)


def gpu_slots(max_parallel: int, device: str) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each of ``max_parallel`` workers: GPUs round-robin, or None on the CPU."""
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
    return [str(k % gpus) if gpus else None for k in range(max_parallel)]


def run_local(batches: Sequence[Batch], modules: dict[str, str], max_parallel: int, device: str, log: Log) -> None:
    """Run the cells of ``batches`` in ``max_parallel`` worker processes, each cell once its needs are finished.

    Args:
        batches: what to run, per experiment and run folder (the folders exist, with their config.json).
        modules: paper name → the module defining its ``PAPER`` (imported by the workers).
        max_parallel: number of worker processes.
        device: the ``--device`` option, given to every worker ("auto": a worker's one GPU, or the CPU).
        log: where progress lines go.

    Raises:
        The first error a cell raised (after the cells still running have finished; no new cell starts).
    """
    if max_parallel < 1:
        raise UsageError(f"--max-parallel {max_parallel}: expected a positive number of processes")
    todo = [(batch, cell) for batch in batches for cell in unfinished(batch)]
    total, started = len(todo), time.perf_counter()
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in gpu_slots(max_parallel, device):
        slots.put(slot)
    running: dict[Future, tuple[Batch, Cell]] = {}
    done = 0
    with ProcessPoolExecutor(max_parallel, mp_context=context, initializer=_start_worker, initargs=(slots,)) as pool:
        try:
            while todo or running:
                for item in _ready(todo, running, max_parallel):
                    batch, cell = item
                    todo.remove(item)
                    arguments = (modules[batch.plan.paper.name], batch.plan.experiment.name, batch.plan.settings)
                    future = pool.submit(_run_in_worker, *arguments, str(batch.run_dir), cell.id, device)
                    running[future] = item
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    _, cell = running.pop(future)
                    future.result()  # a cell's error ends the run
                    done += 1
                    log(f"[{done}/{total}] {cell.id} finished ({time.perf_counter() - started:.0f} s)")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _ready(todo: list[tuple[Batch, Cell]], running: dict, max_parallel: int) -> list[tuple[Batch, Cell]]:
    """Cells to start now: those whose needs are finished, up to the free workers. With nothing running and nothing
    ready (a need runs in another process), the first cell is started anyway: its worker waits for the need."""
    free = max_parallel - len(running)
    ready = [(b, c) for b, c in todo if all(is_finished(b.run_dir, need) for need in c.needs)]
    if not ready and not running and todo:
        ready = todo[:1]
    return ready[:free]


# ----------------------------------------------------------------------------------------------- Slurm
@dataclass(frozen=True)
class CellJob:
    """A Slurm job's function: ``python main.py <arguments>``, its output streamed into the job's log."""

    arguments: tuple[str, ...]

    def __call__(self) -> None:
        subprocess.run(cell_command(self.arguments), check=True, cwd=folder_locations.REPOSITORY)

    def __str__(self) -> str:
        return shlex.join(cell_command(self.arguments))


@dataclass(frozen=True)
class Submitted:
    """One cell's Slurm job."""

    cell_id: str
    stage: int
    job_id: str
    command: str


def stages(batches: Sequence[Batch]) -> list[list[tuple[Batch, Cell]]]:
    """The unfinished cells grouped by dependency depth: stage 0 needs nothing unfinished, stage k needs stage < k."""
    depth: dict[str, int] = {}
    grouped: dict[int, list[tuple[Batch, Cell]]] = {}
    for batch in batches:
        for cell in unfinished(batch):  # in plan order, so a cell's needs come first
            needs = [depth[need] for need in cell.needs if need in depth]
            depth[cell.id] = 1 + max(needs) if needs else 0
            grouped.setdefault(depth[cell.id], []).append((batch, cell))
    return [grouped[level] for level in sorted(grouped)]


def require_slurm() -> None:
    """Raise UsageError unless Slurm's ``sbatch`` and ``srun`` are on PATH."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"--launcher slurm: {' and '.join(missing)} not found on PATH; run it on a Slurm login node")


def submit_slurm(batches: Sequence[Batch], options: SlurmOptions, folder: Path, log: Log) -> list[Submitted]:
    """Submit one Slurm job per unfinished cell, stage after stage; write and return what was submitted.

    Jobs of stage k start after every job of stage k − 1 succeeded. The submission scripts and job logs are in
    ``folder`` (submitit's layout), and ``folder/jobs.tsv`` lists job id, cell id and the command that re-runs the
    cell by hand.
    """
    import submitit

    require_slurm()
    submitted: list[Submitted] = []
    previous: list[str] = []
    for level, cells in enumerate(stages(batches)):
        executor = submitit.SlurmExecutor(folder=folder)
        parameters = {
            "job_name": f"{cells[0][0].plan.paper.name}-stage{level}",
            "time": options.time_minutes,
            "cpus_per_task": options.cpus_per_cell,
            "array_parallelism": options.array_parallelism,
        }
        if options.partition:
            parameters["partition"] = options.partition
        if options.gpus_per_cell:
            parameters["gpus_per_node"] = options.gpus_per_cell
        if previous:
            parameters["dependency"] = "afterok:" + ":".join(previous)
        executor.update_parameters(**parameters)
        functions = [
            CellJob(tuple(cell_arguments(b.plan, b.run_dir, c.id, ("--no-progress", *options.extra_arguments))))
            for b, c in cells
        ]
        with executor.batch():
            jobs = [executor.submit(function) for function in functions]
        previous = sorted({job.job_id.split("_")[0] for job in jobs})
        for (_, cell), job, function in zip(cells, jobs, functions, strict=True):
            submitted.append(Submitted(cell.id, level, job.job_id, str(function)))
        log(f"stage {level}: {len(cells)} cell(s) submitted as job(s) {', '.join(previous)}")
    lines = ["job\tcell\tcommand", *(f"{s.job_id}\t{s.cell_id}\t{s.command}" for s in submitted)]
    write_text_atomically(folder / "jobs.tsv", "\n".join(lines) + "\n")
    return submitted
