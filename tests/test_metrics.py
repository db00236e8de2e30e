"""OOD metrics against scikit-learn, brute force and hand-computed values; the Ignite metric on an Engine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from common import metrics
from common.metrics import (
    OOD_METRIC_KEYS,
    OODMetrics,
    _min_count_reaching,
    _sort_with_opencv,
    is_ood_from_labels,
    ood_metrics,
)


def first_fpr_at_tpr(positive: np.ndarray, scores: np.ndarray, level: float = 0.95) -> float:
    """FPR at the first ROC point (thresholds decreasing) whose TPR reaches ``level``; every threshold kept."""
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return float(fpr[np.flatnonzero(tpr >= level)[0]])


def brute_force_detection_error(scores: np.ndarray, is_ood: np.ndarray) -> float:
    """min over thresholds t (every score and +inf) of ½(1 − TPR) + ½ FPR when flagging score >= t."""
    errors = []
    for threshold in [*np.unique(scores), np.inf]:
        flagged = scores >= threshold
        tpr = flagged[is_ood].mean()
        fpr = flagged[~is_ood].mean()
        errors.append(0.5 * (1 - tpr) + 0.5 * fpr)
    return min(errors)


def reference_metrics(scores: np.ndarray, is_ood: np.ndarray) -> dict[str, float]:
    """Every key computed with scikit-learn (and brute force for the detection error)."""
    is_id = ~is_ood
    precision_ood, recall_ood, _ = precision_recall_curve(is_ood, scores)
    precision_id, recall_id, _ = precision_recall_curve(is_id, -scores)
    return {
        "AUROC": roc_auc_score(is_ood, scores),
        "AUPR-IN": average_precision_score(is_id, -scores),
        "AUPR-OUT": average_precision_score(is_ood, scores),
        "AUPR-IN-trapz": auc(recall_id, precision_id),
        "AUPR-OUT-trapz": auc(recall_ood, precision_ood),
        "FPR95TPR": first_fpr_at_tpr(is_ood, scores),
        # ID positive on the negated score: the "false positives" are OOD samples accepted as ID.
        "FPR95TPR-ID": first_fpr_at_tpr(is_id, -scores),
        "DetectionError": brute_force_detection_error(scores, is_ood),
    }


def assert_metrics_equal(
    ours: dict[str, float],
    expected: dict[str, float],
    tolerance: float = 1e-12,
    keys: Sequence[str] = OOD_METRIC_KEYS,
) -> None:
    assert list(ours) == list(keys)
    for key in keys:
        assert ours[key] == pytest.approx(expected[key], abs=tolerance), key


def random_case(seed: int, n: int, grid_step: float | None) -> tuple[np.ndarray, np.ndarray]:
    """OOD scores shifted by a random amount, rounded to multiples of ``grid_step`` (ties) or continuous."""
    rng = np.random.default_rng(seed)
    is_ood = rng.random(n) < rng.uniform(0.1, 0.9)
    is_ood[:2] = [True, False]
    scores = rng.normal(size=n) + rng.uniform(-1, 2) * is_ood
    if grid_step is not None:
        scores = np.round(scores / grid_step) * grid_step
    return scores, is_ood


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("n", "grid_step"), [(7, 2.0), (40, 1.0), (300, 0.5), (2000, 0.1), (500, None)])
def test_random_data_matches_sklearn(seed: int, n: int, grid_step: float | None) -> None:
    scores, is_ood = random_case(seed, n, grid_step)
    assert_metrics_equal(ood_metrics(scores, is_ood), reference_metrics(scores, is_ood))


@pytest.mark.parametrize("count", range(1, 130))
def test_fpr95_reads_the_first_point_reaching_95_percent_for_every_class_size(count: int) -> None:
    # Distinct scores for one class and a fixed other class probe the 95 % boundary for every class size.
    rng = np.random.default_rng(count)
    scores = np.concatenate([rng.permutation(count) / count, rng.random(17)])
    for is_ood in (np.arange(scores.size) < count, np.arange(scores.size) >= count):
        ours = ood_metrics(scores, is_ood)
        assert ours["FPR95TPR"] == first_fpr_at_tpr(is_ood, scores)
        assert ours["FPR95TPR-ID"] == first_fpr_at_tpr(~is_ood, -scores)


@pytest.mark.parametrize("rate", [0.95, 0.55, 0.9, 1 / 3, 0.999, 1.0])
def test_min_count_reaching_agrees_with_the_float_tpr_comparison(rate: float) -> None:
    # The comparison the ROC-based definition makes is count / total >= rate in float64; at rate 0.55 the
    # rounded product 0.55 * 100 exceeds 55, so the estimate alone would be one too high.
    for total in range(1, 3001):
        expected = np.flatnonzero(np.arange(total + 1) / total >= rate)[0]
        assert _min_count_reaching(rate, total) == expected, total


def test_hand_computed_case() -> None:
    # Ranked by score: OOD 0.8, ID 0.4, OOD 0.35, ID 0.1.
    ours = ood_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    # PR curve (OOD positive), from recall 0: (0, 1), (.5, 1), (.5, .5), (1, 2/3), (1, .5); mirrored for ID.
    expected = {
        "AUROC": 3 / 4,
        "AUPR-IN": 0.5 * 1 + 0.5 * 2 / 3,
        "AUPR-OUT": 0.5 * 1 + 0.5 * 2 / 3,
        "AUPR-IN-trapz": 0.5 * 1 + 0.5 * (0.5 + 2 / 3) / 2,
        "AUPR-OUT-trapz": 0.5 * 1 + 0.5 * (0.5 + 2 / 3) / 2,
        "FPR95TPR": 1 / 2,
        "FPR95TPR-ID": 1 / 2,
        "DetectionError": 0.25,
    }
    assert_metrics_equal(ours, expected, tolerance=1e-15)


def test_hand_computed_case_with_a_tie_between_classes() -> None:
    # OOD scores 2 and 1, ID scores 1 and 0: the tie at 1 counts half and enters the curves as one point.
    ours = ood_metrics(np.array([2.0, 1.0, 1.0, 0.0]), np.array([True, True, False, False]))
    expected = {
        "AUROC": 3.5 / 4,
        "AUPR-IN": 0.5 * 1 + 0.5 * 2 / 3,
        "AUPR-OUT": 0.5 * 1 + 0.5 * 2 / 3,
        "AUPR-IN-trapz": 0.5 * 1 + 0.5 * (1 + 2 / 3) / 2,
        "AUPR-OUT-trapz": 0.5 * 1 + 0.5 * (1 + 2 / 3) / 2,
        "FPR95TPR": 1 / 2,
        "FPR95TPR-ID": 1 / 2,
        "DetectionError": 0.25,
    }
    assert_metrics_equal(ours, expected, tolerance=1e-15)


def test_all_equal_scores_are_chance_level() -> None:
    is_ood = np.array([True] * 3 + [False] * 7)
    scores = np.full(10, 4.2)
    ours = ood_metrics(scores, is_ood)
    expected = {
        "AUROC": 0.5,
        "AUPR-IN": 0.7,
        "AUPR-OUT": 0.3,
        # One curve point (recall 1, precision = prevalence) joined to (recall 0, precision 1).
        "AUPR-IN-trapz": (0.7 + 1) / 2,
        "AUPR-OUT-trapz": (0.3 + 1) / 2,
        "FPR95TPR": 1.0,
        "FPR95TPR-ID": 1.0,
        "DetectionError": 0.5,
    }
    assert_metrics_equal(ours, expected, tolerance=1e-15)
    assert_metrics_equal(ours, reference_metrics(scores, is_ood))


TIE_CASES = {
    # ID scores, OOD scores
    "ood values are id values": ([0.0, 1.0, 1.0, 2.0, 3.0, 3.0], [1.0, 3.0, 3.0]),
    "id values are ood values": ([2.0, 2.0, 5.0], [1.0, 2.0, 5.0, 5.0, 7.0]),
    "highest score tied across classes": ([0.0, 1.0, 4.0], [2.0, 4.0, 4.0]),
    "lowest score tied across classes": ([-1.0, -1.0, 3.0], [-1.0, 0.5]),
    "one id sample": ([0.5], [0.1, 0.5, 0.9, 0.9]),
    "one ood sample": ([0.1, 0.5, 0.9, 0.9], [0.5]),
    "one sample each, tied": ([1.0], [1.0]),
    "one sample each, ood above": ([1.0], [2.0]),
    "one sample each, ood below": ([2.0], [1.0]),
    "signed zeros tied across classes": ([-0.0, 1.0], [0.0, 0.0, 2.0]),
}


@pytest.mark.parametrize("case", TIE_CASES)
def test_ties_between_classes_and_one_sample_sets_match_sklearn(case: str) -> None:
    id_scores, ood_scores = TIE_CASES[case]
    scores = np.array(id_scores + ood_scores)
    is_ood = np.arange(scores.size) >= len(id_scores)
    assert_metrics_equal(ood_metrics(scores, is_ood), reference_metrics(scores, is_ood))


@pytest.mark.parametrize("keys", [("AUROC",), ("FPR95TPR", "AUPR-IN"), ("DetectionError", "AUPR-OUT-trapz", "AUROC")])
def test_keys_asked_for_are_the_keys_returned_in_that_order(keys: tuple[str, ...]) -> None:
    scores, is_ood = random_case(5, 300, 0.5)
    everything = ood_metrics(scores, is_ood)
    assert ood_metrics(scores, is_ood, keys=keys) == {key: everything[key] for key in keys}


def test_an_unknown_key_raises_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown metric key\(s\) \['AUC'\]; the keys are AUROC, AUPR-IN"):
        ood_metrics([0.1, 0.2], [0, 1], keys=("AUROC", "AUC"))


def test_the_caller_arrays_are_left_as_they_were() -> None:
    scores, is_ood = random_case(6, 200, None)
    kept = scores.copy()
    ood_metrics(scores, is_ood)
    np.testing.assert_array_equal(scores, kept)


def test_perfect_separation() -> None:
    is_ood = np.arange(50) % 3 == 0
    scores = np.where(is_ood, 10.0, -10.0) + np.arange(50) * 1e-3
    ours = ood_metrics(scores, is_ood)
    expected = dict.fromkeys(OOD_METRIC_KEYS, 1.0) | {"FPR95TPR": 0.0, "FPR95TPR-ID": 0.0, "DetectionError": 0.0}
    assert_metrics_equal(ours, expected, tolerance=1e-15)


def test_reversed_separation() -> None:
    is_ood = np.arange(40) < 10
    scores = np.where(is_ood, -1.0, 1.0) * (1 + np.arange(40))
    ours = ood_metrics(scores, is_ood)
    assert ours["AUROC"] == 0.0
    assert ours["FPR95TPR"] == 1.0
    assert ours["FPR95TPR-ID"] == 1.0
    assert ours["DetectionError"] == 0.5
    assert_metrics_equal(ours, reference_metrics(scores, is_ood))


def test_negating_the_score_swaps_the_roles_of_id_and_ood() -> None:
    scores, is_ood = random_case(3, 400, 0.5)
    ours, swapped = ood_metrics(scores, is_ood), ood_metrics(-scores, ~is_ood)
    assert swapped["AUROC"] == pytest.approx(ours["AUROC"], abs=1e-15)
    assert swapped["AUPR-IN"] == pytest.approx(ours["AUPR-OUT"], abs=1e-15)
    assert swapped["AUPR-OUT-trapz"] == pytest.approx(ours["AUPR-IN-trapz"], abs=1e-15)
    assert swapped["FPR95TPR"] == ours["FPR95TPR-ID"]


@pytest.mark.parametrize(
    "convert",
    [
        lambda values: values.tolist(),
        lambda values: torch.from_numpy(values).to(torch.float16),
        lambda values: torch.from_numpy(values).to(torch.bfloat16),
        lambda values: values.astype(np.float32),
        lambda values: values.astype(np.int64),
    ],
    ids=["list", "float16-tensor", "bfloat16-tensor", "float32-array", "int64-array"],
)
def test_accepts_lists_tensors_and_any_real_dtype(convert) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(-8, 8, 300).astype(np.float64)  # exactly representable in every dtype above
    is_ood = rng.random(300) < 0.4
    expected = reference_metrics(scores, is_ood)
    assert_metrics_equal(ood_metrics(convert(scores), is_ood), expected)
    assert_metrics_equal(ood_metrics(scores, torch.from_numpy(is_ood)), expected)
    assert_metrics_equal(ood_metrics(scores, is_ood.astype(np.int8).tolist()), expected)


@pytest.mark.parametrize(
    ("scores", "is_ood", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 0, 0], "both ID and OOD samples, got 3 ID and 0 OOD"),
        ([0.1, 0.2], [True, True], "both ID and OOD samples, got 0 ID and 2 OOD"),
        ([], [], "no samples"),
        ([0.1, np.nan, 0.3], [0, 1, 1], r"1 non-finite value\(s\)"),
        ([0.1, np.inf, -np.inf], [0, 1, 1], r"2 non-finite value\(s\)"),
        ([0.1, 0.2, 0.3], [0, 1], "differ in length: 3 vs 2"),
        ([[0.1, 0.2], [0.3, 0.4]], [[0, 1], [0, 1]], r"scores must be one-dimensional, got shape \(2, 2\)"),
        ([0.1, 0.2, 0.3], [0, 2, 1], "is_ood must hold booleans or 0/1"),
        (["a", "b"], [0, 1], "scores must hold real numbers"),
    ],
)
def test_bad_input_raises_a_clear_value_error(scores, is_ood, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ood_metrics(scores, is_ood)


def batches(scores: np.ndarray, targets: np.ndarray, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (float32 scores, targets) tensor batches of the given sizes."""
    cuts = np.cumsum(sizes)[:-1]
    return [
        (torch.tensor(batch_scores, dtype=torch.float32), torch.from_numpy(batch_targets))
        for batch_scores, batch_targets in zip(np.split(scores, cuts), np.split(targets, cuts), strict=True)
    ]


