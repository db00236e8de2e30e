"""The one-class protocol of MemAE (Sec. 4.1) and C-MemAE's data selection, on any labelled ``ImageSet``.

- Training: the training images of the normal class(es) only; few-shot runs keep ``shots`` random images per
  class (C-MemAE keeps ``shots`` in total for a group; ours is per class, see the README).
- Test, per normal class: every test image of that class plus ``int(n · f / (1 − f))`` anomalies (f = 0.3)
  drawn without replacement from the other classes' test images, as the C-MemAE code does; the anomaly share
  is then ~30 %. The draw is seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch

from common.datasets import ImageSet
from common.transforms import BatchPipeline, normalize, to_float

ANOMALY_FRACTION = 0.3  # "anomaly proportion of about 30 %" (Sec. 4.1); test_proportion_anomaly in C-MemAE


def normalisation(channels: int) -> BatchPipeline:
    """uint8 images → float in [−1, 1] (``(u/255 − 0.5) / 0.5``, the official code's normalisation)."""
    return BatchPipeline([to_float, partial(normalize, mean=(0.5,) * channels, std=(0.5,) * channels, inplace=True)])


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalisation` for display: [−1, 1] → [0, 1] (clamped)."""
    return (images * 0.5 + 0.5).clamp(0, 1)


def _indices_of(labels: torch.Tensor, classes: Sequence[int], what: str) -> dict[int, np.ndarray]:
    found = {int(c): np.flatnonzero(labels.numpy() == c) for c in classes}
    empty = [c for c, indices in found.items() if len(indices) == 0]
    if empty:
        present = sorted(set(labels.tolist()))
        raise ValueError(f"class(es) {empty} have no {what} images; the labels present are {present}")
    return found


def training_set(
    data: ImageSet, classes: Sequence[int], shots: int | None = None, rng: np.random.Generator | None = None
) -> ImageSet:
    """The training images of ``classes``; with ``shots``, that many random images of each class.

    Raises:
        ValueError: a class has no images, ``shots`` < 1, or a class has fewer than ``shots`` images.
    """
    per_class = _indices_of(data.labels, classes, "training")
    if shots is not None:
        if shots < 1:
            raise ValueError(f"shots must be a positive number of images per class, got {shots}")
        if rng is None:
            raise ValueError("few-shot sampling needs rng (a seeded numpy Generator)")
        short = {c: len(i) for c, i in per_class.items() if len(i) < shots}
        if short:
            raise ValueError(f"shots={shots} exceeds the training images of class(es) {short}")
        per_class = {c: np.sort(rng.choice(indices, shots, replace=False)) for c, indices in per_class.items()}
    chosen = torch.from_numpy(np.sort(np.concatenate(list(per_class.values()))))
    return ImageSet(data.images[chosen], data.labels[chosen])


def anomaly_count(n_normal: int, anomaly_fraction: float = ANOMALY_FRACTION) -> int:
    """Anomalies beside ``n_normal`` normal test images: ``int(n · f / (1 − f))`` (C-MemAE's rounding)."""
    return int(n_normal * anomaly_fraction / (1.0 - anomaly_fraction))


def one_class_test_set(
    data: ImageSet, normal_class: int, rng: np.random.Generator, anomaly_fraction: float = ANOMALY_FRACTION
) -> ImageSet:
    """All test images of ``normal_class`` plus ``int(n · f / (1 − f))`` anomalies from the other classes.

    Labels are kept (anomalies carry their own class); anomalous = ``label != normal_class``.

    Raises:
        ValueError: ``anomaly_fraction`` outside (0, 1), no normal images, so few that no anomaly is drawn, or
            too few images of other classes.
    """
    if not 0.0 < anomaly_fraction < 1.0:
        raise ValueError(f"anomaly_fraction must be in (0, 1), got {anomaly_fraction}")
    normal = _indices_of(data.labels, [normal_class], "test")[normal_class]
    others = np.flatnonzero(data.labels.numpy() != normal_class)
    count = anomaly_count(len(normal), anomaly_fraction)
    if count == 0:
        raise ValueError(
            f"class {normal_class} has only {len(normal)} test image(s): too few for one anomaly at "
            f"anomaly_fraction={anomaly_fraction}"
        )
    if count > len(others):
        raise ValueError(f"{count} anomalies needed for class {normal_class}, but only {len(others)} other images")
    chosen = torch.from_numpy(np.concatenate([normal, np.sort(rng.choice(others, count, replace=False))]))
    return ImageSet(data.images[chosen], data.labels[chosen])
