"""Anomaly scores of InvGlow (Schirrmeister et al., NeurIPS 2020, Sec. 3–4) and the Serra et al. PNG baseline.

One path for every user (evaluator, tables, library calls): per-scale log-densities lp (N, L) of a set under the
in-distribution ("fine") model and, for the ratio, the general ("base", Tiny) model → :func:`anomaly_scores`.
Convention: **higher = more anomalous** (OOD positive). The paper ranks by log-likelihoods, where higher means
in-distribution; each score below is therefore the *negated* quantity of the paper:

- ``raw``: −log p_fine(x) (paper: raw likelihood; same ranking as bits/dim);
- ``ratio``: −(log p_fine(x) − log p_base(x)) (paper: likelihood ratio / "diff to Tiny", Sec. 3);
- ``final_scale``: −lp_{L−1}(x), the last scale's contribution alone (paper: "4×4" scale, Sec. 4);
- Serra et al. (2020) input complexity: S = bpd_glow − bpd_png, already "higher = anomalous".

Non-finite log-densities are counted, warned about and scored as the most anomalous value, as the original
(which set them to 300,000 bpd / −3·10⁶ nats).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal, NamedTuple

import cv2
import numpy as np
import torch

from common.metrics import ood_metrics_per_set
from invglow.losses import bits_per_dim

ScoreKind = Literal["raw", "ratio", "final_scale"]
SCORE_KINDS: tuple[ScoreKind, ...] = ("raw", "ratio", "final_scale")
NON_FINITE_SCORE = float(np.finfo(np.float64).max)  # "most anomalous" stand-in for NaN/inf likelihoods
PNG_COMPRESSION = 9  # cv2.IMWRITE_PNG_COMPRESSION level of the original's Serra replication


class Scores(NamedTuple):
    """Outlier scores (N,) float64, and how many of them came from non-finite likelihoods."""

    values: np.ndarray
    non_finite: int


def _finite_scores(values: torch.Tensor, what: str) -> Scores:
    array = values.detach().cpu().double().numpy()
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if count:
        message = f"{what}: {count} of {array.size} likelihoods are not finite; scored as most anomalous"
        warnings.warn(message, stacklevel=3)
        array = np.where(bad, NON_FINITE_SCORE, array)
    return Scores(array, count)


def anomaly_scores(kind: ScoreKind, fine: torch.Tensor, base: torch.Tensor | None = None) -> Scores:
    """Outlier scores (higher = more anomalous) from per-scale log-densities.

    Args:
        kind: ``"raw"``, ``"ratio"`` or ``"final_scale"`` (see the module docstring).
        fine: per-scale log-densities (N, L) of the in-distribution model, in nats (L = 1: the total only).
        base: per-scale log-densities (N, L') of the general (Tiny) model on the same images; ``ratio`` needs it.
    """
    if fine.ndim != 2:
        raise ValueError(f"fine: expected per-scale log-densities (N, L), got shape {tuple(fine.shape)}")
    if kind == "raw":
        return _finite_scores(-fine.sum(1), "raw score")
    if kind == "final_scale":
        return _finite_scores(-fine[:, -1], "final-scale score")
    if kind == "ratio":
        if base is None:
            raise ValueError("ratio score: needs the general (Tiny) model's log-densities; pretrain or load it first")
        if base.ndim != 2 or len(base) != len(fine):
            raise ValueError(f"base: expected ({len(fine)}, L) log-densities like fine, got {tuple(base.shape)}")
        return _finite_scores(base.sum(1) - fine.sum(1), "ratio score")
    raise ValueError(f"kind: expected one of {', '.join(SCORE_KINDS)}, got {kind!r}")


def png_bits_per_dim(images: torch.Tensor, as_original: bool = False) -> np.ndarray:
    """Bits per dimension of each image losslessly compressed as PNG (Serra et al.'s complexity L(x) / D).

    ``8 · len(cv2.imencode(".png", image, [IMWRITE_PNG_COMPRESSION, 9])) / D``. OpenCV takes BGR, so RGB images
    are converted first; ``as_original=True`` reproduces the original replication, which passed RGB as if it were
    BGR (the PNG then stores red and blue swapped, which can change its size slightly).

    Args:
        images: uint8 (N, C, H, W), C = 1 (grey) or 3 (RGB).
        as_original: skip the RGB → BGR conversion, as the original code.

    Returns:
        (N,) float64.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images: expected uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    hwc = images.permute(0, 2, 3, 1).cpu().numpy()
    n_dims = hwc[0].size
    sizes = np.empty(len(hwc))
    for i, image in enumerate(hwc):
        if image.shape[2] == 3 and not as_original:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode image {i} as PNG")
        sizes[i] = len(png)
    return 8.0 * sizes / n_dims


def serra_scores(fine: torch.Tensor, images: torch.Tensor, as_original: bool = False) -> Scores:
    """Serra et al.'s input-complexity score S = bpd_glow(x) − bpd_png(x), higher = more anomalous.

    Args:
        fine: per-scale log-densities (N, L) of the in-distribution model on ``images`` (dequantized).
        images: the same images, uint8 (N, C, H, W).
        as_original: see :func:`png_bits_per_dim`.
    """
    if len(fine) != len(images):
        raise ValueError(f"fine, images: expected the same number of images, got {len(fine)} and {len(images)}")
    glow_bpd = bits_per_dim(fine.sum(1), images[0].numel())
    scores = _finite_scores(glow_bpd, "Serra score")
    return Scores(scores.values - png_bits_per_dim(images, as_original), scores.non_finite)


def score_kinds(fine: torch.Tensor, base: torch.Tensor | None) -> list[ScoreKind]:
    """The score kinds of these log-densities: ``ratio`` needs the base model's, ``final_scale`` several scales."""
    return [
        kind
        for kind in SCORE_KINDS
        if (base is not None or kind != "ratio") and (fine.shape[1] > 1 or kind != "final_scale")
    ]


def auroc_percent(in_distribution: np.ndarray, ood_sets: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The AUROC (%, as the paper prints) of in-distribution vs each OOD set's outlier scores, by set name; the
    in-distribution scores are sorted once for all sets (``common.metrics.ood_metrics_per_set``)."""
    per_set = ood_metrics_per_set(in_distribution, ood_sets, keys=("AUROC",))
    return {name: 100.0 * metrics["AUROC"] for name, metrics in per_set.items()}


def evaluate_sets(
    fine: torch.Tensor,
    base: torch.Tensor | None,
    set_ids: torch.Tensor,
    set_names: tuple[str, ...],
    n_dims: int,
) -> dict[str, float]:
    """Per-set bits/dim and, against set 0 (in-distribution), the AUROC (%) of every score available.

    The evaluator logs these every epoch and the experiments' tables read them: one score path.

    Args:
        fine: per-scale log-densities (N, L) of the in-distribution model (L = 1: the total only, e.g. the
            class-conditional model; then no final-scale score).
        base: the same for the general (Tiny) model, or None (then no ratio score).
        set_ids: (N,) index into ``set_names`` of each image; 0 is the in-distribution test set.
        set_names: names of the sets.
        n_dims: D, for bits/dim.

    Returns:
        ``bpd/<set>`` (mean over finite values), ``AUROC-<score>/<set>`` for every OOD set, and ``non_finite``
        (how many images had a non-finite likelihood).
    """
    ids = set_ids.cpu().numpy()
    if not (ids == 0).any():
        raise ValueError("set_ids: no in-distribution images (id 0) to compare the OOD sets with")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # counted in "non_finite" instead of one warning per score kind
        all_scores = {kind: anomaly_scores(kind, fine, base) for kind in score_kinds(fine, base)}
    if all_scores["raw"].non_finite:
        warnings.warn(
            f"{all_scores['raw'].non_finite} of {len(ids)} likelihoods are not finite; scored as most anomalous",
            stacklevel=2,
        )
    bpd = bits_per_dim(fine.sum(1), n_dims).detach().cpu().double().numpy()
    results = {"non_finite": float(all_scores["raw"].non_finite)}
    for index, name in enumerate(set_names):
        mask = ids == index
        finite = bpd[mask][np.isfinite(bpd[mask])]
        results[f"bpd/{name}"] = float(finite.mean()) if finite.size else float("nan")
    present = [(index, name) for index, name in enumerate(set_names) if index > 0 and (ids == index).any()]
    for kind, scores in all_scores.items():
        ood = {name: scores.values[ids == index] for index, name in present}
        aurocs = auroc_percent(scores.values[ids == 0], ood)
        results |= {f"AUROC-{kind}/{name}": value for name, value in aurocs.items()}
    return results
