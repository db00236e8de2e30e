"""Registry of papers and their experiments, filled by each paper package and read by ``main.py``.

A paper package registers itself in its ``experiments`` module::

    register_paper(Paper("memae", "Gong et al., Memorizing normality ...", experiments=(
        Experiment("table2", run_table2, "MemAE image table: AUROC per class, MNIST and CIFAR-10"),
    )))

Each experiment function takes :class:`RunOptions` and the run folder ``main.py`` made for it
(``<runs root>/<paper>/<experiment>/<run>/``), writes its tensorboard logs and checkpoints there and returns its
result rows; ``main.py`` writes them to ``results.json`` in the same folder.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.results import ResultRow

SCALES = ("demo", "paper")
PAPER_PACKAGES = ("invglow", "mchad", "gaussian_ad", "memae")


@dataclass(frozen=True)
class RunOptions:
    """Command-line options every experiment understands.

    ``epochs=None`` keeps the experiment's own setting for the scale; ``seeds=None`` its default seed list;
    ``resume`` is the run folder to continue (``main.py`` also accepts a checkpoint file inside it): the
    experiment writes into that folder and resumes each of its trainings from the newest checkpoint under it.
    """

    scale: str = "demo"
    seeds: tuple[int, ...] | None = None
    epochs: int | None = None
    resume: Path | None = None
    output: Path | None = None
    device: str = "auto"
    nproc_per_node: int | None = None
    backend: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")


ExperimentFunction = Callable[[RunOptions, Path], list[ResultRow]]


@dataclass(frozen=True)
class Experiment:
    """One table or figure of a paper, reproduced by ``function``."""

    name: str
    function: ExperimentFunction
    description: str
    scales: tuple[str, ...] = SCALES


@dataclass(frozen=True)
class Paper:
    """A reproduced paper: its package name, citation and experiments in the order they are run."""

    name: str
    citation: str
    experiments: tuple[Experiment, ...] = field(default_factory=tuple)

    def experiment(self, name: str) -> Experiment:
        """The experiment called ``name``; a clear error lists the known ones otherwise."""
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        known = ", ".join(e.name for e in self.experiments) or "none"
        raise KeyError(f"paper {self.name!r} has no experiment {name!r}; experiments: {known}")


PAPERS: dict[str, Paper] = {}


def register_paper(paper: Paper) -> Paper:
    """Add ``paper`` to the registry (re-registering the same name replaces it)."""
    PAPERS[paper.name] = paper
    return paper


def discover_papers() -> dict[str, Paper]:
    """Import ``<package>.experiments`` of every paper package that has one, and return the registry."""
    for package in PAPER_PACKAGES:
        if importlib.util.find_spec(package) and importlib.util.find_spec(f"{package}.experiments"):
            importlib.import_module(f"{package}.experiments")
    return PAPERS


def get_paper(name: str) -> Paper:
    """The registered paper ``name``; a clear error lists the registered ones otherwise."""
    if name not in PAPERS:
        known = ", ".join(PAPERS) or "none yet"
        raise KeyError(f"unknown paper {name!r}; registered papers: {known}")
    return PAPERS[name]
