"""The command line and Python entry points of the suite: ``python main.py --help`` lists the commands (:data:`HELP`).

The per-paper functions :func:`invglow`, :func:`mchad`, :func:`gaussian_ad` and :func:`memae` run a paper from
Python with the command line's run options as keywords.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import folder_locations
from common.cells import SCALES, Cell, Cost, Paper, RunContext, Settings
from common.errors import DataError, UsageError
from common.report_formats import FORMATS, Table, tables, to_markdown
from common.results import ResultRow
from common.slurm import SlurmOptions

if TYPE_CHECKING:  # the papers, torch and Ignite load when a command runs, so that `--help` answers at once
    from common.runner import Plan, RecordedRun


HELP = """\
Reproduce the tables of the four papers: `python main.py` runs every paper at the demo scale.

commands:
  python main.py                          every paper, demo scale, tables printed
  python main.py PAPER [EXPERIMENT ...]   one paper (all or some experiments); --scale, --seeds, --epochs, ...
  python main.py PAPER --list-cells       the cells of its tables, their state, cost and what each needs
  python main.py PAPER --show-config      its resolved configuration (YAML); --set KEY=VALUE overrides any of it
  python main.py list                     papers, experiments, scales and datasets
  python main.py report [--runs DIR]      tables assembled from the cell results under DIR; --format md|csv|latex|json
  python main.py download DATASET ...     fetch datasets whose owners allow a download

Every table is a set of cells (one training and/or evaluation each) that run in any order, in any number of
processes, and merge: --cells GLOB runs some of them, --shard I/N one of N parts, --run-name NAME puts every
process in the same run folder, --resume RUN continues a run as it was started.
"""
EPILOG = "The options of every paper's command, python main.py PAPER [EXPERIMENT ...] [OPTIONS] (also PAPER --help):"


class PaperModule(NamedTuple):
    """Where a paper's ``PAPER`` (experiments, cells, tables) is defined, and a title for ``--help``."""

    module: str
    title: str


PAPER_MODULES = {
    "invglow": PaperModule("invglow.experiments", "Schirrmeister et al., NeurIPS 2020: Glow likelihoods"),
    "mchad": PaperModule("mchad.experiments", "Kirchheim et al., ICPR 2022: multi-class hypersphere AD"),
    "gaussian_ad": PaperModule("gaussian_ad.experiments", "Rippel et al., ICPR 2020: Gaussian AD on EfficientNet"),
    "memae": PaperModule("memae.experiments", "Gong et al., ICCV 2019: MemAE, and C-MemAE"),
}
"""The four papers in run order; a package is imported only when its paper is used."""
LAUNCHERS = ("serial", "local", "slurm")
OPENED_RUNS: list[tuple[str, Path]] = []
"""(paper, run folder) of every run this process has opened, for the resume command after Ctrl-C."""


def get_paper(name: str) -> Paper:
    """The paper called ``name`` (its package is imported on first use)."""
    if name not in PAPER_MODULES:
        raise UsageError(f"unknown paper {name!r}; papers: {', '.join(PAPER_MODULES)}")
    return importlib.import_module(PAPER_MODULES[name].module).PAPER


def experiment_names(paper: Paper, scale: str) -> list[str]:
    """The paper's experiments that exist at ``scale``, in order."""
    return [experiment.name for experiment in paper.experiments if scale in experiment.scales]