def float32_case(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    scores, is_ood = random_case(seed, n, 0.25)
    return scores.astype(np.float32).astype(np.float64), is_ood


def test_ignite_metric_on_an_engine_matches_the_functional_result() -> None:
    scores, is_ood = float32_case(0, 250)
    engine = Engine(lambda _, batch: batch)
    OODMetrics().attach(engine, "ood")
    state = engine.run(batches(scores, is_ood, [64, 64, 64, 58]))
    expected = ood_metrics(scores, is_ood)
    assert {key: state.metrics[key] for key in OOD_METRIC_KEYS} == expected
    assert state.metrics["ood"] == expected


def test_ignite_metric_resets_between_runs_and_takes_dict_output() -> None:
    engine = Engine(lambda _, batch: {"y_pred": batch[0], "y": batch[1]})
    OODMetrics().attach(engine, "ood")
    engine.run(batches(*float32_case(1, 100), [50, 50]))
    scores, is_ood = float32_case(2, 90)
    state = engine.run(batches(scores, is_ood, [30, 60]))
    assert state.metrics["ood"] == ood_metrics(scores, is_ood)


def test_ignite_metric_with_labels_marking_ood_below_zero() -> None:
    scores, is_ood = float32_case(3, 120)
    labels = np.where(is_ood, -1, np.arange(120) % 10)
    engine = Engine(lambda _, batch: batch)
    OODMetrics(output_transform=is_ood_from_labels).attach(engine, "ood")
    data = batches(scores, labels, [40, 40, 40])
    assert engine.run(data).metrics["ood"] == ood_metrics(scores, is_ood)


def test_ignite_metric_errors() -> None:
    metric = OODMetrics()
    with pytest.raises(NotComputableError):
        metric.compute()
    metric.update((torch.tensor([0.5, 0.7]), torch.tensor([False, False])))
    with pytest.raises(ValueError, match="got 2 ID and 0 OOD"):
        metric.compute()
    with pytest.raises(ValueError, match="non-finite"):
        metric.update((torch.tensor([float("nan")]), torch.tensor([True])))


SORT_CASES = {
    "continuous": np.random.default_rng(0).normal(size=3000),
    "ties": np.round(np.random.default_rng(1).normal(size=3000), 1),
    "all equal": np.full(100, 2.5),
    "one score": np.array([7.0]),
    "signed zeros": np.array([0.0, -0.0, 1.0, -0.0, -1.0, 0.0]),
    "descending": np.arange(500.0)[::-1].copy(),
}


@pytest.mark.parametrize("case", SORT_CASES)
def test_the_opencv_sort_sorts_as_numpy_does(case: str) -> None:
    values = SORT_CASES[case].copy()
    _sort_with_opencv(values)
    np.testing.assert_array_equal(values, np.sort(SORT_CASES[case]))


@pytest.mark.parametrize("sort", [np.ndarray.sort, _sort_with_opencv], ids=["numpy", "opencv"])
def test_either_sort_gives_the_same_metrics(sort, monkeypatch: pytest.MonkeyPatch) -> None:
    # _faster_sort picks one by timing; whichever it picks, every key is the same to the last bit.
    cases = [random_case(seed, 400, step) for seed, step in enumerate([None, 0.5, 2.0])]
    expected = [ood_metrics(*case) for case in cases]
    monkeypatch.setattr(metrics, "_faster_sort", lambda: sort)
    assert [ood_metrics(*case) for case in cases] == expected
    assert_metrics_equal(expected[1], reference_metrics(*cases[1]))


def test_the_faster_sort_is_one_of_the_two() -> None:
    assert metrics._faster_sort() in (np.ndarray.sort, _sort_with_opencv)
