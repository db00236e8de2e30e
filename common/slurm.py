"""What every cell's Slurm job asks for; a module of its own so that the command line reads it without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import UsageError


@dataclass(frozen=True)
class SlurmOptions:
    """What every cell's job asks of Slurm (see ``sbatch``): partition, GPUs and CPUs per cell, time limit."""

    partition: str | None = None
    gpus_per_cell: int = 1
    cpus_per_cell: int = 8
    time_minutes: int = 24 * 60
    array_parallelism: int = 256
    extra_arguments: tuple[str, ...] = field(default=())  # main.py options each job adds (e.g. --nproc-per-node)

    def __post_init__(self) -> None:
        for name in ("gpus_per_cell", "cpus_per_cell", "time_minutes", "array_parallelism"):
            if getattr(self, name) < (0 if name == "gpus_per_cell" else 1):
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected a positive number")