@dataclass(frozen=True)
class RunOptions:
    """The command line's run options, also the keyword arguments of :func:`invglow`, :func:`memae`, ...

    ``scale``, ``seeds``, ``epochs`` and ``smoke`` left at None take the experiment's defaults (demo scale, no
    smoke) in a new run, and the run's recorded values with ``resume``; given with ``resume``, they must equal the
    recorded ones. ``overrides`` (``--set``) are ``KEY=VALUE`` items applied to each chosen experiment's
    configuration (:mod:`common.overrides`); empty with ``resume``, the recorded ones apply.
    ``cells`` are shell-style patterns on cell ids, ``shard`` is "I/N"; ``run_name`` names the run folder
    ``<output>/<paper>/<experiment>/<run_name>`` (new or existing), so several processes can share it.
    ``launcher`` runs the cells one after another here ("serial"), in ``max_parallel`` local processes ("local";
    default: one per GPU, or one) or as Slurm jobs ("slurm", with ``slurm``'s partition, GPUs, CPUs and time).
    ``nproc_per_node`` > 1 trains each cell data-parallel over that many processes (``backend`` "gloo" or "nccl",
    default nccl with GPUs), for the experiments that train one long model; under torchrun the group is its own.
    ``checkpoints`` makes a new run evaluate only, each cell that trains a model loading the one it trained from that
    folder (:mod:`common.trained_models`); recorded, and kept with ``resume``.
    """

    scale: str | None = None
    seeds: tuple[int, ...] | None = None
    epochs: int | None = None
    smoke: bool | None = None
    resume: Path | None = None
    output: Path | None = None
    run_name: str | None = None
    cells: tuple[str, ...] = ()
    shard: str | None = None
    device: str = "auto"
    progress: bool = True
    launcher: str = "serial"
    max_parallel: int | None = None
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    nproc_per_node: int | None = None
    backend: str | None = None
    overrides: tuple[str, ...] = ()
    checkpoints: Path | None = None

    def __post_init__(self) -> None:
        for name in ("resume", "output", "checkpoints"):  # the Python API may pass text
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(self.seeds))
        for name in ("cells", "overrides"):  # one pattern or override may be given as text
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))

    def settings(self) -> Settings:
        """The settings of a new run."""
        try:
            scale, smoke = self.scale or "demo", bool(self.smoke)
            return Settings(scale, self.seeds, self.epochs, smoke, self.overrides, self.checkpoints_folder())
        except ValueError as error:
            raise UsageError(str(error)) from None

    def given_settings(self) -> dict[str, object]:
        """The settings given explicitly (None: not given), to check against a resumed run's."""
        return {
            "scale": self.scale,
            "seeds": self.seeds,
            "epochs": self.epochs,
            "smoke": self.smoke,
            "overrides": self.overrides or None,
            "checkpoints": self.checkpoints_folder(),
        }

    def checkpoints_folder(self) -> str | None:
        """``checkpoints`` as an absolute folder (None: not given).

        Raises:
            UsageError: it is not a folder.
        """
        if self.checkpoints is None:
            return None
        folder = self.checkpoints.expanduser().resolve()
        if not folder.is_dir():
            raise UsageError(f"--checkpoints {self.checkpoints}: no such folder")
        return str(folder)


@dataclass(frozen=True)
class Job:
    """What one command runs of a paper: per experiment its plan, the cells chosen and its run folder."""

    paper: str
    experiments: tuple[str, ...]  # as asked (empty: every experiment at the scale)
    plans: tuple[Plan, ...]
    selections: tuple[tuple[Cell, ...], ...]
    folders: tuple[Path | None, ...]  # None: a new run folder is made when the experiment has cells to run


def prepare(name: str, experiments: Sequence[str] = (), options: RunOptions | None = None) -> Job:
    """Resolve and check everything a command asks of paper ``name`` before anything runs or is written.

    Raises:
        UsageError: an unknown name, a bad option, a run folder of something else or with other settings.
    """
    from common import runner
    from common.run import CONFIG_FILE

    options = options or RunOptions()
    paper = get_paper(name)
    if options.resume is not None and options.run_name is not None:
        raise UsageError("--resume and --run-name both name the run folder: give one of them")
    if options.resume is not None:
        folder = runner.find_run_folder(options.resume)
        recorded = runner.read_recorded_run(folder)
        if recorded.paper != name or any(e != recorded.experiment for e in experiments):
            asked = "/".join([name, *experiments])
            raise UsageError(
                f"--resume {folder} is a run of {recorded.paper}/{recorded.experiment}, not {asked}; "
                "nothing in it was touched"
            )
        settings = runner.merge_settings(recorded, options.given_settings())
        chosen, existing = [recorded.experiment], {recorded.experiment: folder}
    else:
        settings = options.settings()
        chosen = list(experiments) or experiment_names(paper, settings.scale)
        existing = {}
    shard = runner.parse_shard(options.shard) if options.shard else None
    if shard and options.resume is None and options.run_name is None:
        raise UsageError("--shard needs --run-name NAME (or --resume RUN): every shard must write into one run folder")
    plans = tuple(runner.plan(paper, _experiment(paper, e), settings) for e in chosen)
    folders = []
    for run_plan in plans:
        folder = existing.get(run_plan.experiment.name)
        if folder is None and options.run_name is not None:
            root = options.output or folder_locations.runs_root()
            named = root / name / run_plan.experiment.name / options.run_name
            if (named / CONFIG_FILE).is_file():  # a run shared by several processes: same settings, or refused
                runner.check_same_run(runner.read_recorded_run(named), run_plan)
                folder = named
        folders.append(folder)
    selections = tuple(tuple(cells) for cells in runner.select(plans, options.cells, shard))
    return Job(name, tuple(experiments), plans, selections, tuple(folders))


