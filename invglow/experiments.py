"""The InvGlow experiments ``main.py`` runs, as cells (Schirrmeister et al., NeurIPS 2020).

``tables``: per seed, one cell pretrains Glow on (general) Tiny images and saves it as ``model.pt`` in its folder
(``tiny-pretrain/seed-<s>``), with its log-densities on every evaluated set, which the finetuning cells reuse
(:mod:`invglow.base_likelihoods`). Per in-distribution set and variant, one cell needing it finetunes a copy
(``finetune-<set>/<variant>/seed-<s>``): without outlier loss (``plain``), with the paper's outlier loss, with the
margin loss, and as the supervised class-conditional model. It scores every other OOD set with the raw
likelihood, the likelihood ratio to the Tiny model and the final-scale contribution; the plain cell of the first
set also scores Serra et al.'s PNG input complexity. The grey group (MNIST ↔ Fashion-MNIST) does the same with a
grey Tiny model (``tiny-pretrain-grey/seed-<s>``, ``finetune-grey-<set>/<variant>/seed-<s>``; plain and outlier
loss).

``local_vs_semantic`` (Sec. 4; reference note invglow.md §2.1 "Dense", "Local / patch variant", §4 item 4): per
in-distribution set and seed, three flows trained from scratch by maximum likelihood (no Tiny model, no outlier
loss), one cell each (``<kind>-glow-<set>/seed-<s>``): the full multi-scale Glow, a local Glow that only sees
non-overlapping patches (16 per image: 8×8 in the paper) and the fully connected ("dense") Glow. If the full
Glow's likelihood were about semantic content, the local model could not reproduce it; the paper finds that the
local and dense likelihoods track the full Glow's and fail on the same OOD pairs (CIFAR-10 → SVHN). The table has,
per model, the raw-likelihood AUROC of every (in → OOD) pair, the Spearman rank correlation of its per-image
log-likelihoods with the full Glow's over all evaluated images (the local and dense cells need the full one, which
saves them as ``likelihoods.pt``), and its test bits/dim.

Every cell trains through :func:`invglow.engine.fit` in its own folder (tensorboard events, checkpoints, resume);
in a run with ``--checkpoints DIR`` it loads the model it trained from DIR instead and is only evaluated
(:func:`invglow.engine.evaluate`, :mod:`common.trained_models`), from a run of this suite or from the original code's
file in ``DIR/<experiment>/<cell folder>`` (:func:`find_original`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

from common.cells import Cell, Experiment, Paper, RunContext, id_part
from common.datasets import ImageSet
from common.files import torch_save_atomically
from common.preflight import DataNeed
from common.results import ResultRow, Spread, join_notes, stand_in_note, summary_row
from common.run import seed_everything
from common.trained_models import OriginalModels, last_numbered, load_trained, original_folder
from invglow import base_likelihoods, paper
from invglow.config import InvGlowConfig, TrainConfig, configure, cpu_threads, grey_config
from invglow.cost import finetune_cost, from_scratch_cost, pretrain_cost
from invglow.data import (
    EvalSets,
    eval_sets,
    evaluation_sets,
    image_set,
    ood_test_sets,
    prepare_tiny,
    read_every_set,
    set_needs,
    tiny_images,
    tiny_needs,
)
from invglow.engine import FINAL_MODEL, LIKELIHOODS, Flow, OutlierKind, OutlierLossConfig, evaluate, fit, load_model
from invglow.models import MODEL_KINDS, ClassConditionalGlow, ModelKind, build_model
from invglow.original_checkpoints import OurModel, load_original
from invglow.scores import ScoreKind, anomaly_scores, auroc_percent, png_bits_per_dim, serra_scores

PAPER_NAME = "invglow"
CITATION = (
    "Schirrmeister, Zhou, Ball, Zhang: Understanding anomaly detection with deep invertible networks through "
    "hierarchies of distributions and features, NeurIPS 2020"
)
SPREAD = Spread(statistic="std", ddof=0, over="seeds")
DEMO_TINY = ("generated Tiny-format images", "80M Tiny Images")
"""(what the demo pretrains on, what the paper pretrains on)."""
FULL_LIKELIHOODS = "likelihoods.pt"
"""The full Glow's per-scale log-densities (N, L) of its evaluation images, saved for the Spearman ρ of the others."""

