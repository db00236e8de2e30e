"""What each InvGlow cell costs (:class:`common.cells.Cost`), from its configuration and the dataset sizes.

Every training drops the last incomplete batch (⌊n / 64⌋ steps per epoch at the paper scale), a finetuning with an
outlier loss draws a Tiny batch of the same size beside each batch, and every epoch ends with an evaluation of the
in-distribution (or Tiny) test set and the OOD sets (:mod:`common.costs`). The ActNorm initialisation of a model
trained from scratch (``init_batches`` batches, one forward pass) is not counted. Sizes: the Tiny subset as
``create_tiny.py`` cuts it (24,415 chunks of 64, 80 % of the chunks train), ``common.datasets.sizes`` for the
others; at the demo scale the generated sets' sizes of the configuration.
"""

from __future__ import annotations

from common.cells import Cost
from common.costs import training_cost
from common.datasets import sizes
from common.tiny_builder import CHUNK_SIZE
from invglow.config import InvGlowConfig, TrainConfig
from invglow.data import demo_tiny_chunks, source_split, tiny_train_chunks


def tiny_images(config: InvGlowConfig, split: str) -> int:
    """Images of the ``"train"`` or ``"test"`` part of the Tiny subset (:func:`invglow.data.tiny_split_rows`)."""
    if config.scale == "demo":
        n_chunks = demo_tiny_chunks(config.data.demo_tiny_images)
    else:
        n_chunks = sizes.size("tiny-images-subset", "train") // CHUNK_SIZE
    train = tiny_train_chunks(n_chunks)
    return CHUNK_SIZE * (train if split == "train" else n_chunks - train)


def set_images(config: InvGlowConfig, name: str, split: str) -> int:
    """Images of set ``name`` as :func:`invglow.data.image_set` reads it."""
    if config.scale != "demo":
        return sizes.size(name, source_split(name, split))
    n = config.data.demo_train if split == "train" else config.data.demo_test
    if name == "digits-rgb":  # the first n digits of the split (invglow.data.colour_digits)
        return min(n, sizes.size("digits", split))
    return n


def ood_images(config: InvGlowConfig, in_name: str) -> int:
    """Images of every OOD test set of ``config`` but ``in_name``."""
    return sum(set_images(config, name, "test") for name in config.data.ood if name != in_name)


def _fit_cost(train: TrainConfig, images: int, evaluated: int, outliers: bool = False) -> Cost:
    """A training by :func:`invglow.engine.fit`: ``drop_last``, evaluated after every epoch."""
    extra = train.batch_size if outliers else 0
    return training_cost(
        train.epochs, images, train.batch_size, drop_last=True, outlier_batch_size=extra, evaluated=evaluated
    )


def pretrain_cost(config: InvGlowConfig) -> Cost:
    """The Tiny pretraining of ``config`` (a group's configuration), evaluated on Tiny test and every OOD set."""
    evaluated = tiny_images(config, "test") + ood_images(config, "tiny")  # as invglow.data.eval_sets("tiny", ...)
    return _fit_cost(config.pretrain, tiny_images(config, "train"), evaluated)


def finetune_cost(config: InvGlowConfig, in_name: str, outliers: bool) -> Cost:
    """A finetuning on ``in_name`` (with Tiny outlier batches when ``outliers``), evaluated on its test set and the
    other OOD sets."""
    evaluated = set_images(config, in_name, "test") + ood_images(config, in_name)
    return _fit_cost(config.finetune, set_images(config, in_name, "train"), evaluated, outliers)


def from_scratch_cost(config: InvGlowConfig, in_name: str) -> Cost:
    """A full, local or dense model trained from scratch on ``in_name`` (local vs semantic)."""
    evaluated = set_images(config, in_name, "test") + ood_images(config, in_name)
    return _fit_cost(config.local_semantic.train, set_images(config, in_name, "train"), evaluated)
