"""Gaussian AD benchmarks: Ledoit-Wolf + Mahalanobis, EfficientNet feature extraction, one category end to end.

``python -m bench gaussian_ad``. References run in the same process on the same inputs: scikit-learn's
``LedoitWolf`` + numpy quadratic forms, and the ``efficientnet_pytorch`` package (a test/bench-only dependency)
with the same random weights.
"""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from bench.timing import BenchRow, best_time, best_times_interleaved
from gaussian_ad.backbones import EfficientNetFeatures, fold_batchnorm, inference_model
from gaussian_ad.scores import mahalanobis
from gaussian_ad.statistics import fit_ledoit_wolf


def _sklearn_distances(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    fit = LedoitWolf().fit(train)
    centred = test - fit.location_
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, fit.precision_, centred), 0))


def _ours_distances(train: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    fit = fit_ledoit_wolf(train)
    return mahalanobis(test, fit.mean, fit.precision)


def bench_ledoit_wolf(n: int = 300, d: int = 1792, m: int = 200) -> BenchRow:
    """Fit on n × d features and score m test vectors: ours (torch float64) vs scikit-learn + numpy."""
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    train, test = rng.standard_normal((n, d)) @ mixing, rng.standard_normal((m, d)) @ mixing * 1.5
    train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
    ours = _ours_distances(train_t, test_t).numpy()
    reference = _sklearn_distances(train, test)
    return BenchRow(
        f"Ledoit-Wolf + Mahalanobis, n={n}, d={d}, {m} test vectors",
        best_time(lambda: _ours_distances(train_t, test_t), repeat=3),
        "sklearn LedoitWolf + numpy",
        best_time(lambda: _sklearn_distances(train, test), repeat=2, warmup=0),
        float(np.max(np.abs(ours - reference) / np.abs(reference))),
        "max diff is relative; float64 both",
    )


def _inference(model: Callable[[torch.Tensor], Any], images: torch.Tensor) -> Callable[[], Any]:
    """``model(images)`` under ``torch.inference_mode()``."""

    def call() -> Any:
        with torch.inference_mode():
            return model(images)

    return call


def _extraction_steps(ours: EfficientNetFeatures, images: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """Our nine levels with each optimisation added to the previous ones; the last is what gaussian_ad.engine runs."""
    in_place = fold_batchnorm(ours)
    in_place.activation.inplace = True
    channels_last = images.contiguous(memory_format=torch.channels_last)
    return {
        "ours, plain eval (autograd on, NCHW)": lambda: ours(images),
        "+ torch.inference_mode": _inference(ours, images),
        "+ BatchNorm folded into the convolutions": _inference(fold_batchnorm(ours), images),
        "+ activations in place": _inference(in_place, images),
        "+ channels-last model and input": _inference(
            copy.deepcopy(in_place).to(memory_format=torch.channels_last), channels_last
        ),
        "+ asymmetric paddings in the kernels (inference_model, the extraction path)": _inference(
            inference_model(ours), channels_last
        ),
    }


def _load() -> str:
    """The 1, 5 and 15 min load averages of the machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_extraction(name: str = "efficientnet-b4", batch: int = 4) -> list[BenchRow]:
    """Images/s of the whole trunk at the native resolution, ours after each optimisation vs efficientnet_pytorch.

    Same random weights; every step and the reference are timed in turn in each round (best of 5 rounds).
    """
    from efficientnet_pytorch import EfficientNet

    reference = EfficientNet.from_name(name).eval()
    ours = EfficientNetFeatures(name, padding="0.7").eval()  # 0.7 = the installed package's padding
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("_fc.")})
    images = torch.randn(batch, 3, ours.image_size, ours.image_size, generator=torch.Generator().manual_seed(0))
    steps = _extraction_steps(ours, images)
    with torch.no_grad():
        head_reference = reference.extract_features(images).mean(dim=(2, 3))
        diffs = [
            float((step()[-1] - head_reference).abs().max() / head_reference.abs().max()) for step in steps.values()
        ]
    load_before = _load()
    *times, reference_s = best_times_interleaved([*steps.values(), _inference(reference.extract_features, images)], 5)
    load = f"load {load_before} → {_load()}; torch threads: {torch.get_num_threads()}"
    return [
        BenchRow(
            f"{name} features at {ours.image_size} px, batch {batch} (CPU): {step}",
            seconds,
            "efficientnet_pytorch 0.7.1 extract_features",
            reference_s,
            diff,
            f"{batch / seconds:.2f} vs {batch / reference_s:.2f} img/s; diff of L9, relative"
            + (f"; {load}" if index == 0 else ""),
        )
        for index, (step, seconds, diff) in enumerate(zip(steps, times, diffs, strict=True))
    ]


def bench_category(category: str = "bottle") -> BenchRow:
    """One synthetic category end to end with Lite0 (extraction + 5 folds × 9 levels MVG); sklearn for the fits."""
    from gaussian_ad.config import CONFIGS
    from gaussian_ad.data import category_features
    from gaussian_ad.engine import fit
    from gaussian_ad.protocol import CategoryFeatures, Variant, fold_mean_aurocs, fold_train_indices

    config = CONFIGS["demo"]
    start = time.perf_counter()
    features = CategoryFeatures(
        **category_features(config, "efficientnet-lite0", category, torch.device("cpu"), progress=False)
    )
    extraction_s = time.perf_counter() - start

    def ours() -> np.ndarray:
        return fold_mean_aurocs(fit(features, Variant("mvg")), features.test_labels)

    def reference() -> None:
        for indices in fold_train_indices(len(features.train[0])):
            for train, test in zip(features.train, features.test, strict=True):
                _sklearn_distances(train[indices].double().numpy(), test.double().numpy())

    ours_s, reference_s = best_time(ours, repeat=2), best_time(reference, repeat=1, warmup=0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchRow(
        f"one category ({category}, synthetic, Lite0): 5 folds × 9 levels",
        extraction_s + ours_s,
        "same with sklearn LedoitWolf + numpy fits",
        extraction_s + reference_s,
        None,
        f"extraction {extraction_s:.1f} s, fits {ours_s:.2f} s vs {reference_s:.2f} s; peak RSS {peak_mb:.0f} MB",
    )


def run() -> list[BenchRow]:
    """All Gaussian AD benchmarks."""
    return [bench_ledoit_wolf(), *bench_extraction(), bench_category()]
