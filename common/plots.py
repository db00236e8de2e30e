"""Figures of a run, written as PNG files into the cell's folder and as the same images to tensorboard.

Score plots (:func:`write_score_plots`): per evaluated OOD set, ``roc-<set>.png`` (the ROC curve of every score)
and ``hist-<set>.png`` (the in-distribution and OOD score histograms, one panel per score). Image grids
(:func:`visible_grid`): samples, inputs and reconstructions, memory slots, enlarged with nearest neighbour until each
side has at least :data:`MIN_SIDE` pixels. Bar charts (:func:`bar_figure`): values per level, per model, ...

matplotlib draws on its Agg canvas through the object-oriented API only (``matplotlib.figure.Figure``, never
pyplot), so no GUI backend is chosen or needed and no figure stays registered after use. A figure is rendered once
to RGB pixels; OpenCV encodes them as the PNG file (written atomically) and as the tensorboard image. matplotlib
takes over half a second to import: import this module inside the functions that plot, never at the top of a
module ``main.py`` loads (``python main.py --help`` stays instant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from ignite.handlers import TensorboardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.cells import id_part
from common.files import write_bytes_atomically
from common.handlers import as_uint8_images, encode_png, image_grid, log_image
from common.metrics import ArrayLike, ood_metrics, validate_ood_inputs

MIN_SIDE = 256
"""Image grids are enlarged until both sides have at least this many pixels."""
DPI = 100
HISTOGRAM_BINS = 50
CLIPPED_QUANTILES = (0.005, 0.995)
"""Histogram bins span these quantiles of both sets' scores; scores beyond them count in the outermost bins."""
LARGEST_EDGE = 1e300
"""Histogram edges stay within ±this, so that the bins' span is a finite float64 (InvGlow scores a non-finite
likelihood as the largest float64)."""


class ScorePair(NamedTuple):
    """One score of the in-distribution samples and of one OOD set's samples (higher = more anomalous)."""

    inside: np.ndarray
    outside: np.ndarray

    def joined(self) -> tuple[np.ndarray, np.ndarray]:
        """All scores, and the OOD flags marking the ``outside`` ones."""
        flags = np.concatenate([np.zeros(len(self.inside), bool), np.ones(len(self.outside), bool)])
        return np.concatenate([self.inside, self.outside]), flags