def run_job(job: Job, options: RunOptions) -> list[ResultRow]:
    """Run the chosen cells of each experiment of ``job`` with ``options.launcher``; print and return the tables
    that are complete (none for Slurm, whose jobs run later: ``report`` assembles them)."""
    import ignite.distributed as idist

    from common import launchers, runner

    _check_launcher(job, options)
    group = _process_group(job, options)
    if group is not None:
        return _run_data_parallel(job, options, *group)
    device = _device(options.device)
    batches = []
    for run_plan, cells, folder in zip(job.plans, job.selections, job.folders, strict=True):
        if cells:
            run_dir = folder or _run_folder(run_plan, options)
            runner.open_run_folder(run_plan, run_dir)
            batches.append(launchers.Batch(run_plan, cells, run_dir))
            OPENED_RUNS.append((run_plan.paper.name, run_dir))
    if options.launcher == "slurm":
        for batch in batches:
            _submit(batch, options.slurm)
        return []
    if options.launcher == "local":
        modules = {name: entry.module for name, entry in PAPER_MODULES.items()}
        parallel = options.max_parallel or max(1, len(set(launchers.gpu_slots(64, options.device)) - {None}))
        launchers.run_local(batches, modules, parallel, options.device, print)
        return [row for b in batches for row in _print_outcome(b.plan, b.run_dir, runner.assemble(b.plan, b.run_dir))]
    rows: list[ResultRow] = []
    for batch in batches:
        context = RunContext(
            paper=batch.plan.paper.name,
            experiment=batch.plan.experiment.name,
            settings=batch.plan.settings,
            config=batch.plan.config,
            run_dir=batch.run_dir,
            device=device,
            progress=options.progress,
        )
        outcome = runner.run_cells(batch.plan, batch.cells, context)
        if idist.get_rank() == 0:
            rows += _print_outcome(batch.plan, batch.run_dir, outcome.rows, len(outcome.running_elsewhere))
    return rows


def _check_launcher(job: Job, options: RunOptions) -> None:
    """Refuse launcher options that cannot work, before any run folder is made.

    Raises:
        UsageError: an unknown launcher, a number of local processes below 1, Slurm's tools not on PATH, or
            several GPUs per Slurm job for an experiment that trains many small models.
    """
    from common import launchers

    if options.launcher not in LAUNCHERS:
        raise UsageError(f"--launcher {options.launcher}: expected one of {', '.join(LAUNCHERS)}")
    if options.launcher == "local" and options.max_parallel is not None and options.max_parallel < 1:
        raise UsageError(f"--max-parallel {options.max_parallel}: expected a positive number of processes")
    if options.launcher != "slurm":
        return
    launchers.require_slurm()
    gpus = options.slurm.gpus_per_cell
    chosen = [p for p, cells in zip(job.plans, job.selections, strict=True) if cells]
    single = [f"{p.paper.name}/{p.experiment.name}" for p in chosen if not p.experiment.data_parallel]
    if gpus > 1 and single:
        raise UsageError(
            f"--gpus-per-cell {gpus}: {single[0]} trains many small models, one GPU each; several GPUs per cell are "
            "for invglow and mchad"
        )


def _process_group(job: Job, options: RunOptions) -> tuple[int | None, str] | None:
    """(processes to spawn or None under torchrun, backend) when the cells are to run data-parallel and this
    process is not in a process group yet; None otherwise."""
    import ignite.distributed as idist
    import torch

    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ
    if idist.get_world_size() > 1 or not (under_torchrun or (options.nproc_per_node or 1) > 1):
        return None
    single = [f"{p.paper.name}/{p.experiment.name}" for p in job.plans if not p.experiment.data_parallel]
    if single:
        raise UsageError(
            f"{', '.join(single)} trains many small models, not one long one: data-parallel processes "
            "(--nproc-per-node, torchrun) are for invglow and mchad; run its cells side by side with --launcher local "
            "--max-parallel K instead"
        )
    if options.launcher != "serial":
        raise UsageError(
            f"--nproc-per-node goes with the serial launcher, not --launcher {options.launcher} (on Slurm: "
            "--gpus-per-cell G)"
        )
    world_size = int(os.environ["WORLD_SIZE"]) if under_torchrun else options.nproc_per_node
    for run_plan in job.plans:
        for key, size in run_plan.experiment.global_batches(run_plan.config).items():
            if size % world_size:
                raise UsageError(
                    f"{run_plan.paper.name}/{run_plan.experiment.name}: {key} {size} is the global batch, split over "
                    f"the {world_size} processes; choose a number of processes that divides it"
                )
    backend = options.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    return (None if under_torchrun else options.nproc_per_node), backend


