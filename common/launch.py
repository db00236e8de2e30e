"""Starting a training function in this process or in several, through ``ignite.distributed.Parallel``.

The papers' entry points follow Ignite's cifar10 example: ``launch(training, config, nproc_per_node=...,
backend=...)`` calls ``training(local_rank, config)`` once per process. One process (``backend=None``) is the
default and runs in the calling process; ``"gloo"`` spreads over CPU processes, ``"nccl"`` over GPUs. Under
``torchrun`` pass the backend alone: every process joins the group torchrun set up. A data-parallel training
then calls its paper's ``engine.fit`` on every rank (``common.data_parallel``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
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
    """
    _check_arguments(nproc_per_node, backend)
    spawn: dict[str, int] = {}
    if backend is not None and nproc_per_node is not None:
        spawn = {"nproc_per_node": nproc_per_node, "master_port": int(os.environ.get("MASTER_PORT") or free_port())}
    with idist.Parallel(backend=backend, **spawn) as parallel:
        parallel.run(_run_and_wait_for_every_rank, training_fn, config)


def _run_and_wait_for_every_rank(local_rank: int, training_fn: Callable[[int, Any], None], config: Any) -> None:
    """Run ``training_fn``, then wait at a barrier: a rank that left the process group while another still
    used it (rank 0 saving a last checkpoint, say) made gloo abort the process with SIGABRT."""
    training_fn(local_rank, config)
    if idist.get_world_size() > 1:
        idist.barrier()


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