def roc_curve(scores: ArrayLike, is_ood: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve, OOD positive, flagging the scores >= each threshold (``common.metrics`` conventions).

    Returns:
        (FPR, TPR): from (0, 0) one point per distinct score, from the highest down, ending at (1, 1); the points
        of sklearn's ``roc_curve(is_ood, scores, drop_intermediate=False)``.

    Raises:
        ValueError: on invalid inputs (``common.metrics.validate_ood_inputs``) or when one class is missing.
    """
    values, flags = validate_ood_inputs(scores, is_ood)
    order = np.argsort(-values)
    values, flags = values[order], flags[order]
    last = np.append(np.flatnonzero(np.diff(values)), values.size - 1)  # the last sample of each distinct score
    flagged_ood = np.cumsum(flags)[last]
    flagged_id = last + 1 - flagged_ood
    if flagged_ood[-1] == 0 or flagged_id[-1] == 0:
        raise ValueError(f"a ROC curve needs both classes, got {flagged_id[-1]} ID and {flagged_ood[-1]} OOD")
    return np.append(0, flagged_id) / flagged_id[-1], np.append(0, flagged_ood) / flagged_ood[-1]


def roc_figure(pairs: Mapping[str, ScorePair], title: str) -> Figure:
    """One ROC curve per score of ``pairs`` (score name → scores), with its AUROC in the legend."""
    figure = Figure(figsize=(5, 5), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    for name, pair in pairs.items():
        scores, is_ood = pair.joined()
        auroc = ood_metrics(scores, is_ood, keys=("AUROC",))["AUROC"]
        axes.plot(*roc_curve(scores, is_ood), label=f"{name} (AUROC {100 * auroc:.1f} %)")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), title=title, aspect="equal")
    axes.set(xlabel="false-positive rate (in-distribution flagged)", ylabel="true-positive rate (OOD flagged)")
    axes.legend(loc="lower right")
    return figure


def _bin_edges(scores: np.ndarray) -> np.ndarray:
    """:data:`HISTOGRAM_BINS` equal bins over the :data:`CLIPPED_QUANTILES` of ``scores`` (widened if one value)."""
    low, high = np.clip(np.quantile(scores, CLIPPED_QUANTILES, method="nearest"), -LARGEST_EDGE, LARGEST_EDGE)
    if high == low:
        pad = max(0.5, abs(low) * 1e-6)
        low, high = low - pad, high + pad
    return np.linspace(low, high, HISTOGRAM_BINS + 1)


def score_histogram_figure(pairs: Mapping[str, ScorePair], title: str, in_name: str, out_name: str) -> Figure:
    """Per score of ``pairs`` a panel of the in-distribution and OOD histograms (densities, shared bins)."""
    figure = Figure(figsize=(4.5 * len(pairs), 3.5), dpi=DPI, layout="constrained")
    for axes, (name, pair) in zip(figure.subplots(1, len(pairs), squeeze=False)[0], pairs.items(), strict=True):
        edges = _bin_edges(np.concatenate(pair))
        for scores, label in ((pair.inside, in_name), (pair.outside, out_name)):
            shown = np.clip(scores, edges[0], edges[-1])
            axes.hist(shown, edges, density=True, histtype="stepfilled", alpha=0.5, label=f"{label} (n={len(scores)})")
        axes.set(title=name, xlabel="score (higher = more anomalous)", ylabel="density")
        axes.legend()
    figure.suptitle(title)
    return figure


def bar_figure(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> Figure:
    """A bar per label, its value written above it."""
    figure = Figure(figsize=(max(4.0, 0.6 * len(labels) + 1.5), 3.5), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    axes.bar_label(axes.bar(list(labels), list(values)), fmt="%.1f")
    axes.margins(y=0.12)  # room for the labels above the bars
    axes.set(title=title, ylabel=ylabel)
    return figure


def figure_image(figure: Figure) -> torch.Tensor:
    """``figure`` rendered by Agg as a uint8 RGB image (3, H, W)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return torch.from_numpy(np.asarray(canvas.buffer_rgba())[..., :3].copy()).permute(2, 0, 1)


def upscale_grid(grid: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """An image (C, H, W) enlarged with nearest neighbour by the smallest integer factor giving both sides at least
    ``min_side`` pixels."""
    factor = max(1, math.ceil(min_side / min(grid.shape[-2:])))
    return grid.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def stacked_grid(groups: Sequence[torch.Tensor], nrow: int) -> torch.Tensor:
    """Groups of images (N_i, C, H, W), uint8 or float in [0, 1], as one uint8 grid (C, H', W') of ``nrow`` images
    per row, each group starting on a new row (its last row filled with black tiles)."""
    tiles = []
    for images in groups:
        images = as_uint8_images(images).cpu()
        tiles += [images, images.new_zeros((-len(images) % nrow, *images.shape[1:]))]
    return image_grid(torch.cat(tiles), nrow=nrow)


def visible_grid(groups: Sequence[torch.Tensor], nrow: int, min_side: int = MIN_SIDE) -> torch.Tensor:
    """:func:`stacked_grid` enlarged by :func:`upscale_grid`: small images become visible."""
    return upscale_grid(stacked_grid(groups, nrow), min_side)


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write a uint8 image (C, H, W) as a PNG file, atomically (its folder is created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomically(path, encode_png(image))


def write_image(
    path: Path, image: torch.Tensor, tensorboard: TensorboardLogger | None = None, tag: str = "", step: int = 0
) -> Path:
    """Save a uint8 image (C, H, W) as ``path`` and log it to ``tensorboard`` (if given) as ``tag`` at ``step``."""
    save_png(image, path)
    log_image(tensorboard, tag, image, step)
    return path


def write_figure(
    path: Path, figure: Figure, tensorboard: TensorboardLogger | None = None, tag: str = "", step: int = 0
) -> Path:
    """Render ``figure`` once; save it as ``path`` and log it to ``tensorboard`` (if given) as ``tag``."""
    return write_image(path, figure_image(figure), tensorboard, tag, step)


def _float_vector(values: ArrayLike) -> np.ndarray:
    return torch.as_tensor(values).detach().cpu().double().numpy()


def write_score_plots(
    folder: Path,
    scores: Mapping[str, ArrayLike],
    set_ids: ArrayLike,
    set_names: Sequence[str],
    tensorboard: TensorboardLogger | None = None,
    step: int = 0,
) -> list[Path]:
    """``roc-<set>.png`` and ``hist-<set>.png`` in ``folder`` for every OOD set present, logged to ``tensorboard``
    as ``roc/<set>`` and ``score_histogram/<set>`` at ``step``.

    Args:
        folder: the cell's folder.
        scores: score name → (N,) outlier scores (higher = more anomalous) of every evaluated sample.
        set_ids: (N,) index into ``set_names`` of each sample's set; 0 is the in-distribution set.
        set_names: names of the sets; ``<set>`` in the file names is :func:`common.cells.id_part` of the name.
        tensorboard: the cell's tensorboard logger, or None (PNG files only).
        step: the tensorboard step (the trainer's epoch).

    Returns:
        The files written.
    """
    ids = np.asarray(torch.as_tensor(set_ids).cpu())
    values = {name: _float_vector(score) for name, score in scores.items()}
    inside, written = set_names[0], []
    for index, name in enumerate(set_names[1:], start=1):
        chosen = ids == index
        if not chosen.any():
            continue
        pairs = {score: ScorePair(v[ids == 0], v[chosen]) for score, v in values.items()}
        roc = roc_figure(pairs, f"ROC: {inside} vs {name}")
        histogram = score_histogram_figure(pairs, f"Scores: {inside} vs {name}", inside, name)
        written += [
            write_figure(folder / f"roc-{id_part(name)}.png", roc, tensorboard, f"roc/{name}", step),
            write_figure(folder / f"hist-{id_part(name)}.png", histogram, tensorboard, f"score_histogram/{name}", step),
        ]
    return written
