"""Setting up one run: seeds, reproducible epochs, the run folder, the recorded config, the device.

Reproducibility, including a resume part-way through an epoch, rests on four pieces:

- ``seed_everything`` seeds python, numpy and torch once per process, alike on every rank;
- ``seed_epoch`` reseeds them at every epoch from (seed, epoch) alone, so an epoch's randomness does not depend
  on what ran before it (evaluations, a restarted process);
- the training data is ordered by (seed, epoch) alone and can start part-way (``common.loaders.TensorBatchLoader``,
  or ``EpochSeededSampler`` under a ``DataLoader``);
- ``make_reproducible`` attaches both to a trainer and returns ``RandomStates``, the checkpoint entry that gives
  the generators back when a run resumes part-way through an epoch.

Every rank of a data-parallel training draws from generators in the same state: per-sample random numbers
(augmentation, noise, dropout) are drawn for the whole global batch and each rank keeps its rows
(``common.data_parallel``), so the generators advance alike on every rank and a run in several processes follows
the one-process trajectory. The states are therefore saved once, without gathering them from the ranks.

Ignite resumes part-way through an epoch by counting that epoch from ``iteration % epoch_length``, but takes the
batches from a fresh data iterator and leaves the random generators as they are. Its ``DeterministicEngine`` handles
both, yet stores numpy's generator as an ndarray that ``torch.load(weights_only=True)`` refuses; ``RandomStates``
stores tensors only. A resumed run ends with the weights of an uninterrupted one (``tests/test_resume.py``) when
batches are loaded in the main process. With DataLoader workers the batches are still the same, but random
augmentations done inside the workers after the resume point are not. Handlers that draw random numbers at
EPOCH_STARTED must be attached after ``make_reproducible`` so they draw from the reseeded generators.

DataLoader workers need no seeding function of ours: torch seeds ``random``, ``numpy`` and ``torch`` in each worker
from the loader's base seed, which is drawn from the (reseeded) torch generator when the epoch's iterator starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import random
import subprocess
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sized
from datetime import datetime
from pathlib import Path
from typing import Any

import ignite
import ignite.distributed as idist
import numpy as np
import torch
from ignite.base import Serializable
from ignite.engine import Engine, Events
from ignite.utils import manual_seed
from torch.utils.data import DistributedSampler

import folder_locations

CONFIG_FILE = "config.json"


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (CPU and CUDA) in this process with ``seed``, alike on every rank.

    Ranks are not seeded apart (Ignite's examples add the rank): a data-parallel training draws every per-sample
    random number for the whole global batch (module docstring), which needs the same generators on every rank.
    """
    _check_seed(seed)
    manual_seed(seed)