def _run_data_parallel(job: Job, options: RunOptions, nproc_per_node: int | None, backend: str) -> list[ResultRow]:
    """Run the job's cells in a process group: ``nproc_per_node`` spawned processes, or this torchrun rank."""
    import ignite.distributed as idist

    from common import runner
    from common.launch import launch

    if options.resume is None and options.run_name is None:  # every rank must write into the same new folder
        options = replace(options, run_name=datetime.now().strftime("%Y%m%d-%H%M%S"))
    try:
        payload = (job.paper, job.experiments, PAPER_MODULES[job.paper], options)
        launch(_data_parallel_worker, payload, nproc_per_node=nproc_per_node, backend=backend)
    except ValueError as error:  # the backend or the number of processes cannot be had here
        raise UsageError(f"--nproc-per-node {nproc_per_node} --backend {backend}: {error}") from None
    if nproc_per_node is None and idist.get_rank() != 0:
        return []
    done = prepare(job.paper, job.experiments, options)
    rows = [runner.assemble(p, f) for p, f in zip(done.plans, done.folders, strict=True) if f is not None]
    return [row for table in rows if table for row in table]


def _data_parallel_worker(local_rank: int, payload: tuple[str, tuple[str, ...], PaperModule, RunOptions]) -> None:
    """One rank of :func:`_run_data_parallel`: the job's cells with every rank together (rank 0 prints)."""
    paper, experiments, module, options = payload
    PAPER_MODULES.setdefault(paper, module)  # a spawned process starts from the module's own table
    run_job(with_trained_models(prepare(paper, experiments, options))[0], options)


def _submit(batch, slurm: SlurmOptions) -> None:
    from common import launchers

    folder = batch.run_dir / "slurm"
    if slurm.gpus_per_cell > 1:  # one cell's training spread over the job's GPUs (checked by _check_launcher)
        slurm = replace(slurm, extra_arguments=("--nproc-per-node", str(slurm.gpus_per_cell), "--backend", "nccl"))
    submitted = launchers.submit_slurm([batch], slurm, folder, print)
    if not submitted:
        print(f"{batch.plan.paper.name}/{batch.plan.experiment.name}: every chosen cell has finished already")
        return
    print(
        f"{len(submitted)} cell(s) of {batch.plan.paper.name}/{batch.plan.experiment.name} submitted; watch them with "
        f"`squeue --me`, their logs are in {folder}, {folder / 'jobs.tsv'} has the command that re-runs each cell "
        f"by hand, and `python main.py report --runs {batch.run_dir}` prints the table once they have finished",
        flush=True,
    )


def run_paper(name: str, experiments: Sequence[str] = (), options: RunOptions | None = None) -> list[ResultRow]:
    """Run the cells of the named experiments of paper ``name`` (all when empty); print and return the tables.

    Rows are returned for every experiment whose cells are all finished after this call. With ``--checkpoints``,
    the cells whose trained models are missing are listed on stderr and left unrun, with the cells that need them.
    """
    options = options or RunOptions()
    job, missing = with_trained_models(prepare(name, experiments, options))
    check_data([job])
    if missing:
        print(missing, file=sys.stderr, flush=True)
    return run_job(job, options)


def with_trained_models(job: Job) -> tuple[Job, str]:
    """``job`` without the cells that cannot run for want of a trained model, and the listing of what is missing
    (:mod:`common.trained_models`; "" when nothing is); ``job`` itself when its run trains (no ``--checkpoints``).

    Raises:
        UsageError: none of the chosen cells can run (the listing says why); nothing is written then.
    """
    from common import trained_models

    if not any(run_plan.settings.checkpoints for run_plan in job.plans):
        return job, ""
    searches = [
        trained_models.search(run_plan, cells, folder)
        for run_plan, cells, folder in zip(job.plans, job.selections, job.folders, strict=True)
    ]
    selections = tuple(tuple(s.runnable(cells)) for s, cells in zip(searches, job.selections, strict=True))
    missing = trained_models.missing_listing(searches)
    if missing and not any(selections):
        raise UsageError(f"{missing}\nnone of the chosen cells can run; nothing was written")
    return replace(job, selections=selections), missing


