"""``ood_metrics_per_set``: one in-distribution set against several OOD sets, sorted once, equals each pair's
``ood_metrics`` and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.metrics import OOD_METRIC_KEYS, ood_metrics, ood_metrics_per_set
from tests.test_metrics import TIE_CASES, assert_metrics_equal, reference_metrics


def pair_arrays(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ID set and one OOD set as the ``(scores, is_ood)`` of :func:`ood_metrics`."""
    scores = np.concatenate([id_scores, ood_scores])
    return scores, np.arange(scores.size) >= len(id_scores)


def ood_sets(rng: np.random.Generator, grid_step: float | None) -> dict[str, np.ndarray]:
    """OOD sets of every kind: shifted, tied with the ID grid, one sample, all tied, above and below every score."""
    sets = {
        "shifted": rng.normal(size=700) + 1.0,
        "overlapping": rng.normal(size=300),
        "one sample": rng.normal(size=1),
        "all tied": np.full(40, 0.5),
        "above all": rng.normal(size=25) + 100.0,
        "below all": rng.normal(size=25) - 100.0,
    }
    if grid_step is None:
        return sets
    return {name: np.round(values / grid_step) * grid_step for name, values in sets.items()}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid_step", [1.0, 0.5, 0.01, None])
def test_every_set_equals_ood_metrics_of_the_pair_and_sklearn(seed: int, grid_step: float | None) -> None:
    rng = np.random.default_rng(seed)
    id_scores = rng.normal(size=1000)
    if grid_step is not None:
        id_scores = np.round(id_scores / grid_step) * grid_step
    sets = ood_sets(rng, grid_step)
    results = ood_metrics_per_set(id_scores, sets)
    assert list(results) == list(sets)
    for name, ood_scores in sets.items():
        scores, is_ood = pair_arrays(id_scores, ood_scores)
        assert results[name] == ood_metrics(scores, is_ood), name
        assert_metrics_equal(results[name], reference_metrics(scores, is_ood))


def test_ties_between_classes_and_one_sample_sets_match_sklearn() -> None:
    # The pairs of tests/test_metrics.py, each OOD set against its own ID set.
    for case, (id_scores, ood_scores) in TIE_CASES.items():
        result = ood_metrics_per_set(id_scores, {case: ood_scores})[case]
        assert_metrics_equal(result, reference_metrics(*pair_arrays(np.array(id_scores), np.array(ood_scores))))


def test_hand_computed_sets_against_one_id_set() -> None:
    # ID 0, 1, 2, 3. Set "a" = {2, 4}: OOD 2 beats ID 0, 1 and ties ID 2, OOD 4 beats all; flagging >= 4 gives
    # (recall ½, precision 1), >= 2 gives (1, 2/4) and flags ID 2, 3; accepting <= 0, 1, 2, 3 as ID gives
    # precision 1, 1, 3/4, 4/5. Set "b" = {3}, tied with the highest ID score: flagging >= 3 flags ID 3.
    keys = ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR")
    results = ood_metrics_per_set([0.0, 1.0, 2.0, 3.0], {"a": [2.0, 4.0], "b": [3.0]}, keys=keys)
    expected = {
        "a": {"AUROC": 6.5 / 8, "AUPR-IN": (1 + 1 + 3 / 4 + 4 / 5) / 4, "AUPR-OUT": 3 / 4, "FPR95TPR": 2 / 4},
        "b": {"AUROC": 3.5 / 4, "AUPR-IN": (1 + 1 + 1 + 4 / 5) / 4, "AUPR-OUT": 1 / 2, "FPR95TPR": 1 / 4},
    }
    assert list(results) == ["a", "b"]
    for name, values in expected.items():
        assert_metrics_equal(results[name], values, tolerance=1e-15, keys=keys)


def test_accepts_tensors_and_lists_and_leaves_them_as_they_were() -> None:
    rng = np.random.default_rng(7)
    id_scores, ood_scores = rng.integers(0, 9, 200).astype(np.float64), rng.integers(3, 12, 50).astype(np.float64)
    kept = id_scores.copy()
    expected = ood_metrics(*pair_arrays(id_scores, ood_scores))
    results = ood_metrics_per_set(id_scores, {"tensor": torch.from_numpy(ood_scores), "list": ood_scores.tolist()})
    assert results == {"tensor": expected, "list": expected}
    np.testing.assert_array_equal(id_scores, kept)


@pytest.mark.parametrize(
    ("id_scores", "sets", "keys", "message"),
    [
        ([], {"a": [1.0]}, OOD_METRIC_KEYS, "in-distribution scores: no samples"),
        ([0.1], {"a": []}, OOD_METRIC_KEYS, "a scores: no samples"),
        ([0.1], {"a": [1.0], "b": [np.nan]}, OOD_METRIC_KEYS, r"b scores contain 1 non-finite value\(s\)"),
        ([[0.1]], {"a": [1.0]}, OOD_METRIC_KEYS, "in-distribution scores must be one-dimensional"),
        ([0.1], {"a": [1.0]}, ("AUROC", "FPR95"), r"unknown metric key\(s\) \['FPR95'\]"),
    ],
)
def test_bad_input_raises_a_clear_value_error(id_scores, sets, keys, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ood_metrics_per_set(id_scores, sets, keys=keys)
