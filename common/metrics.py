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
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache, cached_property
from typing import Any, NamedTuple

import cv2
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


def _finite_scores(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a float64 vector (the same array when it is one already), checked to be finite."""
    array = _as_real_vector(values, name).astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(
            f"{name} contain {array.size - np.count_nonzero(finite)} non-finite value(s) (NaN or ±inf) "
            f"among {array.size}"
        )
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
    score_array = _finite_scores(scores, "scores")
    flag_array = _as_real_vector(is_ood, "is_ood")
    if score_array.size != flag_array.size:
        raise ValueError(f"scores and is_ood differ in length: {score_array.size} vs {flag_array.size}")
    if score_array.size == 0:
        raise ValueError("no samples: scores and is_ood are empty")
    if flag_array.dtype != bool:
        binary = (flag_array == 0) | (flag_array == 1)
        if not binary.all():
            raise ValueError(f"is_ood must hold booleans or 0/1, got values such as {flag_array[~binary][:5]}")
        flag_array = flag_array.astype(bool)
    return score_array, flag_array


def _min_count_reaching(rate: float, total: int) -> int:
    """Smallest count c with ``c / total >= rate`` evaluated in float64, as a ROC curve's TPR is compared."""
    # The rounded product and the rounded division each move the answer by at most one from the estimate.
    estimate = math.ceil(rate * total)
    return next(count for count in range(max(estimate - 2, 0), estimate + 2) if count / total >= rate)


class _Groups(NamedTuple):
    """The scores of one class, sorted, as groups of tied scores."""

    values: np.ndarray
    """(G,) float64, the distinct scores in ascending order."""
    below: np.ndarray
    """(G + 1,) int64: ``below[g]`` scores lie below ``values[g]``; ``below[G]`` is the number of scores."""

    def value_at_rank(self, rank: int) -> float:
        """The score at 0-based position ``rank`` of the ascending scores."""
        return self.values[np.searchsorted(self.below, rank, side="right") - 1]


def _sort_with_opencv(values: np.ndarray) -> None:
    """Sort float64 ``values`` (at most 2^31 - 1, one ``cv::Mat`` row) in place with OpenCV's ``std::sort``."""
    row = values.reshape(1, -1)
    cv2.sort(row, cv2.SORT_EVERY_ROW | cv2.SORT_ASCENDING, dst=row)


@cache
def _faster_sort() -> Callable[[np.ndarray], None]:
    """numpy's or OpenCV's in-place float64 sort, whichever sorts 2^17 random scores in less CPU time here.

    numpy (>= 1.25) sorts float64 with x86-simd-sort's AVX-512 kernel on CPUs with AVX-512. On AMD Zen 4 that
    kernel's memory-destination compress instructions are microcoded (numpy/x86-simd-sort#6): there numpy sorts
    10^6 scores in ~55 ms of CPU, OpenCV in ~24 ms and numpy's own AVX2 kernel in ~9.5 ms, a kernel that only
    ``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"`` set before numpy is imported selects. Elsewhere
    numpy's sort is the faster. Both sort exactly, so the choice changes no result.
    """
    sample = np.random.default_rng(0).normal(size=2**17)
    candidates = (np.ndarray.sort, _sort_with_opencv)
    cpu_seconds = [math.inf] * len(candidates)
    for _ in range(3):  # interleaved rounds, best of each: a passing load hits both alike
        for index, sort in enumerate(candidates):
            values = sample.copy()
            start = time.thread_time()
            sort(values)
            cpu_seconds[index] = min(cpu_seconds[index], time.thread_time() - start)
    return candidates[cpu_seconds.index(min(cpu_seconds))]


def _sorted_groups(scores: np.ndarray) -> _Groups:
    """Sort float64 ``scores`` (at least one, an array nobody else holds) in place and group the ties."""
    (_faster_sort() if scores.size < 2**31 else np.ndarray.sort)(scores)
    # Each group starts where the score changes; position N closes the last one.
    starts = np.ones(scores.size + 1, dtype=bool)
    np.not_equal(scores[1:], scores[:-1], out=starts[1:-1])
    below = np.flatnonzero(starts)
    # Without ties the sorted scores are the distinct scores: no gather.
    return _Groups(scores if below.size == scores.size + 1 else scores[below[:-1]], below)


def _sum_over_samples(below: np.ndarray, per_group: np.ndarray) -> float:
    """Σ over the samples of a class of their group's value: Σ_g (below[g + 1] − below[g]) · per_group[g].

    ``np.einsum`` rather than ``np.dot``: no product array, and no BLAS. OpenBLAS splits a long float dot product
    over its threads, and with the cores busy waking them takes milliseconds (10^5 float64: 0.02 ms on one
    thread, 6–12 ms with 2 threads at load 5).
    """
    return float(np.einsum("i,i->", np.diff(below), per_group))


class _Pair:
    """One ID set against one OOD set, from each set's groups: one method per key of :data:`OOD_METRIC_KEYS`.

    The counts a key needs are computed on first use, as exact integers: the OOD-positive keys read, per OOD
    group, the ID samples below it (a binary search of the OOD groups among the ID groups); the ID-positive AUPR
    keys read, per ID group, the OOD samples below it (the same search, read the other way).
    """

    def __init__(self, in_distribution: _Groups, ood: _Groups) -> None:
        self.id, self.ood = in_distribution, ood
        self.n_id, self.n_ood = int(in_distribution.below[-1]), int(ood.below[-1])

    @cached_property
    def _id_groups_below_ood(self) -> tuple[np.ndarray, np.ndarray]:
        """Per OOD group, the number of ID groups below it and at or below it (one more when tied)."""
        below = np.searchsorted(self.id.values, self.ood.values, side="left")
        tied = np.take(self.id.values, below, mode="clip") == self.ood.values
        return below, below + tied

    @cached_property
    def id_below_ood(self) -> np.ndarray:
        """(G_ood,) ID samples scoring below each OOD group."""
        return self.id.below[self._id_groups_below_ood[0]]

    @cached_property
    def id_upto_ood(self) -> np.ndarray:
        """(G_ood,) ID samples scoring at most each OOD group."""
        return self.id.below[self._id_groups_below_ood[1]]

    def _ood_per_id_group(self, first_id_group: np.ndarray) -> np.ndarray:
        """(G_id,) OOD samples counted by each ID group when OOD group k counts from ID group ``first_id_group[k]``."""
        # ``first_id_group`` ascends: ID groups first_id_group[k - 1] .. first_id_group[k] - 1 count ood.below[k].
        return np.repeat(self.ood.below, np.diff(first_id_group, prepend=0, append=self.id.values.size))

    @cached_property
    def precision_ood(self) -> np.ndarray:
        """(G_ood,) precision of OOD when flagging the scores >= each OOD group."""
        flagged_ood = self.n_ood - self.ood.below[:-1]
        return flagged_ood / (flagged_ood + (self.n_id - self.id_below_ood))

    @cached_property
    def precision_id(self) -> np.ndarray:
        """(G_id,) precision of ID when accepting the scores <= each ID group (ID positive)."""
        accepted_id = self.id.below[1:]
        # OOD group k is at or below ID group j for every j from the number of ID groups below it on.
        accepted = self._ood_per_id_group(self._id_groups_below_ood[0])
        accepted += accepted_id
        return accepted_id / accepted

    def auroc(self) -> float:
        """Share of (ID, OOD) pairs the OOD sample wins: over the ID samples below it, ½ over those at its score."""
        wins = _sum_over_samples(self.ood.below, self.id_below_ood + self.id_upto_ood)
        return wins / (2.0 * self.n_id * self.n_ood)

    def aupr_out(self) -> float:
        """Σ over OOD groups of the recall step (group size / n_ood) × the precision flagging from that group."""
        return _sum_over_samples(self.ood.below, self.precision_ood) / self.n_ood

    def aupr_in(self) -> float:
        """Mirrored: Σ over ID groups of the recall step × the precision of ID accepting up to that group."""
        return _sum_over_samples(self.id.below, self.precision_id) / self.n_id

    def aupr_out_trapz(self) -> float:
        """Trapezoids: each recall step ends at an OOD group and starts at the curve point of the next higher
        score, or at (recall 0, precision 1) above the highest score."""
        above_ood = self.n_ood - self.ood.below[1:]
        above = above_ood + (self.n_id - self.id_upto_ood)
        start = np.divide(above_ood, above, out=np.ones(above.size), where=above > 0)
        return _sum_over_samples(self.ood.below, self.precision_ood + start) / (2.0 * self.n_ood)

    def aupr_in_trapz(self) -> float:
        """Mirrored: each step ends at an ID group and starts at the next lower score, or at (0, 1) below all."""
        below_id = self.id.below[:-1]
        below = below_id + self._ood_per_id_group(self._id_groups_below_ood[1])
        start = np.divide(below_id, below, out=np.ones(below.size), where=below > 0)
        return _sum_over_samples(self.id.below, self.precision_id + start) / (2.0 * self.n_id)

    def fpr95tpr(self) -> float:
        """ID share flagged at the first threshold (walking down) flagging >= 95 % of OOD: the needed-th highest
        OOD score."""
        threshold = self.ood.value_at_rank(self.n_ood - _min_count_reaching(TPR_LEVEL, self.n_ood))
        return (self.n_id - self.id.below[np.searchsorted(self.id.values, threshold, side="left")]) / self.n_id

    def fpr95tpr_id(self) -> float:
        """OOD share accepted at the first threshold (walking up) accepting >= 95 % of ID: the needed-th lowest
        ID score."""
        threshold = self.id.value_at_rank(_min_count_reaching(TPR_LEVEL, self.n_id) - 1)
        return self.ood.below[np.searchsorted(self.ood.values, threshold, side="right")] / self.n_ood

    def detection_error(self) -> float:
        """min over thresholds t of ½(1 − TPR) + ½ FPR, flagging the scores >= t."""
        # Flagging the scores >= t costs ½ + (n_id·ood_below(t) − n_ood·id_below(t)) / (2 n_id n_ood). Between two
        # OOD groups it falls as t rises, so the minimum is at an OOD group: flagging nothing or everything costs ½,
        # no less than at the lowest OOD group.
        cost = self.n_id * self.ood.below[:-1] - self.n_ood * self.id_below_ood
        return 0.5 + int(cost.min()) / (2.0 * self.n_id * self.n_ood)


_KEY_METHODS: dict[str, Callable[[_Pair], float]] = {
    "AUROC": _Pair.auroc,
    "AUPR-IN": _Pair.aupr_in,
    "AUPR-OUT": _Pair.aupr_out,
    "AUPR-IN-trapz": _Pair.aupr_in_trapz,
    "AUPR-OUT-trapz": _Pair.aupr_out_trapz,
    "FPR95TPR": _Pair.fpr95tpr,
    "FPR95TPR-ID": _Pair.fpr95tpr_id,
    "DetectionError": _Pair.detection_error,
}


def _check_keys(keys: Sequence[str]) -> None:
    unknown = [key for key in keys if key not in _KEY_METHODS]
    if unknown:
        raise ValueError(f"unknown metric key(s) {unknown}; the keys are {', '.join(OOD_METRIC_KEYS)}")


def _evaluate(pair: _Pair, keys: Sequence[str]) -> dict[str, float]:
    return {key: float(_KEY_METHODS[key](pair)) for key in keys}


def _metrics(scores: np.ndarray, is_ood: np.ndarray, keys: Sequence[str] = OOD_METRIC_KEYS) -> dict[str, float]:
    """The ``keys`` of validated float64 scores and bool flags."""
    ood, in_distribution = np.compress(is_ood, scores), np.compress(~is_ood, scores)
    if ood.size == 0 or in_distribution.size == 0:
        raise ValueError(f"OOD metrics need both ID and OOD samples, got {in_distribution.size} ID and {ood.size} OOD")
    return _evaluate(_Pair(_sorted_groups(in_distribution), _sorted_groups(ood)), keys)


def ood_metrics(scores: ArrayLike, is_ood: ArrayLike, keys: Sequence[str] = OOD_METRIC_KEYS) -> dict[str, float]:
    """AUROC, AUPR-IN/OUT (average precision and trapezoidal), FPR@95TPR (both conventions), detection error.

    Sorts each class's scores once (unstable sorts of the values, no argsort; see :func:`_faster_sort`) and reads
    every key from exact integer counts over the groups of tied scores, in float64. See the module docstring for
    the definition of each key.

    Args:
        scores: outlier scores (N,), higher = more anomalous; numpy array, torch tensor or list of any real dtype.
        is_ood: (N,) booleans or 0/1 values, True / 1 marking the OOD (positive) samples.
        keys: the keys to compute, from :data:`OOD_METRIC_KEYS` (default all); a key not asked for costs nothing.

    Returns:
        ``{key: value}`` for every key of ``keys``, in that order, values as fractions.

    Raises:
        ValueError: on bad shapes or values (see :func:`validate_ood_inputs`), when only one class is present, or
            on an unknown key.
    """
    _check_keys(keys)
    return _metrics(*validate_ood_inputs(scores, is_ood), keys)


def _one_class_groups(scores: ArrayLike, name: str) -> _Groups:
    """The groups of one class's validated scores (sorting a copy)."""
    array = _finite_scores(scores, name)
    if array.size == 0:
        raise ValueError(f"{name}: no samples")
    return _sorted_groups(array.copy())


def ood_metrics_per_set(
    in_distribution: ArrayLike, ood_sets: Mapping[str, ArrayLike], keys: Sequence[str] = OOD_METRIC_KEYS
) -> dict[str, dict[str, float]]:
    """:func:`ood_metrics` of one in-distribution set against each of several OOD sets, sorting the ID set once.

    For each OOD set equal to ``ood_metrics(concatenate([in_distribution, ood]), [0] * n_id + [1] * n_ood, keys)``.
    Each set is sorted once; an OOD set of M scores then costs one sort of M scores, a binary search of its
    distinct scores among the ID set's (O(M log N)) and, for AUPR-IN and AUPR-IN-trapz only, one pass over the
    ID set's distinct scores.

    Args:
        in_distribution: outlier scores (N,) of the in-distribution samples; numpy array, torch tensor or list.
        ood_sets: set name → outlier scores (M,) of that set's OOD samples.
        keys: the keys to compute, from :data:`OOD_METRIC_KEYS` (default all).

    Returns:
        ``{set name: {key: value}}`` in the order of ``ood_sets`` and ``keys``.

    Raises:
        ValueError: on scores that are not a non-empty finite real vector (the message names the set), or on an
            unknown key.
    """
    _check_keys(keys)
    id_groups = _one_class_groups(in_distribution, "in-distribution scores")
    return {
        name: _evaluate(_Pair(id_groups, _one_class_groups(scores, f"{name} scores")), keys)
        for name, scores in ood_sets.items()
    }


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
        samples = gather_rows(self._batches, 2, self._device)
        if samples.shape[0] == 0:
            raise NotComputableError("OODMetrics must have at least one example before it can be computed")
        columns = samples.numpy()
        return _metrics(columns[:, 0], columns[:, 1] == 1.0)


def gather_rows(batches: Sequence[torch.Tensor], width: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """The (B, ``width``) float64 ``batches`` of every rank concatenated on the CPU, rank after rank (ranks may hold
    different numbers of rows; under one process, this process's rows)."""
    rows = torch.cat(list(batches)) if batches else torch.zeros(0, width, dtype=torch.float64)
    if idist.get_world_size() == 1:
        return rows
    rows = rows.to(device)
    sizes = idist.all_gather(torch.tensor([rows.shape[0]], device=device)).tolist()
    return torch.cat(idist.all_gather_tensors_with_shapes(rows, [[size, width] for size in sizes])).cpu()


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