def run_papers(jobs: Sequence[Job], options: RunOptions) -> str:
    """Run each paper's job in turn (``python main.py``); return a line with each paper's wall time and the total."""
    seconds = {}
    for job in jobs:
        start = time.perf_counter()
        run_job(job, options)
        seconds[job.paper] = time.perf_counter() - start
    spent = ", ".join(f"{paper} {_minutes(value)}" for paper, value in seconds.items())
    return f"wall time: {spent}; all {_minutes(sum(seconds.values()))}"


def _minutes(seconds: float) -> str:
    """``seconds`` as ``"3 min 07 s"`` (or ``"42 s"`` under a minute)."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def check_data(jobs: Sequence[Job]) -> None:
    """Check that the files the cells about to run read are in place, before anything runs or is written.

    The cells about to run are the chosen ones and the unfinished cells they need; each experiment says what
    they read (``Experiment.data``).

    Raises:
        MissingFilesError: one error listing every missing file of every job, with where it goes and how to get it.
    """
    from common import preflight, runner

    needs = []
    for job in jobs:
        for run_plan, cells, folder in zip(job.plans, job.selections, job.folders, strict=True):
            to_run = [cell.id for cell in runner.unfinished_cells(run_plan, cells, folder)]
            needs += preflight.for_cells(run_plan.experiment.data(run_plan.config), to_run)
    preflight.check(needs)


def _experiment(paper: Paper, name: str):
    try:
        return paper.experiment(name)
    except KeyError as error:
        raise UsageError(error.args[0]) from None


def _device(name: str):
    from common.run import resolve_device

    try:
        return resolve_device(name)
    except ValueError as error:
        raise UsageError(f"--device {name}: {error}") from None


def _run_folder(run_plan, options: RunOptions) -> Path:
    from common.run import create_run_dir

    try:
        return create_run_dir(run_plan.paper.name, run_plan.experiment.name, options.output, options.run_name)
    except ValueError as error:
        raise UsageError(f"--run-name: {error}") from None
    except (OSError, RuntimeError) as error:  # a file in the way, no permission, a full disk
        root = options.output or folder_locations.runs_root()
        raise UsageError(f"--output {root}: cannot make a run folder there ({error})") from None


def _print_outcome(run_plan, run_dir: Path, rows: list[ResultRow] | None, elsewhere: int = 0) -> list[ResultRow]:
    from common import runner

    if rows is not None:
        print(to_markdown(tables(rows, str(run_dir), runner.read_recorded_run(run_dir).saved)), flush=True)
        print(f"\n(results, tensorboard logs and checkpoints in {run_dir})\n", flush=True)
        return rows
    left = runner.pending(run_plan, run_dir)
    running = f" ({elsewhere} running in other processes)" if elsewhere else ""
    print(
        f"{run_plan.paper.name}/{run_plan.experiment.name}: {len(run_plan.cells) - len(left)} of "
        f"{len(run_plan.cells)} cells finished in {run_dir}{running}; `python main.py report --runs {run_dir}` "
        "assembles the table once all are",
        flush=True,
    )
    return []


def listed_cells(
    name: str, experiments: Sequence[str] = (), options: RunOptions | None = None
) -> list[tuple[str, list[tuple[Cell, str]]]]:
    """Per experiment (``paper/experiment``) its chosen cells (``--cells``, ``--shard``) with their states (done,
    running or pending), in plan order.

    States are those in the run folder of ``options.resume`` or ``options.run_name`` (checked as a run would check
    it); without one, every cell is pending. Nothing is created or changed.
    """
    from common import runner

    job = prepare(name, experiments, options)
    listing = []
    for run_plan, cells, folder in zip(job.plans, job.selections, job.folders, strict=True):
        chosen = {cell.id for cell in cells}
        states = [(cell, runner.cell_state(folder, cell)) for cell in run_plan.cells if cell.id in chosen]
        listing.append((f"{run_plan.paper.name}/{run_plan.experiment.name}", states))
    return listing


def list_paper_cells(name: str, experiments: Sequence[str] = (), options: RunOptions | None = None) -> str:
    """``--list-cells``: one line per chosen cell (:func:`listed_cells`) with its id, state, training steps and
    images, and the ids it needs; then per experiment the number of cells and their total steps and images."""
    from common import runner

    lines = []
    for experiment, states in listed_cells(name, experiments, options):
        lines += [runner.cell_line(cell, state) for cell, state in states]
        total = runner.describe_cost(sum((cell.cost for cell, _ in states), Cost()))
        count = f"{len(states)} cell{'' if len(states) == 1 else 's'}"
        lines.append(f"{experiment}: {count}{', ' + total if total else ''}")
    return "\n".join(lines)


def show_configs(name: str, experiments: Sequence[str] = (), options: RunOptions | None = None) -> str:
    """``--show-config``: the resolved configuration (``--set`` applied) of each chosen experiment as YAML, headed
    by ``paper/experiment (scale S):``. Nothing is created or run."""
    from common.overrides import show_config

    blocks = [
        f"{p.paper.name}/{p.experiment.name} (scale {p.settings.scale}):\n{show_config(p.config)}"
        for p in prepare(name, experiments, options).plans
    ]
    return "\n".join(blocks).rstrip("\n")


def invglow(experiments: Sequence[str] = (), **options: object) -> list[ResultRow]:
    """Reproduce Schirrmeister et al. 2020 (InvGlow); ``options`` are :class:`RunOptions` fields."""
    return run_paper("invglow", experiments, RunOptions(**options))


def mchad(experiments: Sequence[str] = (), **options: object) -> list[ResultRow]:
    """Reproduce Kirchheim et al. 2022 (MCHAD); ``options`` are :class:`RunOptions` fields."""
    return run_paper("mchad", experiments, RunOptions(**options))


def gaussian_ad(experiments: Sequence[str] = (), **options: object) -> list[ResultRow]:
    """Reproduce Rippel et al. 2020 (Gaussian AD); ``options`` are :class:`RunOptions` fields."""
    return run_paper("gaussian_ad", experiments, RunOptions(**options))


def memae(experiments: Sequence[str] = (), **options: object) -> list[ResultRow]:
    """Reproduce Gong et al. 2019 (MemAE) and C-MemAE; ``options`` are :class:`RunOptions` fields."""
    return run_paper("memae", experiments, RunOptions(**options))


def report(runs: Path | None = None, paper: str | None = None, format: str = "md") -> str:
    """The tables of the newest run of each experiment and scale under ``runs``, assembled from its cell results, in
    ``format`` (md, csv, latex or json: :data:`common.report_formats.FORMATS`), papers and experiments in run order.

    ``runs`` may be a runs root, a folder below it, or one run folder (shards copied together from several
    machines included). Each table names its run folder and date. The runs that give no table (unfinished cells, a
    damaged cell result, a run of another suite) are named before markdown tables, and on stderr for the other
    formats, whose output stays machine-readable.
    """
    if format not in FORMATS:
        raise UsageError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    runs = runs or folder_locations.runs_root()
    recorded_runs, notices = _newest_runs(Path(runs), paper)
    found: list[Table] = []
    for recorded in recorded_runs:
        assembled, notice = _run_tables(recorded)
        found += assembled
        notices += [notice] if notice else []
    if not recorded_runs and not notices:
        notices = [f"No runs under {runs} yet: run `python main.py` first."]
    if format != "md":
        for notice in notices:
            print(notice, file=sys.stderr)
        return FORMATS[format](found)
    return "\n\n".join([*notices, *([to_markdown(found)] if found else [])])


def _newest_runs(runs: Path, paper: str | None) -> tuple[list[RecordedRun], list[str]]:
    """The newest run of each paper (or of ``paper``), experiment, scale, smoke setting, ``--set`` overrides and
    ``--checkpoints`` folder under ``runs``, in run order, and a line for each run of a paper this suite does not
    have."""
    from common import runner
    from common.run import CONFIG_FILE

    newest: dict[tuple[str, str, str, bool, tuple[str, ...], str | None], RecordedRun] = {}
    skipped = []
    for path in sorted(runs.rglob(CONFIG_FILE)):
        try:
            recorded = runner.read_recorded_run(path.parent)
        except UsageError:
            continue  # not the config.json of a run
        if recorded.paper not in PAPER_MODULES:
            skipped.append(f"{path.parent}: a run of {recorded.paper!r}, which is not a paper of this suite; skipped")
            continue
        settings = recorded.settings
        kind = (settings.scale, settings.smoke, settings.overrides, settings.checkpoints)
        key = (recorded.paper, recorded.experiment, *kind)
        if (paper is None or recorded.paper == paper) and (key not in newest or recorded.saved >= newest[key].saved):
            newest[key] = recorded
    return sorted(newest.values(), key=_run_order), skipped


def _run_order(recorded: RecordedRun) -> tuple[int, int, int, bool]:
    """Papers as :data:`PAPER_MODULES`, then experiments as their paper runs them, then scales, smoke runs last."""
    names = [experiment.name for experiment in get_paper(recorded.paper).experiments]
    experiment = names.index(recorded.experiment) if recorded.experiment in names else len(names)
    settings = recorded.settings
    return list(PAPER_MODULES).index(recorded.paper), experiment, SCALES.index(settings.scale), settings.smoke


def _run_tables(recorded: RecordedRun) -> tuple[list[Table], str]:
    """The tables of a recorded run, or none and why: a damaged cell result or unfinished cells."""
    from common import runner

    owner = get_paper(recorded.paper)
    run_plan = runner.plan(owner, _experiment(owner, recorded.experiment), recorded.settings)
    name = f"{recorded.paper}/{recorded.experiment} ({recorded.folder})"
    try:
        rows = runner.assemble(run_plan, recorded.folder)
    except DataError as error:  # one damaged cell result: say so and go on with the other runs
        return [], f"{name}: not assembled, {error}"
    if rows is None:
        left = len(runner.pending(run_plan, recorded.folder))
        return [], (
            f"{name}: {left} of {len(run_plan.cells)} cells not finished; "
            f"`python main.py {recorded.paper} --resume {recorded.folder}` runs them"
        )
    return tables(rows, str(recorded.folder), recorded.saved), ""


def list_everything() -> str:
    """Text listing of the papers (with experiments and scales) and datasets."""
    from common.datasets import DATASETS

    lines = ["Papers:"]
    for name in PAPER_MODULES:
        paper = get_paper(name)
        lines.append(f"  {paper.name}: {paper.citation}")
        for experiment in paper.experiments:
            lines.append(f"    {experiment.name} [{', '.join(experiment.scales)}]: {experiment.description}")
    lines.append(f"Scales: {', '.join(SCALES)}")
    lines.append("Datasets (common.datasets.load(name, split)):")
    for spec in DATASETS.values():
        lines.append(f"  {spec.name} [{', '.join(spec.splits)}]: {spec.description}")
    return "\n".join(lines)


def download(names: Sequence[str], root: Path | None = None) -> int:
    """Fetch each dataset in ``names``; print where it is, or the one-line reason it could not be fetched."""
    from common.datasets import DATASETS
    from common.datasets.sources import fetch

    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        print(f"unknown dataset(s) {', '.join(unknown)}; `python main.py list` shows the datasets", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            print(f"{name}: {fetch(name, root)}")
        except DataError as error:
            print(f"{name}: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _add_run_options(parser: argparse.ArgumentParser, *, cells: bool) -> None:
    parser.add_argument("--scale", choices=SCALES, help="demo (CPU, minutes; the default) or paper (GPU)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the experiment's)")
    parser.add_argument("--epochs", type=int, help="override the number of training epochs")
    parser.add_argument(
        "--smoke",
        action="store_const",
        const=True,
        help="the scale's configuration; every training 2 steps, every evaluation 2 batches per set, ≤ 4 images each",
    )
    parser.add_argument("--output", type=Path, help=f"runs root (default {folder_locations.runs_root()})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--show-config", action="store_true", help="print each chosen experiment's resolved configuration; run none"
    )
    if not cells:
        return
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override a hyper-parameter of the configuration --show-config prints (repeatable): dotted KEY, tuple "
        "items by index (datasets.0.epochs=3), YAML VALUE (3, 1e-3, null, [svhn, lsun]); KEY must exist in every "
        "chosen experiment (name the experiments to narrow them); recorded, and kept by --resume",
    )
    parser.add_argument("--resume", type=Path, help="continue this run folder (or a folder or file inside it)")
    parser.add_argument(
        "--checkpoints",
        type=Path,
        metavar="DIR",
        help="evaluate only, no training: each cell loads the model it trains from DIR (a run folder or runs root of "
        "this suite, or the original code's files); cells whose models are missing are listed and not run; recorded",
    )
    parser.add_argument(
        "--run-name", help="run folder <output>/<paper>/<experiment>/NAME, new or shared with other processes"
    )
    parser.add_argument(
        "--cells", action="append", default=[], metavar="GLOB", help="run only cells whose id matches (repeatable)"
    )
    parser.add_argument("--shard", metavar="I/N", help="run the I-th of N parts of the cells (needs --run-name)")
    parser.add_argument("--list-cells", action="store_true", help="print the cells, their state and needs; run none")
    parser.add_argument(
        "--nproc-per-node", type=int, metavar="N", help="train each cell data-parallel in N processes (invglow, mchad)"
    )
    parser.add_argument("--backend", choices=("gloo", "nccl"), help="with --nproc-per-node (default nccl on GPUs)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="serial", help="cells one by one here, local, Slurm")
    parser.add_argument("--max-parallel", type=int, metavar="K", help="--launcher local: processes (default #GPUs, 1)")
    slurm = parser.add_argument_group("--launcher slurm (one job per cell, through submitit)")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument("--gpus-per-cell", type=int, default=1, metavar="G", help="GPUs per job (default 1)")
    slurm.add_argument("--cpus-per-cell", type=int, default=8, metavar="C", help="CPUs per job (default 8)")
    slurm.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES", help="time limit per job (default 1440)")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per paper plus all, list, report and download."""
    parser = argparse.ArgumentParser(
        description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the engines' log lines (Ignite's INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_options(commands.add_parser("all", help="every paper (the default command)"), cells=False)
    commands.add_parser("list", help="papers, experiments, scales and datasets")
    report_parser = commands.add_parser("report", help="tables assembled from the cell results of the newest runs")
    report_parser.add_argument(
        "--runs", type=Path, help=f"runs root or run folder (default {folder_locations.runs_root()})"
    )
    report_parser.add_argument("--paper", choices=tuple(PAPER_MODULES), help="only this paper")
    report_parser.add_argument(
        "--format", choices=tuple(FORMATS), default="md", help="md (default), csv (one line per cell), latex or json"
    )
    download_parser = commands.add_parser("download", help="download datasets whose owners allow it")
    download_parser.add_argument("datasets", nargs="+", metavar="DATASET")
    download_parser.add_argument("--root", type=Path, help=f"data root (default {folder_locations.data_root()})")
    for name, entry in PAPER_MODULES.items():
        sub = commands.add_parser(name, help=entry.title)
        sub.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="default: all of them")
        _add_run_options(sub, cells=True)
    paper_help = sub.format_help()  # every paper's command has the same options: list them under the commands
    parser.epilog = f"{EPILOG}\n\n{paper_help[paper_help.index('options:') :]}"
    return parser


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        scale=args.scale,
        seeds=tuple(args.seeds) if args.seeds else None,
        epochs=args.epochs,
        smoke=args.smoke,
        resume=getattr(args, "resume", None),
        output=args.output,
        run_name=getattr(args, "run_name", None),
        cells=tuple(getattr(args, "cells", ())),
        shard=getattr(args, "shard", None),
        device=args.device,
        progress=not args.no_progress,
        launcher=getattr(args, "launcher", "serial"),
        max_parallel=getattr(args, "max_parallel", None),
        slurm=_slurm_options(args),
        nproc_per_node=getattr(args, "nproc_per_node", None),
        backend=getattr(args, "backend", None),
        overrides=tuple(getattr(args, "overrides", ())),
        checkpoints=getattr(args, "checkpoints", None),
    )


