"""Starting a training function in this process or in several, through ``ignite.distributed.Parallel``.

The papers' entry points follow Ignite's cifar10 example: ``launch(training, config, nproc_per_node=...,
backend=...)`` calls ``training(local_rank, config)`` once per process. One process (``backend=None``) is the
default and runs in the calling process; ``"gloo"`` spreads over CPU processes, ``"nccl"`` over GPUs. Under
``torchrun`` pass the backend alone: every process joins the group torchrun set up. A data-parallel training
then calls its paper's ``engine.fit`` on every rank (``common.data_parallel``).
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch


def launch(
    training_fn: Callable[[int, Any], None],
    config: Any,
    *,
    nproc_per_node: int | None = None,
    backend: str | None = None,
) -> None:
    """Run ``training_fn(local_rank, config)`` in this process, or in ``nproc_per_node`` processes.

    Args:
        training_fn: a module-level function (spawned processes import it by name) that builds the data, model and
            engines and trains. Its return value is dropped: processes report through files in the run folder.
        config: the run's configuration, given to every process (must be picklable when spawning).
        nproc_per_node: number of processes to spawn on this machine (needs ``backend``). ``None``: run here; with a
            backend, join the process group an external launcher set up (``torchrun``).
        backend: ``None`` (one process, no torch.distributed), ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per process).
            When spawning, the processes meet on ``MASTER_PORT`` if the environment sets it, else on a free port.

    Raises:
        ValueError: the backend is not available in this torch build or needs GPUs this machine lacks, or
            ``nproc_per_node`` is not a positive number or asks for several processes without a backend.
        Exception: what ``training_fn`` raised; in spawned processes the first error raised by any rank (not the
            broken-connection errors it then causes on the others), with that process's traceback as its cause.
    """
    _check_arguments(nproc_per_node, backend)
    if backend is None or nproc_per_node is None:  # this process runs, or joins torchrun's group: errors raise here
        with idist.Parallel(backend=backend) as parallel:
            parallel.run(_run_and_wait_for_every_rank, training_fn, config, None)
        return
    port = int(os.environ.get("MASTER_PORT") or free_port())
    with tempfile.TemporaryDirectory(prefix="launch-errors-") as errors:
        try:
            with idist.Parallel(backend=backend, nproc_per_node=nproc_per_node, master_port=port) as parallel:
                parallel.run(_run_and_wait_for_every_rank, training_fn, config, errors)
        except Exception:
            first = _first_error(Path(errors))
            if first is None:
                raise
            raise first from first.__cause__


class RemoteTraceback(Exception):
    """The traceback of an error raised in a spawned process, as text (the ``__cause__`` of the error re-raised)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _run_and_wait_for_every_rank(
    local_rank: int, training_fn: Callable[[int, Any], None], config: Any, errors: str | None
) -> None:
    """Run ``training_fn``, then wait at a barrier: a rank that left the process group while another still
    used it (rank 0 saving a last checkpoint, say) made gloo abort the process with SIGABRT.

    When ``training_fn`` raises in a spawned process, the error and its traceback are written to ``errors``
    first (the other ranks then fail on the broken group, and the spawner reports whichever process ended first:
    :func:`launch` re-raises the first error written instead), and the group is destroyed, since Ignite skips its
    finalisation and a gloo group alive at the interpreter's exit can abort the process (pytorch issue 190489).
    """
    try:
        training_fn(local_rank, config)
    except BaseException as error:
        if errors is not None:
            _write_error(Path(errors), error)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    if idist.get_world_size() > 1:
        idist.barrier()


def _write_error(folder: Path, error: BaseException) -> None:
    """Record ``error`` with its traceback as ``<time_ns>-<pid>.pickle`` in ``folder`` (written, then renamed)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        payload = pickle.dumps((error, text))
    except Exception:  # an exception that does not pickle travels as its text
        payload = pickle.dumps((RuntimeError(f"{type(error).__name__}: {error}"), text))
    partial = folder / f".{os.getpid()}.partial"
    partial.write_bytes(payload)
    partial.rename(folder / f"{time.time_ns():020d}-{os.getpid()}.pickle")


def _first_error(folder: Path) -> BaseException | None:
    """The error written first into ``folder`` by :func:`_write_error`, its traceback as its cause; None if none."""
    written = sorted(folder.glob("*.pickle"))
    if not written:
        return None
    error, text = pickle.loads(written[0].read_bytes())  # written by our own workers moments ago
    error.__cause__ = RemoteTraceback(text)
    return error


def _check_arguments(nproc_per_node: int | None, backend: str | None) -> None:
    if nproc_per_node is not None and nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be a positive number of processes, got {nproc_per_node}")
    if backend is None:
        if nproc_per_node not in (None, 1):
            raise ValueError(f"nproc_per_node={nproc_per_node} needs a backend: 'gloo' on CPUs, 'nccl' on GPUs")
        return
    if backend == "nccl":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise ValueError("backend 'nccl' needs CUDA GPUs and torch finds none; use backend='gloo' on CPUs")
        if nproc_per_node is not None and nproc_per_node > gpus:
            raise ValueError(f"backend 'nccl' runs one process per GPU: {nproc_per_node} asked, {gpus} present")
    available = idist.available_backends()
    if backend not in available:
        raise ValueError(f"backend {backend!r} is not available in this torch build; available: {list(available)}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
