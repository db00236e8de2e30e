"""Smoke runs (``--smoke``): the configuration as it is, but every training 2 steps and every evaluation ≤ 2 batches,
each batch of at most 4 images.

A smoke run goes through every model, stage, dataset, score and table of a scale in minutes, the convention of
Lightning's ``fast_dev_run``; its numbers mean nothing. The runner turns the limits on around each cell of a run
whose settings say ``smoke`` (:func:`smoke_limits`); the engines ask :func:`active` through the helpers here:
``common.handlers.setup_handlers`` ends a training after :data:`TRAINING_STEPS` steps (and a data-dependent
initialisation reads as many batches, :func:`training_batches`), the evaluation loaders keep
:data:`EVALUATION_BATCHES` batches of each set (:func:`evaluation_subset`), and every batch holds at most
:data:`BATCH_IMAGES` images (:func:`capped_batch_size`). That last limit is what lets a smoke run of the paper-size
models finish on a CPU: one step of the paper's Glow at its batch of 64 takes 15–20 s on 2 cores, an evaluation
batch of 512 a minute, while every code path a batch goes through is the same at 4 images (per process, two per
rank of a two-process run). The configuration recorded in ``config.json`` keeps the configured batch sizes, and
the global-batch checks of data-parallel runs apply to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from ignite.engine import Engine, Events

TRAINING_STEPS = 2
EVALUATION_BATCHES = 2
BATCH_IMAGES = 4
TABLE_MARK = " [smoke run: numbers mean nothing]"
"""Appended to the title of every table a smoke run assembles."""

_ACTIVE: ContextVar[bool] = ContextVar("smoke", default=False)


@contextmanager
def smoke_limits(enabled: bool) -> Iterator[None]:
    """Apply (or, with ``enabled`` False, lift) the smoke limits to the code run inside."""
    token = _ACTIVE.set(enabled)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active() -> bool:
    """Whether the code is running inside :func:`smoke_limits` (True)."""
    return _ACTIVE.get()


def limit_training(trainer: Engine) -> None:
    """In a smoke run, end ``trainer``'s run after :data:`TRAINING_STEPS` steps (its ``COMPLETED`` handlers run)."""
    if active():
        enough = Events.ITERATION_COMPLETED(event_filter=lambda _, iteration: iteration >= TRAINING_STEPS)
        trainer.add_event_handler(enough, Engine.terminate)


def training_batches(count: int) -> int:
    """``count`` batches of training data to read before the steps (a data-dependent initialisation), or in a smoke
    run at most :data:`TRAINING_STEPS` of them."""
    return min(count, TRAINING_STEPS) if active() else count


def capped_batch_size(size: int, world_size: int = 1) -> int:
    """Samples per global batch: ``size``, or in a smoke run at most :data:`BATCH_IMAGES`, a multiple of
    ``world_size`` (so that every data-parallel process keeps a share)."""
    if not active() or size <= BATCH_IMAGES:
        return size
    return max(world_size, BATCH_IMAGES - BATCH_IMAGES % world_size)


def evaluation_subset(count: int, batch_size: int) -> torch.Tensor | slice:
    """The samples of a set of ``count`` to evaluate: all of them, or in a smoke run at most
    :data:`EVALUATION_BATCHES` batches' worth spread evenly over the set (sets sorted by class keep every class).
    """
    limit = EVALUATION_BATCHES * capped_batch_size(batch_size)
    if not active() or count <= limit:
        return slice(None)
    return torch.linspace(0, count - 1, limit).round().long()