VARIANTS: dict[str, OutlierKind | None] = {  # finetuned variant → its outlier loss
    "plain": None,
    "outlier-loss": "class",
    "margin-loss": "margin",
    "supervised": "class",  # class-conditional model
}
Rows = tuple[tuple[str, str, str, ScoreKind], ...]  # (table, row, finetuned variant, score kind)


@dataclass(frozen=True)
class Group:
    """One group of the tables: the suffix of its cell parts, its finetuned variants, its table rows, and the paper's
    set each demo set stands in for."""

    suffix: str
    variants: tuple[str, ...]
    rows: Rows
    stands_for: Mapping[str, str]


RGB = Group(
    "",
    tuple(VARIANTS),
    (
        (paper.UNSUPERVISED_TABLE, paper.RAW, "plain", "raw"),
        (paper.UNSUPERVISED_TABLE, paper.RATIO, "plain", "ratio"),
        (paper.UNSUPERVISED_TABLE, paper.RATIO_OUTLIER_LOSS, "outlier-loss", "ratio"),
        (paper.UNSUPERVISED_TABLE, paper.FINAL_SCALE, "plain", "final_scale"),
        (paper.UNSUPERVISED_TABLE, paper.MARGIN_LOSS, "margin-loss", "ratio"),
        (paper.UNSUPERVISED_TABLE, paper.MARGIN_LOSS_RAW, "margin-loss", "raw"),
        (paper.SUPERVISED_TABLE, paper.SUPERVISED_RATIO, "supervised", "ratio"),
    ),
    {"shapes": "CIFAR-10", "digits-rgb": "SVHN"},
)
GREY = Group(
    "-grey",
    ("plain", "outlier-loss"),
    (
        (paper.GREY_TABLE, paper.RAW, "plain", "raw"),
        (paper.GREY_TABLE, paper.RATIO, "plain", "ratio"),
        (paper.GREY_TABLE, paper.RATIO_OUTLIER_LOSS, "outlier-loss", "ratio"),
        (paper.GREY_TABLE, paper.FINAL_SCALE, "plain", "final_scale"),
    ),
    {"shapes": "Fashion-MNIST", "digits-rgb": "MNIST"},
)
MODEL_ROWS: dict[ModelKind, str] = dict(zip(MODEL_KINDS, paper.LOCAL_SEMANTIC_ROWS, strict=True))
ORIGINAL_TINY_MODEL = "tiny_model.th"
"""The original ``main.py``'s file of the Tiny-pretrained Glow."""
ORIGINAL_EPOCH_MODEL = re.compile(r"\d+_model\.th")
"""The original ``exp.run_exp``'s files of every other model, ``<epoch>_model.th``."""


def groups(config: InvGlowConfig) -> list[Group]:
    """The groups of the tables: RGB, and grey unless ``config.grey`` is None."""
    return [RGB] if config.grey is None else [RGB, GREY]


def group_config(config: InvGlowConfig, group: Group) -> InvGlowConfig:
    """The configuration of ``group``: ``config`` itself, or its grey version."""
    return config if group is RGB else grey_config(config)


def outlier_loss(variant: str, finetune: TrainConfig) -> OutlierLossConfig | None:
    """The outlier loss of a finetuned ``variant``, with the weight λ and temperature T of ``finetune``."""
    kind = VARIANTS[variant]
    return None if kind is None else OutlierLossConfig(kind, finetune.outlier_weight, finetune.outlier_temperature)


def pretrain_id(group: Group, seed: int) -> str:
    """Id of the cell pretraining the Tiny model of ``group``."""
    return f"{PAPER_NAME}/tables/tiny-pretrain{group.suffix}/seed-{seed}"


def finetune_id(group: Group, in_name: str, variant: str, seed: int) -> str:
    """Id of the cell finetuning ``variant`` on ``in_name``."""
    return f"{PAPER_NAME}/tables/finetune{group.suffix}-{id_part(in_name)}/{variant}/seed-{seed}"


