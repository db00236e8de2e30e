"""OOD / anomaly detection metrics: a float64 functional core and an Ignite ``Metric`` over it.

Conventions (shared by the four papers, see DESIGN.md):

- a *score* is an outlier score: **higher = more anomalous**;
- ``is_ood`` marks the anomalous / out-of-distribution samples, the **positive class** unless a key says
  otherwise; a sample counts as *flagged* at threshold ``t`` when ``score >= t``;
- tied scores enter every curve together (one curve point per distinct score), so a tie counts ½ in AUROC;
- values are fractions in [0, 1].

Keys returned by :func:`ood_metrics` (n_ood / n_id = number of OOD / ID samples):

``AUROC``
    Area under ROC(score, is_ood), trapezoidal; equals sklearn ``roc_auc_score(is_ood, scores)``.
``AUPR-OUT``
    Average precision with OOD positive on the score, the step-wise sum Σ (R_k − R_{k−1}) P_k over distinct
    thresholds; equals sklearn ``average_precision_score(is_ood, scores)``.
``AUPR-IN``
    Average precision with ID positive on the negated score; equals
    ``average_precision_score(~is_ood, -scores)``.
``AUPR-OUT-trapz`` / ``AUPR-IN-trapz``
    The same two precision-recall curves integrated with the trapezoidal rule, as pytorch-ood and the MCHAD
    paper do: one point (recall, precision) per distinct threshold, plus the end point (recall 0, precision 1)
    beyond the strictest threshold; equals sklearn ``auc(recall, precision)`` on ``precision_recall_curve``.
    Note: pytorch-ood ≤ 0.1.9 (MCHAD paper) named these the other way round: the paper's "AUPR-IN" is our
    ``AUPR-OUT-trapz`` and its "AUPR-OUT" is our ``AUPR-IN-trapz`` (reference/mchad.md §3.2).
``FPR95TPR``
    OOD positive (pytorch-ood, OpenOOD): walking the thresholds downwards, the fraction of ID samples flagged at
    the first threshold that flags at least 95 % of the OOD samples. No interpolation.
``FPR95TPR-ID``
    ID positive on the negated score, the convention of Hendrycks et al. (outlier exposure): the fraction of
    OOD samples accepted as in-distribution (``score <= t``) at the first threshold, walking upwards, that
    accepts at least 95 % of the ID samples. Hendrycks' ``fpr_and_fdr_at_recall`` instead reads the ROC point
    whose TPR is *closest* to 0.95 (among equally close points, the most lenient one), so it can differ from
    ours by the OOD samples scoring between neighbouring ID samples around the 95 % point.
``DetectionError``
    ODIN's detection error, min over thresholds of ½(1 − TPR) + ½ FPR (OOD positive), including the
    thresholds that flag nothing or everything (so it is at most ½). Best detection accuracy = 1 − this.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite import distributed as idist
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

TPR_LEVEL = 0.95
"""The true-positive rate at which both FPR95TPR conventions read the false-positive rate."""

OOD_METRIC_KEYS = (
    "AUROC",
    "AUPR-IN",
    "AUPR-OUT",
    "AUPR-IN-trapz",
    "AUPR-OUT-trapz",
    "FPR95TPR",
    "FPR95TPR-ID",
    "DetectionError",
)
"""Keys of the dict returned by :func:`ood_metrics` and :class:`OODMetrics`, in this order."""

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _as_real_vector(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = (values if values.dtype == torch.bool else values.to(torch.float64)).numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def validate_ood_inputs(scores: ArrayLike, is_ood: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert one set of outlier scores and OOD flags.

    Args:
        scores: outlier scores (N,), higher = more anomalous; numpy array, torch tensor or list of any real dtype.
        is_ood: (N,) booleans or 0/1 values, True / 1 marking the OOD (positive) samples.

    Returns:
        ``(scores, is_ood)`` as float64 and bool numpy vectors.

    Raises:
        ValueError: on shapes other than (N,), a length mismatch, no samples, non-finite scores or flags that are
            not 0/1.
    """
    score_array = _as_real_vector(scores, "scores").astype(np.float64, copy=False)
    flag_array = _as_real_vector(is_ood, "is_ood")
    if score_array.size != flag_array.size:
        raise ValueError(f"scores and is_ood differ in length: {score_array.size} vs {flag_array.size}")
    if score_array.size == 0:
        raise ValueError("no samples: scores and is_ood are empty")
    finite = np.isfinite(score_array)
    if not finite.all():
        raise ValueError(
            f"scores contain {score_array.size - np.count_nonzero(finite)} non-finite value(s) (NaN or ±inf) "
            f"among {score_array.size}"
        )
    if flag_array.dtype != bool:
        binary = (flag_array == 0) | (flag_array == 1)
        if not binary.all():
            raise ValueError(f"is_ood must hold booleans or 0/1, got values such as {flag_array[~binary][:5]}")
        flag_array = flag_array.astype(bool)
    return score_array, flag_array


