"""What a training costs in optimiser steps and images (:class:`common.cells.Cost`), counted as the engines run it.

A training of ``epochs`` epochs over ``n`` images in batches of ``B`` takes ``common.loaders.batch_count`` batches per
epoch (the loaders' own count: ``n // B`` with ``drop_last``, else rounded up), at most ``max_batches`` where a paper
caps an epoch, one optimiser step each. Its images are those of its batches (and of the outlier batches drawn
beside them), plus those of every evaluation: ``common.handlers.setup_handlers`` evaluates every ``eval_every``
epochs and after the last epoch unless it has just been evaluated. A smoke run (``--smoke``) is not what is counted:
a cost is that of the configuration as it runs in full. Images are counted once per pass through the data, also
where they go through two networks (a finetuned model and its base model).
"""

from __future__ import annotations

from common.cells import Cost
from common.loaders import batch_count


def evaluation_count(epochs: int, eval_every: int = 1) -> int:
    """Evaluations of a training of ``epochs`` epochs by ``setup_handlers(eval_every=...)``: ⌈epochs / eval_every⌉."""
    return -(-epochs // eval_every)


def epoch_batches(images: int, batch_size: int, *, drop_last: bool = False, max_batches: int | None = None) -> int:
    """Batches (optimiser steps) of one epoch over ``images`` images."""
    batches = batch_count(images, batch_size, drop_last)
    return batches if max_batches is None else min(batches, max_batches)


def training_cost(
    epochs: int,
    images: int,
    batch_size: int,
    *,
    drop_last: bool = False,
    max_batches: int | None = None,
    outlier_batch_size: int = 0,
    evaluated: int = 0,
    eval_every: int = 1,
) -> Cost:
    """Steps and images of a training and its evaluations.

    Args:
        epochs: epochs trained.
        images: images of the training set.
        batch_size: images per step; ``drop_last`` and ``max_batches`` as the training loader.
        outlier_batch_size: images of the outlier batch drawn beside each batch (0: none).
        evaluated: images of one evaluation (every set evaluated at once).
        eval_every: epochs between evaluations.
    """
    batches = epoch_batches(images, batch_size, drop_last=drop_last, max_batches=max_batches)
    per_epoch = min(batches * batch_size, images) + batches * outlier_batch_size
    return Cost(epochs * batches, epochs * per_epoch + evaluation_count(epochs, eval_every) * evaluated)