def ood_names(config: InvGlowConfig, in_name: str) -> list[str]:
    """The OOD sets ``in_name`` is tested against: every OOD set of ``config`` but itself."""
    return [name for name in config.data.ood if name != in_name]


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of :func:`invglow.engine.fit` (the per-image likelihoods left out)."""
    return {name: float(value) for name, value in metrics.items() if name != LIKELIHOODS}


def _train(
    model: Flow,
    train_set: ImageSet,
    evaluation: EvalSets,
    train: TrainConfig,
    context: RunContext,
    *,
    seed: int,
    flip: bool,
    **more: Any,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Train ``model`` in the cell's folder (:func:`invglow.engine.fit`, ``more``: its outlier-loss arguments), or
    in a run with ``--checkpoints`` load the model the cell trained and evaluate it only.

    Returns:
        The final evaluation's metrics, and where the model was loaded from (``{}`` when trained here).
    """
    where = {"device": context.device, "progress": context.progress}
    if context.settings.checkpoints is None:
        return fit(model, train_set, evaluation, train, context.folder, seed=seed, flip=flip, **where, **more), {}
    source = load_trained(model, context, ORIGINAL_MODELS)
    base = {name: more.get(name) for name in ("base_model", "base_likelihoods")}
    return evaluate(model, evaluation, train, context.folder, **base, **where), source


# ----------------------------------------------------------------------------------------------- tables
def _pretrain(group: Group, seed: int, context: RunContext) -> dict[str, Any]:
    """Pretrain the Tiny Glow of ``group`` into the cell's ``model.pt``; its evaluation on Tiny test vs OOD sets."""
    config = group_config(context.config, group)
    for each in groups(context.config):  # a missing file stops the run before any training
        read_every_set(group_config(context.config, each), seed)
    prepare_tiny(config, context.folder, seed)
    tiny_train, tiny_test = (tiny_images(config, context.folder, seed, split) for split in ("train", "test"))
    evaluation = eval_sets("tiny", tiny_test, ood_test_sets(config, seed), config.pretrain.eval_batch_size)
    seed_everything(seed)  # the 1×1 convolutions' random rotations and the coupling nets' weights
    model = build_model(config).to(context.device)
    train_set = ImageSet(tiny_train, torch.full((len(tiny_train),), -1))
    metrics, source = _train(model, train_set, evaluation, config.pretrain, context, seed=seed, flip=True)
    base_likelihoods.save(context.folder, evaluation, metrics[LIKELIHOODS]["fine"])  # for the finetuning cells
    return _numbers(metrics) | source


def _finetune(group: Group, in_name: str, variant: str, seed: int, context: RunContext) -> dict[str, Any]:
    """Finetune a copy of the pretrained Tiny model on ``in_name``; bits/dim and AUROC per score and OOD set (and
    Serra et al.'s, for the plain model of the first RGB set)."""
    config = group_config(context.config, group)
    pretrained = context.folder_of(pretrain_id(group, seed))
    train_set = image_set(in_name, "train", config, seed)
    evaluation = evaluation_sets(in_name, config, seed, config.finetune.eval_batch_size)
    outlier = outlier_loss(variant, config.finetune)
    tiny_train = None if outlier is None else tiny_images(config, pretrained, seed, "train")  # the outlier batches
    model = load_model(build_model(config), pretrained / FINAL_MODEL, context.device)
    base_model = copy.deepcopy(model).requires_grad_(False)
    if variant == "supervised":
        model = ClassConditionalGlow(model, int(train_set.labels.max()) + 1).to(context.device)
    metrics, source = _train(
        model,
        train_set,
        evaluation,
        config.finetune,
        context,
        seed=seed,
        flip=in_name not in config.data.no_flip,
        base_model=base_model,
        outlier=outlier,
        outlier_images=tiny_train,
        base_likelihoods=base_likelihoods.load(pretrained, evaluation),
    )
    values = _numbers(metrics) | source
    if _has_serra(group, config, in_name, variant):
        values |= serra_aurocs(evaluation, metrics[LIKELIHOODS]["fine"], ood_name=config.data.in_distribution[-1])
    return values


def _has_serra(group: Group, config: InvGlowConfig, in_name: str, variant: str) -> bool:
    """Serra et al.'s baseline is scored with the plain model of the first RGB set, against the last set."""
    return group is RGB and variant == "plain" and in_name == config.data.in_distribution[0]