def _cumulative_counts_below_ties(scores: np.ndarray, is_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort the scores and count, per group of tied scores, the samples strictly below it.

    Returns:
        ``(ood_below, all_below)``: float64 vectors of G + 1 exact counts for the G distinct scores in
        ascending order; entry g counts the OOD / all samples scoring below group g, the last entry the totals.
    """
    # Sorting each class in place (numpy's fast unstable sort) and merging the two sorted runs with the stable
    # sort (timsort: one linear merge) is faster than one argsort of all scores; the merge order tells each
    # sorted score's class. Ties are grouped below, so the order within a tie does not matter.
    n_ood = np.count_nonzero(is_ood)
    runs = np.empty_like(scores)
    np.compress(is_ood, scores, out=runs[:n_ood])
    np.compress(~is_ood, scores, out=runs[n_ood:])
    runs[:n_ood].sort()
    runs[n_ood:].sort()
    order = np.argsort(runs, kind="stable")
    sorted_scores = runs[order]
    last_of_group = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    # int32 halves the cumsum's memory traffic; exact while the count fits.
    ood_count = np.cumsum(order < n_ood, dtype=np.int32 if scores.size < 2**31 else np.int64)
    ood_below = np.empty(last_of_group.size + 2)
    ood_below[0], ood_below[-1] = 0, ood_count[-1]
    ood_below[1:-1] = ood_count[last_of_group]
    all_below = np.empty_like(ood_below)
    all_below[0], all_below[-1] = 0, scores.size
    np.add(last_of_group, 1, out=all_below[1:-1])
    return ood_below, all_below


def _min_count_reaching(rate: float, total: int) -> int:
    """Smallest count c with ``c / total >= rate`` evaluated in float64, as a ROC curve's TPR is compared."""
    # The rounded product and the rounded division each move the answer by at most one from the estimate.
    estimate = math.ceil(rate * total)
    return next(count for count in range(max(estimate - 2, 0), estimate + 2) if count / total >= rate)


def _metrics_from_counts(ood_below: np.ndarray, all_below: np.ndarray) -> dict[str, float]:
    """Every metric from the counts of :func:`_cumulative_counts_below_ties` (both classes present)."""
    n_ood, n_all = ood_below[-1], all_below[-1]
    n_id = n_all - n_ood
    id_below = all_below - ood_below
    ood_in, id_in = np.diff(ood_below), np.diff(id_below)

    # 1 − the share of (ID, OOD) pairs the ID sample wins: in group g it beats the OOD samples below g and half
    # of those tied with it, i.e. (ood_below[g] + ood_below[g + 1]) / 2.
    auroc = 1.0 - (np.dot(id_in, ood_below[:-1]) + np.dot(id_in, ood_below[1:])) / (2.0 * n_ood * n_id)

    # Precision of OOD when flagging score >= group g, and of ID when accepting score <= group g (ID positive).
    precision_ood = n_ood - ood_below[:-1]
    precision_ood /= n_all - all_below[:-1]
    precision_id = id_below[1:] / all_below[1:]
    average_precision_ood = np.dot(ood_in, precision_ood)
    average_precision_id = np.dot(id_in, precision_id)
    # Trapezoids: each recall step pairs a group's precision with its predecessor's along the curve, which
    # starts at (recall 0, precision 1) beyond the highest (OOD) or lowest (ID) score.
    trapezoid_ood = average_precision_ood + np.dot(ood_in[:-1], precision_ood[1:]) + ood_in[-1]
    trapezoid_id = average_precision_id + np.dot(id_in[1:], precision_id[:-1]) + id_in[0]

    # OOD positive: the flagged OOD count n_ood - ood_below[g] falls with g, so the highest threshold flagging
    # >= 95 % of OOD is the last group with ood_below[g] <= n_ood - needed.
    needed = _min_count_reaching(TPR_LEVEL, int(n_ood))
    highest = np.searchsorted(ood_below[:-1], n_ood - needed, side="right") - 1
    # ID positive: the lowest threshold accepting >= 95 % of ID is the first group with id_below[g + 1] >= needed.
    lowest = np.searchsorted(id_below[1:], _min_count_reaching(TPR_LEVEL, int(n_id)), side="left")

    # 1 - TPR + FPR when flagging groups >= g is 1 + ood_below[g] / n_ood - id_below[g] / n_id; g = G (flag
    # nothing) and g = 0 (flag everything) both give 1.
    detection_cost = n_id * ood_below
    detection_cost -= n_ood * id_below
    return {
        "AUROC": float(auroc),
        "AUPR-IN": float(average_precision_id / n_id),
        "AUPR-OUT": float(average_precision_ood / n_ood),
        "AUPR-IN-trapz": float(trapezoid_id / (2.0 * n_id)),
        "AUPR-OUT-trapz": float(trapezoid_ood / (2.0 * n_ood)),
        "FPR95TPR": float((n_id - id_below[highest]) / n_id),
        "FPR95TPR-ID": float(ood_below[lowest + 1] / n_ood),
        "DetectionError": float(0.5 + detection_cost.min() / (2.0 * n_ood * n_id)),
    }


def _metrics(scores: np.ndarray, is_ood: np.ndarray) -> dict[str, float]:
    """All metrics of validated float64 scores and bool flags."""
    n_ood = int(np.count_nonzero(is_ood))
    if n_ood in (0, is_ood.size):
        raise ValueError(f"OOD metrics need both ID and OOD samples, got {is_ood.size - n_ood} ID and {n_ood} OOD")
    return _metrics_from_counts(*_cumulative_counts_below_ties(scores, is_ood))


def ood_metrics(scores: ArrayLike, is_ood: ArrayLike) -> dict[str, float]:
    """AUROC, AUPR-IN/OUT (average precision and trapezoidal), FPR@95TPR (both conventions), detection error.

    All from one sorting pass over the scores, with exact integer counts and float64 arithmetic. See the
    module docstring for the definition of each key.

    Args:
        scores: outlier scores (N,), higher = more anomalous; numpy array, torch tensor or list of any real dtype.
        is_ood: (N,) booleans or 0/1 values, True / 1 marking the OOD (positive) samples.

    Returns:
        ``{key: value}`` for every key of :data:`OOD_METRIC_KEYS`, values as fractions.

    Raises:
        ValueError: on bad shapes or values (see :func:`validate_ood_inputs`) or when only one class is
            present.
    """
    return _metrics(*validate_ood_inputs(scores, is_ood))


def is_ood_from_labels(output: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``output_transform`` for :class:`OODMetrics` when the engine returns ``(scores, labels)`` with label < 0
    marking OOD samples (pytorch-ood's convention, used by our datasets' label -1)."""
    scores, labels = output
    return scores, labels < 0


class OODMetrics(Metric):
    """All keys of :func:`ood_metrics` as one Ignite metric, exact under ``ignite.distributed``.

    ``update`` expects ``(scores, is_ood)`` (or ``{"y_pred": scores, "y": is_ood}``): outlier scores (B,) of any
    real dtype and (B,) booleans or 0/1 marking OOD samples. For ``(scores, labels)`` with label < 0 meaning OOD
    pass ``output_transform=is_ood_from_labels``. Samples are kept on the CPU in float64; ``compute`` gathers
    every rank's samples (ranks may hold different numbers; none are duplicated or dropped), computes on every
    rank and returns a dict whose keys Ignite flattens into ``engine.state.metrics``.

    Args:
        output_transform: maps the engine's output to ``(scores, is_ood)``.
        device: device the samples travel on when gathered (a CUDA device under nccl).
        skip_unrolling: see ``ignite.metrics.Metric``.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ) -> None:
        self._batches: list[torch.Tensor] = []
        super().__init__(output_transform, device=device, skip_unrolling=skip_unrolling)

    @reinit__is_reduced
    def reset(self) -> None:
        self._batches = []

    @reinit__is_reduced
    def update(self, output: tuple[ArrayLike, ArrayLike]) -> None:
        scores, is_ood = validate_ood_inputs(*output)
        # One (B, 2) float64 block per batch: column 0 the scores, column 1 the OOD flags.
        self._batches.append(torch.from_numpy(np.stack([scores, is_ood], axis=1, dtype=np.float64)))

    def compute(self) -> dict[str, float]:
        samples = torch.cat(self._batches) if self._batches else torch.zeros(0, 2, dtype=torch.float64)
        if idist.get_world_size() > 1:
            samples = samples.to(self._device)
            sizes = idist.all_gather(torch.tensor([samples.shape[0]], device=self._device)).tolist()
            samples = torch.cat(idist.all_gather_tensors_with_shapes(samples, [[size, 2] for size in sizes])).cpu()
        if samples.shape[0] == 0:
            raise NotComputableError("OODMetrics must have at least one example before it can be computed")
        columns = samples.numpy()
        return _metrics(columns[:, 0], columns[:, 1] == 1.0)


class CollectTensors(Metric):
    """Every sample's outputs of an evaluation, concatenated, as one Ignite metric exact under ``ignite.distributed``.

    For evaluations whose table needs more than the four metrics: per-image likelihoods (InvGlow), features
    (Gaussian AD), embeddings and scores (MCHAD). ``update`` takes a mapping name → tensor whose first dimension is
    the batch (or ``None``, kept as ``None``); ``compute`` returns the same names with the batches concatenated on
    the CPU, gathered over the ranks in rank order (ranks may hold different numbers of samples). Ignite stores the
    mapping under the metric's name in ``engine.state.metrics``; a name → (N, ...) tensor.

    Args:
        output_transform: maps the engine's output to the mapping of tensors.
        device: device the tensors travel on when gathered (a CUDA device under nccl).
    """

    def __init__(
        self, output_transform: Callable[[Any], Any] = lambda output: output, device: str | torch.device = "cpu"
    ) -> None:
        self._parts: dict[str, list[torch.Tensor] | None] = {}
        super().__init__(output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._parts = {}

    @reinit__is_reduced
    def update(self, output: dict[str, torch.Tensor | None]) -> None:
        for name, value in output.items():
            if value is None:
                self._parts.setdefault(name, None)
            else:
                parts = self._parts.setdefault(name, [])
                if parts is None:
                    raise ValueError(f"{name}: given as None in an earlier batch and as a tensor now")
                parts.append(value.detach().cpu())

    def compute(self) -> dict[str, torch.Tensor | None]:
        if not self._parts:
            raise NotComputableError("CollectTensors must have at least one batch before it can be computed")
        return {name: None if parts is None else self._gather(torch.cat(parts)) for name, parts in self._parts.items()}

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        if idist.get_world_size() == 1:
            return local
        sizes = idist.all_gather(torch.tensor([local.shape[0]], device=self._device)).tolist()
        shapes = [[size, *local.shape[1:]] for size in sizes]
        return torch.cat(idist.all_gather_tensors_with_shapes(local.to(self._device), shapes)).cpu()

    @torch.no_grad()
    def iteration_completed(self, engine: Any) -> None:
        # Ignite's own reads a mapping output as {"y_pred", "y"}; this metric takes any mapping of named tensors.
        self.update(self._output_transform(engine.state.output))

    def completed(self, engine: Any, name: str) -> None:
        # Ignite would flatten a returned dict into ``<key>`` entries; keep the mapping whole under ``name``.
        engine.state.metrics[name] = self.compute()