_RANK_IN_EPOCH_SEED = 0
"""The place of the rank in ``seed_epoch``'s mix, from before ranks were seeded alike; kept at 0 so that one-process
runs draw the numbers they always drew."""


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every generator of this process for epoch ``epoch`` of the run seeded ``seed``, alike on every rank.

    The seed is a function of (seed, epoch) only, mixed by numpy's ``SeedSequence`` so neighbouring epochs get
    unrelated streams.
    """
    _check_seed(seed)
    mixed = np.random.SeedSequence([seed, _RANK_IN_EPOCH_SEED, epoch]).generate_state(1)[0]
    manual_seed(int(mixed))


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")


class EpochSeededSampler(DistributedSampler):
    """Sampler whose order depends only on (seed, epoch), split over the ranks, able to start part-way.

    It is torch's ``DistributedSampler`` (one permutation per epoch from a generator seeded ``seed + epoch``, rank
    ``r`` of ``R`` taking positions ``r, r + R, ...``) with the world taken from ``ignite.distributed``, so it also
    works in a single process, and with ``skip_next`` to resume mid-epoch. ``idist.auto_dataloader`` keeps it as is.

    Args:
        dataset: anything with a length (only its length is used).
        seed: seed of the permutations; the same on every rank.
        shuffle: permute (default) or keep the dataset order.
        drop_last: drop the tail that does not split evenly over the ranks instead of repeating samples.
    """

    def __init__(self, dataset: Sized, *, seed: int, shuffle: bool = True, drop_last: bool = False) -> None:
        _check_seed(seed)
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=idist.get_world_size(),
            rank=idist.get_rank(),
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self._skip = 0

    def skip_next(self, n_samples: int) -> None:
        """Make the next iteration leave out the first ``n_samples`` indices of this rank (already trained on)."""
        if not 0 <= n_samples <= self.num_samples:
            raise ValueError(f"n_samples must be in [0, {self.num_samples}], got {n_samples}")
        self._skip = n_samples

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


class RandomStates(Serializable):
    """Checkpoint entry with the python, numpy, torch and CUDA generator states, as tensors only.

    The states are those of this process, which are those of every rank (module docstring), so saving them needs no
    collective operation. Each tensor has a leading dimension of one row (checkpoints written when every rank's
    states were gathered have one row per rank; the first is used). After ``load_state_dict`` the states are set
    back at the first batch of the resumed run, and only when that run resumes part-way through an epoch (at an
    epoch start, ``seed_epoch`` has already set them).
    """

    _state_dict_all_req_keys = ("python", "python_gauss", "numpy", "numpy_pos", "numpy_gauss", "torch")

    def __init__(self) -> None:
        self._pending: dict[str, torch.Tensor] | None = None

    def attach(self, trainer: Engine) -> None:
        """Restore loaded states on ``trainer``'s first batch after a resume part-way through an epoch."""
        trainer.add_event_handler(Events.GET_BATCH_STARTED | Events.ITERATION_STARTED, self._restore_pending)

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """This process's generator states, each tensor with a leading dimension of one."""
        return OrderedDict((key, value.unsqueeze(0)) for key, value in _local_random_states().items())

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Keep the states of ``state_dict`` for the resumed run's first batch."""
        super().load_state_dict(state_dict)
        self._pending = {key: value[0] for key, value in state_dict.items()}

    def _restore_pending(self, engine: Engine) -> None:
        if self._pending is None:
            return
        if engine.state.iteration % engine.state.epoch_length:
            _set_local_random_states(self._pending)
        self._pending = None


