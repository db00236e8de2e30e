"""What each MemAE / C-MemAE cell costs (:class:`common.cells.Cost`), from its configuration and the dataset sizes.

A cell trains on the training images of its class(es) (``drop_last`` off, so ⌈n / B⌉ steps per epoch) and runs its
evaluations every ``eval_every`` epochs and after the last (:mod:`common.costs`); each evaluation is one pass over
the one-class test set of a class: its test images and ⌊n · 0.3 / 0.7⌋ anomalies (:func:`memae.data.anomaly_count`).
Sizes: ``common.datasets.sizes`` (the published MNIST / CIFAR-10 class counts; at the demo scale the digits split).
"""

from __future__ import annotations

from collections.abc import Sequence

from common.cells import Cost
from common.costs import training_cost
from common.datasets.sizes import class_counts
from memae.config import ConditionalSetting, DataConfig, TrainConfig
from memae.data import anomaly_count


def training_images(data: DataConfig, classes: Sequence[int]) -> int:
    """Training images of ``classes`` of ``data``."""
    counts = class_counts(data.name, "train", **data.load_options)
    return sum(counts[c] for c in classes)


def test_images(data: DataConfig, normal_class: int) -> int:
    """Images of the one-class test set of ``normal_class``: its test images and the anomalies drawn beside them."""
    normal = class_counts(data.name, "test", **data.load_options)[normal_class]
    return normal + anomaly_count(normal)


def one_class_cost(data: DataConfig, train: TrainConfig, normal_class: int) -> Cost:
    """A model trained on one class and evaluated on its test set (image table, C-MemAE's per-class MemAE)."""
    return training_cost(
        train.epochs,
        training_images(data, [normal_class]),
        train.batch_size,
        evaluated=test_images(data, normal_class),
        eval_every=train.eval_every,
    )


def group_cost(setting: ConditionalSetting, group: Sequence[int], evaluations_per_class: int) -> Cost:
    """A conditional model trained on ``group``, each class evaluated ``evaluations_per_class`` ways (memory
    selection modes) at every evaluation."""
    evaluated = evaluations_per_class * sum(test_images(setting.data, c) for c in group)
    return training_cost(
        setting.train.epochs,
        training_images(setting.data, group),
        setting.train.batch_size,
        evaluated=evaluated,
        eval_every=setting.train.eval_every,
    )


def few_shot_cost(setting: ConditionalSetting, trains: bool, shots: int, new_class: int) -> Cost:
    """A few-shot fine-tuning on ``shots`` images of ``new_class`` (a strategy that does not train: one evaluation)."""
    evaluated = test_images(setting.data, new_class)
    if not trains:
        return Cost(images=evaluated)
    train = setting.few_shot.train
    return training_cost(train.epochs, shots, train.batch_size, evaluated=evaluated, eval_every=train.eval_every)