def serra_aurocs(evaluation: EvalSets, fine: torch.Tensor, ood_name: str) -> dict[str, float]:
    """S-score and PNG-only AUROCs (%) of the in-distribution test set (id 0) vs ``ood_name``.

    Args:
        evaluation: the evaluated images and their set ids.
        fine: per-scale log-densities (N, L) of the finetuned model on ``evaluation.images``, in order.
        ood_name: the OOD set (SVHN in the paper).
    """
    ood_id = evaluation.names.index(ood_name)
    chosen = (evaluation.set_ids == 0) | (evaluation.set_ids == ood_id)
    is_ood = (evaluation.set_ids[chosen] == ood_id).numpy()
    scores = {
        "serra/S": serra_scores(fine[chosen], evaluation.images[chosen]).values,
        "serra/PNG": png_bits_per_dim(evaluation.images[chosen]),
    }
    return {name: auroc_percent(values[~is_ood], {name: values[is_ood]})[name] for name, values in scores.items()}


def tables_data(config: InvGlowConfig) -> list[DataNeed]:
    """Every set of every group and the Tiny subset: each pretraining reads them all before it trains."""
    sets = [need for group in groups(config) for need in set_needs(group_config(config, group))]
    return [*sets, *tiny_needs(config)]


def tables_cells(config: InvGlowConfig) -> list[Cell]:
    """A Tiny pretraining cell per group and seed, then a finetuning cell per set, variant and seed needing it."""
    found = [
        Cell(pretrain_id(group, s), partial(_pretrain, group, s), cost=pretrain_cost(group_config(config, group)))
        for group in groups(config)
        for s in config.seeds
    ]
    found += [
        Cell(
            finetune_id(group, in_name, variant, s),
            partial(_finetune, group, in_name, variant, s),
            needs=(pretrain_id(group, s),),
            cost=finetune_cost(group_config(config, group), in_name, outliers=VARIANTS[variant] is not None),
        )
        for group, in_name, variant, s in finetunings(config)
    ]
    return found


def finetunings(config: InvGlowConfig) -> Iterator[tuple[Group, str, str, int]]:
    """(group, in-distribution set, variant, seed) of every finetuning cell, in the order of the cells."""
    for group in groups(config):
        for in_name in group_config(config, group).data.in_distribution:
            for variant in group.variants:
                for seed in config.seeds:
                    yield group, in_name, variant, seed