def _slurm_options(args: argparse.Namespace) -> SlurmOptions:
    if not hasattr(args, "partition"):
        return SlurmOptions()
    return SlurmOptions(
        partition=args.partition, gpus_per_cell=args.gpus_per_cell, cpus_per_cell=args.cpus_per_cell,
        time_minutes=args.time,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python main.py``; returns the process exit code (2: a usage or data error, one line)."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    command = args.command or "all"
    logging.getLogger("ignite").setLevel(logging.INFO if args.verbose else logging.WARNING)
    OPENED_RUNS.clear()
    try:
        if command == "list":
            print(list_everything())
        elif command == "report":
            print(report(args.runs, args.paper, args.format))
        elif command == "download":
            return download(args.datasets, args.root)
        elif command == "all" and getattr(args, "show_config", False):
            print("\n\n".join(show_configs(name, (), _options(args)) for name in PAPER_MODULES))
        elif command == "all":
            options = _options(args) if args.command else RunOptions()
            jobs = [prepare(name, (), options) for name in PAPER_MODULES]  # every paper checked before any runs
            check_data(jobs)
            print(run_papers(jobs, options))
        elif args.show_config:
            print(show_configs(command, args.experiments, _options(args)))
        elif args.list_cells:
            print(list_paper_cells(command, args.experiments, _options(args)))
        else:
            run_paper(command, args.experiments, _options(args))
    except (UsageError, DataError, FloatingPointError) as error:  # FloatingPointError: a training went non-finite
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        commands = "; ".join(f"python main.py {paper} --resume {run}" for paper, run in dict.fromkeys(OPENED_RUNS))
        print(f"\ninterrupted{'; continue with: ' + commands if commands else ''}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
