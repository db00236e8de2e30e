"""Reproduce the tables of the four papers: ``python main.py`` runs every registered paper at the demo scale.

Commands::

    python main.py                          every registered paper, demo scale, tables printed
    python main.py PAPER [EXPERIMENT ...]   one paper (all or some experiments); --scale, --seeds, --epochs, ...
    python main.py list                     papers, experiments, scales and datasets
    python main.py report                   markdown tables (paper value, ours, difference) of the newest runs
    python main.py download DATASET ...     fetch datasets whose owners allow a download

The per-paper functions ``invglow()``, ``mchad()``, ``gaussian_ad()`` and ``memae()`` do the same from Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import folder_locations
from common.papers import SCALES, RunOptions, discover_papers, get_paper
from common.results import ResultRow, RunRecord, latest_results, render_markdown, rows_of, write_results


def run_paper(name: str, experiments: Sequence[str] = (), options: RunOptions | None = None) -> list[ResultRow]:
    """Run the named experiments of paper ``name`` (all when empty); write and print their result tables."""
    from common.run import create_run_dir

    options = options or RunOptions()
    paper = get_paper(name)
    resumed = resumed_run_dir(options.resume) if options.resume else None
    run_scale = recorded_scale(resumed) if resumed is not None else None
    if run_scale not in (None, options.scale):
        raise ValueError(
            f"--resume {resumed}: the run was started at the {run_scale!r} scale, not {options.scale!r};"
            f" resume it with --scale {run_scale}"
        )
    if resumed is not None and not experiments:
        experiments = [resumed.parent.name]  # runs live in <paper>/<experiment>/<run>/
    if experiments:
        chosen = [paper.experiment(e) for e in experiments]
    else:  # all of the paper's experiments that exist at this scale
        chosen = [e for e in paper.experiments if options.scale in e.scales]
    if resumed is not None and len(chosen) != 1:
        raise ValueError(f"--resume continues one run, {resumed}; name one experiment, not {len(chosen)}")
    rows: list[ResultRow] = []
    for experiment in chosen:
        if options.scale not in experiment.scales:
            raise ValueError(
                f"{name}/{experiment.name} has no {options.scale!r} scale; scales: {', '.join(experiment.scales)}"
            )
        run_dir = resumed or create_run_dir(name, experiment.name, options.output)
        experiment_rows = experiment.function(options, run_dir)
        write_results(run_dir, RunRecord(name, experiment.name, experiment_rows, config=asdict(options)))
        print(render_markdown(experiment_rows), flush=True)
        print(f"\n(results, tensorboard logs and checkpoints in {run_dir})\n", flush=True)
        rows.extend(experiment_rows)
    return rows


def resumed_run_dir(resume: Path) -> Path:
    """The run folder that ``--resume`` names: a run folder, a folder inside one, or a checkpoint file inside one.

    That is the nearest folder, from ``resume`` up, whose ``config.json`` records the run's scale (checkpoints may
    sit in a training stage's sub-folder, as InvGlow's ``<run>/<stage>/seed<s>/checkpoints/``); without one,
    ``resume`` itself, or for a file the folder of ``checkpoints/`` or of the file. Experiments resume each of
    their trainings from the newest checkpoint under it.
    """
    resume = resume.expanduser()
    if not resume.exists():
        raise FileNotFoundError(f"--resume {resume}: no such run folder or checkpoint file")
    start = resume if resume.is_dir() else resume.parent
    recorded = [folder for folder in (start, *start.parents) if recorded_scale(folder) is not None]
    if recorded:
        return recorded[0]
    if resume.is_dir():
        return resume
    return resume.parent.parent if resume.parent.name == "checkpoints" else resume.parent


def recorded_scale(run_dir: Path) -> str | None:
    """The scale a run was started with, from its ``config.json`` (``config.options.scale``); None if unrecorded."""
    from common.run import CONFIG_FILE

    try:
        return json.loads((run_dir / CONFIG_FILE).read_text())["config"]["options"]["scale"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scale", choices=SCALES, help="demo (CPU, minutes; the default) or paper (GPU); --resume: the run's own"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the experiment's)")
    parser.add_argument("--epochs", type=int, help="override the number of training epochs")
    parser.add_argument("--resume", type=Path, help="checkpoint file or run folder to resume from")
    parser.add_argument("--output", type=Path, help=f"runs root (default {folder_locations.runs_root()})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--nproc-per-node", type=int, help="processes to spawn with torch.distributed")
    parser.add_argument("--backend", choices=("gloo", "nccl"), help="torch.distributed backend")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _options(args: argparse.Namespace) -> RunOptions:
    scale = args.scale or (args.resume and recorded_scale(resumed_run_dir(args.resume))) or "demo"
    return RunOptions(
        scale=scale,
        seeds=tuple(args.seeds) if args.seeds else None,
        epochs=args.epochs,
        resume=args.resume,
        output=args.output,
        device=args.device,
        nproc_per_node=args.nproc_per_node,
        backend=args.backend,
        progress=not args.no_progress,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per registered paper plus all, list, report and download."""
    papers = discover_papers()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_options(commands.add_parser("all", help="every registered paper (the default command)"))
    commands.add_parser("list", help="papers, experiments, scales and datasets")
    report = commands.add_parser("report", help="markdown tables of the newest runs")
    report.add_argument("--runs", type=Path, help=f"runs root (default {folder_locations.runs_root()})")
    report.add_argument("--paper", help="only this paper")
    download = commands.add_parser("download", help="download datasets whose owners allow it")
    download.add_argument("datasets", nargs="+", metavar="DATASET")
    download.add_argument("--root", type=Path, help=f"data root (default {folder_locations.data_root()})")
    for paper in papers.values():
        sub = commands.add_parser(paper.name, help=paper.citation)
        sub.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="default: all of them")
        _add_run_options(sub)
    return parser