def row_label(config: InvGlowConfig, row: str) -> str:
    """The paper's ``row`` as it ran under ``config``: the side of the final scale and the local Glow's patches and
    image size are the configuration's (the demo's 16×16 images have a 2×2 final scale and 4×4 patches)."""
    size = config.glow.image_size
    if row == paper.FINAL_SCALE:
        return paper.final_scale_row(size // 2**config.glow.n_scales)
    if row == paper.LOCAL_GLOW:
        return paper.local_glow_row(config.local_semantic.patch_size, size)
    return row


def demo_data(config: InvGlowConfig, group: Group, pretrained: bool = True) -> str:
    """Which data stood in for which in ``group``'s tables: its in-distribution sets and, for models pretrained on
    Tiny (``pretrained``), the generated Tiny set; "" at the paper scale."""
    pairs = [(name, group.stands_for.get(name, name)) for name in group_config(config, group).data.in_distribution]
    if pretrained and config.scale == "demo":
        pairs.append(DEMO_TINY)
    return stand_in_note(pairs)


def _row(config: InvGlowConfig, values: Sequence[float], table: str, row: str, column: str, note: str) -> ResultRow:
    """Mean and :data:`SPREAD` of one value over the seeds, beside the published one, labelled by :func:`row_label`."""
    where = {"paper": PAPER_NAME, "table": table, "column": column, "seeds": config.seeds, "note": note}
    return summary_row(values, SPREAD, paper.published(table, row, column), row=row_label(config, row), **where)


def tables_table(config: InvGlowConfig, results: Mapping[str, Mapping[str, Any]]) -> list[ResultRow]:
    """The unsupervised, supervised and grey AUROC tables and the Serra et al. baseline."""
    rows = []
    for group in groups(config):
        sets = group_config(config, group)
        note = demo_data(config, group)
        for in_name in sets.data.in_distribution:
            for ood_name in ood_names(sets, in_name):
                for table, row, variant, kind in group.rows:
                    values = [
                        results[finetune_id(group, in_name, variant, s)][f"AUROC-{kind}/{ood_name}"]
                        for s in config.seeds
                    ]
                    rows.append(_row(sets, values, table, row, f"{in_name} → {ood_name}", note))
            if _has_serra(group, sets, in_name, "plain"):
                rows += _serra_rows(config, [results[finetune_id(group, in_name, "plain", s)] for s in config.seeds])
    return rows


def _serra_rows(config: InvGlowConfig, results: list[Mapping[str, Any]]) -> list[ResultRow]:
    rows = []
    for row, name in ((paper.SERRA_S, "serra/S"), (paper.SERRA_PNG, "serra/PNG")):
        values = [result[name] for result in results]
        for column in (paper.ORIGINAL_CODE, paper.SERRA_PAPER):
            note = join_notes(demo_data(config, RGB), paper.SERRA_SOURCES[(row, column)])
            rows.append(_row(config, values, paper.SERRA_TABLE, row, column, note))
    return rows


# ----------------------------------------------------------------------------------------------- local vs semantic
def local_semantic_id(kind: ModelKind, in_name: str, seed: int) -> str:
    """Id of the cell training the ``kind`` model from scratch on ``in_name``."""
    return f"{PAPER_NAME}/local_vs_semantic/{kind}-glow-{id_part(in_name)}/seed-{seed}"


def rank_correlation(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Spearman rank correlation of two models' log-likelihoods of the same images.

    Args:
        reference: per-scale log-densities (N, L) of one model (summed per image).
        other: per-scale log-densities (N, L') of the other model on the same images, in the same order.

    Returns:
        ρ in [−1, 1]; non-finite likelihoods rank as the least likely, as in :func:`~invglow.scores.anomaly_scores`.
    """
    if len(reference) != len(other):
        raise ValueError(f"reference, other: expected the same images, got {len(reference)} and {len(other)} rows")
    return float(spearmanr(anomaly_scores("raw", reference).values, anomaly_scores("raw", other).values).statistic)


def _from_scratch(kind: ModelKind, in_name: str, seed: int, context: RunContext) -> dict[str, Any]:
    """Train the ``kind`` model on ``in_name``: raw AUROC per OOD set, test bits/dim, and (local and dense models)
    the Spearman ρ of its log-likelihoods with the full Glow's."""
    config = context.config
    train_set = image_set(in_name, "train", config, seed)
    evaluation = evaluation_sets(in_name, config, seed, config.local_semantic.train.eval_batch_size)
    seed_everything(seed)  # the model's initial weights (rotations, coupling nets) depend on the seed only
    model = build_model(config, kind).to(context.device)
    flip = in_name not in config.data.no_flip
    metrics, source = _train(model, train_set, evaluation, config.local_semantic.train, context, seed=seed, flip=flip)
    values: dict[str, Any] = {f"AUROC-raw/{ood}": metrics[f"AUROC-raw/{ood}"] for ood in evaluation.names[1:]}
    values |= {"bpd": metrics[f"bpd/{in_name}"], "steps": metrics["steps"], "skipped_steps": metrics["skipped_steps"]}
    values |= source
    likelihoods = metrics[LIKELIHOODS]["fine"]
    if kind == "full":
        torch_save_atomically(likelihoods, context.folder / FULL_LIKELIHOODS)
    else:
        full = context.folder_of(local_semantic_id("full", in_name, seed)) / FULL_LIKELIHOODS
        values["spearman"] = rank_correlation(torch.load(full, weights_only=True), likelihoods)
    return values


def local_semantic_cells(config: InvGlowConfig) -> list[Cell]:
    """Per set and seed: the full Glow, then the local and dense Glows, which need its likelihoods."""
    found = []
    for in_name in config.data.in_distribution:
        for seed in config.seeds:
            full = local_semantic_id("full", in_name, seed)
            found += [
                Cell(
                    local_semantic_id(kind, in_name, seed),
                    partial(_from_scratch, kind, in_name, seed),
                    needs=() if kind == "full" else (full,),
                    cost=from_scratch_cost(config, in_name),
                )
                for kind in MODEL_KINDS
            ]
    return found


def local_semantic_table(config: InvGlowConfig, results: Mapping[str, Mapping[str, Any]]) -> list[ResultRow]:
    """Per model: AUROC per (in → OOD) pair, Spearman ρ with the full Glow (local and dense), test bits/dim."""
    note = join_notes(demo_data(config, RGB, pretrained=False), paper.NOT_RETRIEVED)
    rows = []
    for in_name in config.data.in_distribution:
        for kind, row in MODEL_ROWS.items():
            seed_results = [results[local_semantic_id(kind, in_name, s)] for s in config.seeds]
            columns = {f"{in_name} → {ood}": f"AUROC-raw/{ood}" for ood in ood_names(config, in_name)}
            if kind != "full":
                columns[f"{in_name}: Spearman ρ with full Glow"] = "spearman"
            columns[f"{in_name}: test bits/dim"] = "bpd"
            for column, name in columns.items():
                values = [result[name] for result in seed_results]
                rows.append(_row(config, values, paper.LOCAL_SEMANTIC_TABLE, row, column, note))
    return rows


def global_batches(config: InvGlowConfig) -> dict[str, int]:
    """The global batch sizes of the Glow trainings (in-distribution and outlier batches have the same size)."""
    return {
        "pretrain.batch_size": config.pretrain.batch_size,
        "finetune.batch_size": config.finetune.batch_size,
        "local_semantic.train.batch_size": config.local_semantic.train.batch_size,
    }


# ----------------------------------------------------------------------------------------------- original files
def cell_config(config: InvGlowConfig, cell_id: str) -> InvGlowConfig:
    """The configuration cell ``cell_id`` builds its model with: its group's (:func:`group_config`, the grey one for
    a ``-grey`` cell) for a ``tables`` cell, ``config`` itself for a ``local_vs_semantic`` cell."""
    table_groups = {pretrain_id(group, s): group for group in groups(config) for s in config.seeds}
    table_groups |= {finetune_id(*parts): parts[0] for parts in finetunings(config)}
    group = table_groups.get(cell_id)
    return config if group is None else group_config(config, group)


def find_original(cell_id: str, root: Path) -> Path | None:
    """The original code's file of cell ``cell_id`` under ``root``: in its :func:`original_folder`,
    :data:`ORIGINAL_TINY_MODEL` for a Tiny pretraining, else the ``<epoch>_model.th`` of the highest epoch."""
    folder = original_folder(root, cell_id)
    seed = int(cell_id.rsplit("/seed-", 1)[1])
    if cell_id in {pretrain_id(group, seed) for group in (RGB, GREY)}:
        return folder / ORIGINAL_TINY_MODEL if (folder / ORIGINAL_TINY_MODEL).is_file() else None
    return last_numbered(path for path in folder.glob("*_model.th") if ORIGINAL_EPOCH_MODEL.fullmatch(path.name))


def load_original_model(path: Path, cell_id: str, config: InvGlowConfig) -> OurModel:
    """Our model of the original's file ``path`` (a Glow, dense Glow, local Glow or class-conditional Glow, as the
    file holds), shaped by the configuration of cell ``cell_id``."""
    return load_original(path, cell_config(config, cell_id))


ORIGINAL_MODELS: tuple[OriginalModels, ...] = (
    OriginalModels(
        "the original code's Glow files (th.save of the model): DIR/<experiment>/<cell folder>/tiny_model.th for a "
        "Tiny pretraining, else the <epoch>_model.th of the highest epoch there",
        find_original,
        load_original_model,
    ),
)
"""Readers of the original code's trained Glow files for ``--checkpoints``, tried after this suite's run folders."""


PAPER = Paper(
    PAPER_NAME,
    CITATION,
    experiments=(
        Experiment(
            "tables",
            "Tiny pretraining; finetuning per set (plain, outlier / margin loss, supervised); AUROC tables; Serra",
            configure,
            tables_cells,
            tables_table,
            cpu_threads=cpu_threads,
            data_parallel=True,
            global_batches=global_batches,
            data=tables_data,
            original_models=ORIGINAL_MODELS,
        ),
        Experiment(
            "local_vs_semantic",
            "full, local (16 patches) and dense Glow from scratch per set: raw AUROC, Spearman ρ, bits/dim",
            configure,
            local_semantic_cells,
            local_semantic_table,
            cpu_threads=cpu_threads,
            data_parallel=True,
            global_batches=global_batches,
            data=set_needs,
            original_models=ORIGINAL_MODELS,
        ),
    ),
)