def _local_random_states() -> dict[str, torch.Tensor]:
    version, mersenne, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    states = {
        "python": torch.tensor([version, *mersenne], dtype=torch.int64),
        "python_gauss": torch.tensor([math.nan if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "numpy_pos": torch.tensor([numpy_state["state"]["pos"], numpy_state["has_gauss"]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([numpy_state["gauss"]], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return states


def _set_local_random_states(states: Mapping[str, torch.Tensor]) -> None:
    python, gauss = states["python"].tolist(), states["python_gauss"].item()
    random.setstate((python[0], tuple(python[1:]), None if math.isnan(gauss) else gauss))
    pos, has_gauss = states["numpy_pos"].tolist()
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": states["numpy"].numpy().astype(np.uint32), "pos": pos},
            "has_gauss": has_gauss,
            "gauss": states["numpy_gauss"].item(),
        }
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(states["cuda"]))


def make_reproducible(trainer: Engine, seed: int) -> RandomStates:
    """Reseed every epoch, keep the training data's epoch in step, and return the checkpoint's RNG entry.

    The data passed to ``trainer.run`` is told its epoch (``iteration // len(data)``) each time its iterator
    starts, through its own ``set_epoch`` or its sampler's (e.g. the ``DistributedSampler`` that
    ``idist.auto_dataloader`` installs). Resuming part-way through an epoch also needs it to leave out the batches
    already trained on: a loader with ``skip_batches(n)``, or a DataLoader over an ``EpochSeededSampler``.
    """
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: seed_epoch(seed, engine.state.epoch))
    trainer.add_event_handler(Events.STARTED | Events.DATALOADER_STOP_ITERATION, _start_data_epoch)
    states = RandomStates()
    states.attach(trainer)
    return states


def _start_data_epoch(engine: Engine) -> None:
    """Before the data iterator (re)starts: set the data's epoch and skip the part of it already trained on."""
    data = engine.state.dataloader
    if not hasattr(data, "__len__"):
        return
    epoch, batches_done = divmod(engine.state.iteration, len(data))
    sampler = getattr(data, "sampler", None)
    if hasattr(data, "set_epoch"):
        data.set_epoch(epoch)
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if not batches_done:
        return
    if hasattr(data, "skip_batches"):
        data.skip_batches(batches_done)
    elif isinstance(sampler, EpochSeededSampler):
        sampler.skip_next(batches_done * data.batch_size)
    else:
        warnings.warn(
            f"resuming part-way through an epoch with {type(data).__name__} data, which cannot skip the "
            f"{batches_done} batches already trained on; use a DataLoader over common.run.EpochSeededSampler",
            stacklevel=2,
        )


def create_run_dir(paper: str, experiment: str, output: Path | None = None, run_name: str | None = None) -> Path:
    """Create ``<output>/<paper>/<experiment>/<run_name>/`` on rank 0 and return it on every rank.

    Args:
        paper: package name, e.g. ``"mchad"``.
        experiment: table or figure, e.g. ``"table1"``.
        output: root of all runs; default ``folder_locations.runs_root()``.
        run_name: folder of this run; reused if it exists (resuming). Default: a new ``YYYYmmdd-HHMMSS`` folder
            (``-2``, ``-3``, ... appended if that exists already).

    Raises:
        ValueError: a name is empty or not a single path component.
        RuntimeError: rank 0 could not create the folder (on every rank, so none waits forever).
    """
    for argument, name in (("paper", paper), ("experiment", experiment), ("run_name", run_name)):
        if name is not None and (not name or name in {".", ".."} or "/" in name or os.sep in name):
            raise ValueError(f"{argument} must be a single folder name, got {name!r}")
    parent = (output if output is not None else folder_locations.runs_root()) / paper / experiment
    created, error = "", None
    if idist.get_rank() == 0:
        try:
            created = str(_make_run_folder(parent, run_name))
        except OSError as exc:
            error = exc
    if idist.get_world_size() > 1:
        created = str(idist.broadcast(created, src=0, safe_mode=True))
    if not created:
        raise RuntimeError(f"could not create a run folder under {parent}: {error or 'failed on rank 0'}")
    return Path(created)


def _make_run_folder(parent: Path, run_name: str | None) -> Path:
    if run_name is not None:
        (parent / run_name).mkdir(parents=True, exist_ok=True)
        return parent / run_name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        candidate = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        with contextlib.suppress(FileExistsError):
            candidate.mkdir()
            return candidate
    raise FileExistsError(f"{parent / stamp}: 999 runs started in the same second")


def run_metadata() -> dict[str, Any]:
    """What a ``config.json`` records beside the configuration: world size, library versions, git commit, time."""
    return {
        "world_size": idist.get_world_size(),
        "versions": library_versions(),
        "git": _git_state(),
        "saved": datetime.now().isoformat(timespec="seconds"),
    }


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def plain(value: Any) -> Any:
    """``value`` with every dataclass instance, also inside mappings, turned into a dict (for JSON)."""
    if _is_dataclass_instance(value):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value


def library_versions() -> dict[str, str | None]:
    """Versions of python and of the libraries a result depends on (``cuda`` is None on CPU builds of torch)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "ignite": ignite.__version__,
        "numpy": np.__version__,
    }


def _git_state() -> dict[str, Any] | None:
    """Commit of the repository and whether the working tree had changes, or None outside a git checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=folder_locations.REPOSITORY, capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


def resolve_device(name: str | None) -> torch.device:
    """The device a run asked for.

    Args:
        name: ``None`` or ``"auto"`` (this process's GPU if there is one, else the CPU), or any torch device name
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Raises:
        ValueError: the name is not a device, or names a CUDA device this machine does not have.
    """
    if name is None or name == "auto":
        return idist.device()
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a torch device name ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested, but torch finds no CUDA device; use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (None: leave as is), restoring the number after.

    The demo scale's tiny networks run fastest on one thread: the thread pool's overhead outweighs their work,
    badly so when the cores are shared with other jobs.
    """
    if count is None:
        yield
        return
    if count < 1:
        raise ValueError(f"count: expected a positive number of threads or None, got {count}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