def list_everything() -> str:
    """Text listing of registered papers (with experiments and scales) and datasets."""
    from common.datasets import DATASETS

    papers = discover_papers()
    lines = ["Papers:"]
    if not papers:
        lines.append("  no paper registered yet")
    for paper in papers.values():
        lines.append(f"  {paper.name}: {paper.citation}")
        for experiment in paper.experiments:
            lines.append(f"    {experiment.name} [{', '.join(experiment.scales)}]: {experiment.description}")
    lines.append(f"Scales: {', '.join(SCALES)}")
    lines.append("Datasets (common.datasets.load(name, split)):")
    for spec in DATASETS.values():
        lines.append(f"  {spec.name} [{', '.join(spec.splits)}]: {spec.description}")
    return "\n".join(lines)


def report(runs: Path | None = None, paper: str | None = None) -> str:
    """Markdown tables of the newest results under ``runs`` (default: the runs root)."""
    runs = runs or folder_locations.runs_root()
    records = latest_results(runs, paper)
    if not records:
        registered = discover_papers()
        if not registered:
            return "No paper is registered yet, so there are no results to report."
        return f"No results under {runs} yet: run `python main.py` first."
    return render_markdown(rows_of(records))


def download(names: Sequence[str], root: Path | None = None) -> int:
    """Fetch each dataset in ``names``; print where it is, or the one-line reason it could not be fetched."""
    from common.datasets import DATASETS
    from common.datasets.sources import fetch
    from common.errors import DataError

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python main.py``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    command = args.command or "all"
    if command == "list":
        print(list_everything())
    elif command == "report":
        print(report(args.runs, args.paper))
    elif command == "download":
        return download(args.datasets, args.root)
    elif command == "all":
        papers = discover_papers()
        if not papers:
            print("No paper is registered yet: nothing to run. `python main.py list` shows what exists.")
            return 0
        options = _options(args) if args.command else RunOptions()
        for name in papers:
            run_paper(name, (), options)
    else:
        run_paper(command, args.experiments, _options(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
