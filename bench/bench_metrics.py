"""``common.metrics`` against the scikit-learn calls giving AUROC, AUPR-IN, AUPR-OUT and FPR95TPR.

The reference is ``roc_auc_score``, ``average_precision_score`` twice (OOD positive, then ID positive on the
negated score) and ``roc_curve`` (every threshold kept) read at the first TPR >= 95 %; ours computes the same four
keys. Ours and the reference run in alternating rounds (:func:`bench.timing.best_times_interleaved`), so a load
that comes and goes on a shared machine hits both alike.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from bench.timing import BenchRow, best_times_interleaved
from common.metrics import TPR_LEVEL, ood_metrics, ood_metrics_per_set

N_SCORES = 10**6
N_PER_SET = 10**5  # the ID set and each OOD set when one ID set is scored against several
N_OOD_SETS = 7  # as MCHAD (InvGlow: 6)
COMPARED_KEYS = ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR")
REFERENCE = "sklearn roc_auc + 2×average_precision + roc_curve"


def sklearn_metrics(scores: np.ndarray, is_ood: np.ndarray) -> dict[str, float]:
    """The four compared keys from scikit-learn."""
    fpr, tpr, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    return {
        "AUROC": roc_auc_score(is_ood, scores),
        "AUPR-IN": average_precision_score(~is_ood, -scores),
        "AUPR-OUT": average_precision_score(is_ood, scores),
        "FPR95TPR": fpr[np.flatnonzero(tpr >= TPR_LEVEL)[0]],
    }


def max_difference(ours: dict[str, float], reference: dict[str, float]) -> float:
    """Largest absolute difference over the compared keys."""
    return max(abs(ours[key] - reference[key]) for key in COMPARED_KEYS)


def compare(name: str, scores: np.ndarray, is_ood: np.ndarray) -> BenchRow:
    """Ours against the reference on one labelled set."""
    ours_s, reference_s = best_times_interleaved(
        [lambda: ood_metrics(scores, is_ood, COMPARED_KEYS), lambda: sklearn_metrics(scores, is_ood)], repeat=7
    )
    return BenchRow(
        benchmark=name,
        ours_s=ours_s,
        reference=REFERENCE,
        reference_s=reference_s,
        max_abs_diff=max_difference(ood_metrics(scores, is_ood, COMPARED_KEYS), sklearn_metrics(scores, is_ood)),
        note=f"{np.unique(scores).size} distinct scores",
    )


def compare_per_set(id_scores: np.ndarray, ood_sets: dict[str, np.ndarray]) -> list[BenchRow]:
    """One ID set against every OOD set: sorted once (ours), each pair on its own (ours and the reference)."""
    pairs = {
        name: (np.concatenate([id_scores, ood]), np.arange(id_scores.size + ood.size) >= id_scores.size)
        for name, ood in ood_sets.items()
    }
    shared_s, per_pair_s, reference_s = best_times_interleaved(
        [
            lambda: ood_metrics_per_set(id_scores, ood_sets, COMPARED_KEYS),
            lambda: [ood_metrics(*pair, COMPARED_KEYS) for pair in pairs.values()],
            lambda: [sklearn_metrics(*pair) for pair in pairs.values()],
        ],
        repeat=7,
    )
    ours = ood_metrics_per_set(id_scores, ood_sets, COMPARED_KEYS)
    difference = max(max_difference(ours[name], sklearn_metrics(*pair)) for name, pair in pairs.items())
    sizes = f"1 ID set × {len(ood_sets)} OOD sets, 10^5 scores each"
    return [
        BenchRow(f"ood_metrics_per_set, {sizes}", shared_s, f"{REFERENCE}, per pair", reference_s, difference),
        BenchRow(f"ood_metrics per pair, {sizes}", per_pair_s, f"{REFERENCE}, per pair", reference_s, difference),
    ]


def run() -> list[BenchRow]:
    rng = np.random.default_rng(0)
    is_ood = rng.random(N_SCORES) < 0.3
    scores = rng.normal(size=N_SCORES) + 1.5 * is_ood
    ood_sets = {f"ood{k}": rng.normal(size=N_PER_SET) + 0.25 * (k + 1) for k in range(N_OOD_SETS)}
    return [
        compare("ood_metrics, 10^6 scores, 3 decimals (many ties)", np.round(scores, 3), is_ood),
        compare("ood_metrics, 10^6 scores, 5 decimals (some ties)", np.round(scores, 5), is_ood),
        compare("ood_metrics, 10^6 continuous scores (no ties)", scores, is_ood),
        *compare_per_set(rng.normal(size=N_PER_SET), ood_sets),
    ]
