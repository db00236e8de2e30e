"""``common.metrics.ood_metrics`` against the scikit-learn calls giving AUROC, AUPR-IN, AUPR-OUT and FPR95TPR.

The reference is ``roc_auc_score``, ``average_precision_score`` twice (OOD positive, then ID positive on the
negated score) and ``roc_curve`` (every threshold kept) read at the first TPR >= 95 %. Ours computes all eight
keys of ``OOD_METRIC_KEYS`` in one sorting pass.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from bench.timing import BenchRow, best_time
from common.metrics import TPR_LEVEL, ood_metrics

N_SCORES = 10**6
COMPARED_KEYS = ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95TPR")


def sklearn_metrics(scores: np.ndarray, is_ood: np.ndarray) -> dict[str, float]:
    """The four compared keys from scikit-learn."""
    fpr, tpr, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    return {
        "AUROC": roc_auc_score(is_ood, scores),
        "AUPR-IN": average_precision_score(~is_ood, -scores),
        "AUPR-OUT": average_precision_score(is_ood, scores),
        "FPR95TPR": fpr[np.flatnonzero(tpr >= TPR_LEVEL)[0]],
    }


def compare(name: str, scores: np.ndarray, is_ood: np.ndarray) -> BenchRow:
    ours, reference = ood_metrics(scores, is_ood), sklearn_metrics(scores, is_ood)
    return BenchRow(
        benchmark=name,
        ours_s=best_time(lambda: ood_metrics(scores, is_ood), repeat=7),
        reference="sklearn roc_auc + 2×average_precision + roc_curve",
        reference_s=best_time(lambda: sklearn_metrics(scores, is_ood), repeat=3),
        max_abs_diff=max(abs(ours[key] - reference[key]) for key in COMPARED_KEYS),
        note=f"{np.unique(scores).size} distinct scores",
    )


def run() -> list[BenchRow]:
    rng = np.random.default_rng(0)
    is_ood = rng.random(N_SCORES) < 0.3
    scores = rng.normal(size=N_SCORES) + 1.5 * is_ood
    return [
        compare("ood_metrics, 10^6 scores, 3 decimals (many ties)", np.round(scores, 3), is_ood),
        compare("ood_metrics, 10^6 scores, 5 decimals (some ties)", np.round(scores, 5), is_ood),
        compare("ood_metrics, 10^6 continuous scores (no ties)", scores, is_ood),
    ]
