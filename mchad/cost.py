"""What each MCHAD cell costs (:class:`common.cells.Cost`), from the main table's configuration and dataset sizes.

A cell trains ``epochs`` epochs of ⌈n / 128⌉ ID batches (no ``drop_last``), at most ``max_batches`` (392) per epoch
as the original's ``limit_train_batches`` (:class:`mchad.data.LimitedLoader`); a G-variant draws an outlier batch
beside each. It evaluates every ``eval_every`` epochs and after the last (:mod:`common.costs`), each time the ID
test set (its first ``n_classes`` classes) and every OOD set. Sizes: ``common.datasets.sizes``.
"""

from __future__ import annotations

from common.cells import Cost
from common.costs import training_cost
from common.datasets.sizes import images_of_classes, size
from mchad.config import HELD_OUT_DIGITS, DatasetConfig, MethodConfig, TrainConfig


def ood_images(dataset: DatasetConfig, source: str, train: TrainConfig) -> int:
    """Images of one OOD test set as :func:`mchad.data.ood_set` reads it."""
    if source.endswith("-noise"):
        return train.noise_count
    if source == HELD_OUT_DIGITS:  # the digits of the classes not trained on, from both splits
        options = dict(dataset.source_options)
        every = {split: size(dataset.source, split, **options) for split in ("train", "test")}
        trained = {split: images_of_classes(dataset.source, split, dataset.n_classes, **options) for split in every}
        return sum(every[split] - trained[split] for split in every)
    return size(source, "test")


def evaluation_images(dataset: DatasetConfig, train: TrainConfig) -> int:
    """Images of one evaluation: the ID test set and every OOD set."""
    options = dict(dataset.source_options)
    id_test = images_of_classes(dataset.source, "test", dataset.n_classes, **options)
    return id_test + sum(ood_images(dataset, source, train) for _, source in dataset.ood_sets)


def cell_cost(dataset: DatasetConfig, method: MethodConfig, train: TrainConfig) -> Cost:
    """Steps and images of training ``method`` on ``dataset`` and its evaluations."""
    return training_cost(
        dataset.epochs,
        images_of_classes(dataset.source, "train", dataset.n_classes, **dict(dataset.source_options)),
        train.batch_size,
        max_batches=dataset.max_batches,
        outlier_batch_size=train.outlier_batch_size if method.outliers else 0,
        evaluated=evaluation_images(dataset, train),
        eval_every=train.eval_every,
    )
