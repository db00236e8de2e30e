"""The tables ``python main.py memae`` reproduces, as cells: the MemAE image table and the C-MemAE experiments.

- ``image_table``: AE, MemAE-nonSpar and MemAE under the one-class protocol (each class normal in turn, ~30 %
  anomalies from the other classes), AUROC averaged over the classes (Gong et al., ICCV 2019, Sec. 4.1). One cell
  per (column, variant, normal class, seed): ``memae/image_table/MNIST/MemAE/class-7/seed-0``.
- ``conditional``: C-MemAE (one memory per class of a group, known condition and self-selection) against one
  MemAE per class and the conditional AE, self-selection accuracy, and the few-shot memory strategies over k. One
  cell per single-class MemAE (``memae/conditional/MNIST/MemAE/class-3/seed-0``), per group and model
  (``.../cmemae/group-0-1/seed-0``, ``.../cae/group-0-1/seed-0``) and per few-shot run
  (``.../few-shot/transfer/k-10/class-5/seed-0``), which needs the cell of the model it starts from and loads the
  ``model.pt`` that cell saved.

Each cell trains in its own folder (tensorboard events, checkpoints) and resumes from its newest checkpoint; the
model it trained is left in ``model.pt`` there. In a run with ``--checkpoints DIR`` a cell that trains loads that
model from DIR instead and is only evaluated (:mod:`common.trained_models`), from a run of this suite or, for the
image table, from the official code's file in ``DIR/image_table/<cell folder>`` (:func:`find_official`).
Tables print AUROC and accuracies in percent, ± the standard deviation over seeds of the per-seed class mean.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch

import folder_locations
from common.cells import Cell, Experiment, Paper, RunContext, id_part
from common.datasets import ImageSet, load
from common.errors import DataError
from common.loaders import TensorBatchLoader
from common.preflight import DataNeed, DatasetNeed
from common.results import ResultRow, Spread, join_notes, stand_in_note, summary_row
from common.run import seed_everything
from common.smoke import evaluation_subset
from common.trained_models import FINAL_MODEL, OriginalModels, last_numbered, load_trained, original_folder
from memae import paper
from memae.config import (
    ConditionalSetting,
    DataConfig,
    ImageSetting,
    MemAEConfig,
    MemoryConfig,
    TrainConfig,
    configure,
)
from memae.cost import few_shot_cost, group_cost, one_class_cost
from memae.data import normalisation, one_class_test_set, training_set
from memae.engine import TRAINING, Evaluation, create_evaluator, fit, load_weights, save_weights
from memae.few_shot import STRATEGIES
from memae.models import ARCHITECTURES, Autoencoder, build_model
from memae.original_checkpoints import load_original

NAME = "memae"
CITATION = (
    "Gong et al., Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised "
    "Anomaly Detection, ICCV 2019; and C-MemAE (Zamel), class-conditional memories"
)
EVAL_BATCH = 500  # C-MemAE's test_batch_size
SPREAD = Spread(statistic="std", ddof=1, over="seeds")  # of the per-seed mean over the classes
EXTRA_METRICS = ("AUPR-IN", "AUPR-OUT", "FPR95TPR")
OTHER_METRICS_TABLE = "Image table: other metrics (%)"
PER_CLASS_TABLE = "Image table: AUROC (%) per class"
CONDITIONAL_TABLE = "C-MemAE: one memory per class of a group (AUROC %, mean over the classes)"
FEW_SHOT_TABLE = "C-MemAE few-shot transfer to a new class (AUROC %, mean over the new classes)"
IMAGE_VARIANTS = {"AE": "ae", "MemAE-nonSpar": "memae", "MemAE": "memae"}
"""Image-table rows → model variant; MemAE-nonSpar is MemAE without shrinkage and entropy loss (Sec. 4.1)."""
SELF_SELECTION_MODES: dict[str, str | None] = {"known": None, "self_sum": "sum", "self_max": "max"}
"""C-MemAE evaluations: known condition, and self-selection by summed (C-MemAE) or maximal slot similarity."""
GROUP_VARIANTS = ("cmemae", "cae")  # C-MemAE and the conditional AE, one of each per group
IMAGE_TABLE = "image_table"
OFFICIAL_FILE = re.compile(r".+_epoch_\d+(_final)?\.pt")
"""The official ``script_training.py``'s files: ``<setting>_epoch_NNNN.pt`` per epoch, ``..._final.pt`` at the end."""


# --------------------------------------------------------------------------------------------- shared
@functools.cache
def _load_from(data: DataConfig, root: Path) -> tuple[ImageSet, ImageSet]:
    """``root`` (the data root) is only part of the cache key: a test may point the root elsewhere."""
    return load(data.name, "train", **data.load_options), load(data.name, "test", **data.load_options)


def _load(data: DataConfig) -> tuple[ImageSet, ImageSet]:
    """Training and test images of ``data`` (kept in memory per data root: many cells read the same set)."""
    return _load_from(data, folder_locations.data_root())


def _loader(
    data: ImageSet, batch_size: int, ctx: RunContext, seed: int = 0, shuffle: bool = False
) -> TensorBatchLoader:
    transform = normalisation(data.images.shape[1])
    return TensorBatchLoader(
        data.images, data.labels, batch_size, shuffle=shuffle, transform=transform, device=ctx.device, seed=seed
    )


def _build(architecture: str, variant: str, memory: MemoryConfig, ctx: RunContext, conditions: int = 1) -> Autoencoder:
    model = build_model(
        architecture,
        variant,
        num_slots=memory.num_slots,
        shrink_threshold=memory.shrink_threshold,
        similarity=memory.similarity,
        num_conditions=conditions,
    )
    return model.to(ctx.device)


def _test_set(test: ImageSet, normal_class: int, seed: int) -> ImageSet:
    """The one-class test set of ``normal_class``, the anomalies drawn with ``default_rng([seed, class])``; two
    evaluation batches of it spread over the set in a smoke run (``common.smoke``)."""
    chosen = one_class_test_set(test, normal_class, np.random.default_rng([seed, normal_class]))
    subset = evaluation_subset(len(chosen.labels), EVAL_BATCH)
    return ImageSet(chosen.images[subset], chosen.labels[subset])


def _fit(
    ctx: RunContext,
    model: Autoencoder,
    train_data: TensorBatchLoader | None,
    evaluations: Sequence[Evaluation],
    train: TrainConfig,
    entropy_weight: float,
    seed: int,
    **more: Any,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Train ``model`` in the cell's folder (:func:`memae.engine.fit`; ``more``: its group and BatchNorm options),
    or in a run with ``--checkpoints`` load the model the cell trained and only evaluate it; either way its weights
    are left in the cell's ``model.pt``. Without ``train_data`` nothing is trained: ``model`` is evaluated as it is.

    Returns:
        :func:`memae.engine.fit`'s metrics, and where the model was loaded from (``{}`` when not loaded).
    """
    source: dict[str, str] = {}
    if ctx.settings.checkpoints is not None and train_data is not None:
        source, train_data = load_trained(model, ctx, ORIGINAL_MODELS), None
    metrics = fit(
        model, train_data, evaluations, train, entropy_weight, ctx.folder, seed=seed, progress=ctx.progress, **more
    )
    save_weights(model, ctx.folder / FINAL_MODEL)
    return metrics, source


def _train_one_class(
    ctx: RunContext, data: DataConfig, variant: str, memory: MemoryConfig, train: TrainConfig, c: int, seed: int
) -> dict[str, Any]:
    """Train one model on the training images of class ``c`` in the cell's folder; its last-epoch test metrics."""
    train_data, test_data = _load(data)
    seed_everything(seed)
    model = _build(data.architecture, variant, memory, ctx)
    evaluation = Evaluation("test", create_evaluator(model, c), _loader(_test_set(test_data, c, seed), EVAL_BATCH, ctx))
    loader = _loader(training_set(train_data, [c]), train.batch_size, ctx, seed, shuffle=True)
    entropy_weight = memory.entropy_weight if variant != "ae" else 0.0
    metrics, source = _fit(ctx, model, loader, [evaluation], train, entropy_weight, seed)
    return {**metrics["test"], **metrics[TRAINING], **source}


def _row(
    config: MemAEConfig, table: str, row: str, data: DataConfig, suffix: str, fractions: Sequence[float]
) -> ResultRow:
    """A table cell in percent: the mean over seeds of ``fractions`` (one per seed) ± their std over seeds.

    Its column is :func:`column_label` of ``data`` + ``suffix``; its published value that of the paper's column.
    """
    return summary_row(
        [100.0 * float(value) for value in fractions],
        SPREAD,
        paper.published(table, row, data.column + suffix),
        paper=NAME,
        table=table,
        row=row,
        column=column_label(data) + suffix,
        seeds=config.seeds,
        note=_data_note(data),
    )


def column_label(data: DataConfig) -> str:
    """The column of ``data`` in our tables: the paper's ("MNIST") where its data ran, else the data's ("digits")."""
    return data.column if data.name == paper.DATASETS.get(data.column) else data.name


def _data_note(data: DataConfig) -> str:
    """What stood in for the paper's column, then the data's options and the network's input shape."""
    options = ", ".join(f"{key}={value}" for key, value in data.options)
    shape = ARCHITECTURES[data.architecture].input_shape
    stand_in = stand_in_note([(column_label(data), data.column)])
    return join_notes(stand_in, f"{data.name}{f' ({options})' if options else ''}, {shape} input")


# --------------------------------------------------------------------------------------------- image table
def image_cell_id(setting: ImageSetting, label: str, c: int, seed: int) -> str:
    """``memae/image_table/<column>/<row>/class-<c>/seed-<seed>``."""
    return f"{NAME}/{IMAGE_TABLE}/{id_part(setting.data.column)}/{label}/class-{c}/seed-{seed}"


def image_memory(setting: ImageSetting, label: str) -> MemoryConfig:
    """The memory of an image-table row: the column's, without sparsity for MemAE-nonSpar (ignored by AE)."""
    return setting.memory.without_sparsity() if label == "MemAE-nonSpar" else setting.memory


def _image_cell(setting: ImageSetting, label: str, c: int, seed: int, ctx: RunContext) -> dict[str, Any]:
    memory = image_memory(setting, label)
    return _train_one_class(ctx, setting.data, IMAGE_VARIANTS[label], memory, setting.train, c, seed)


def image_data(config: MemAEConfig) -> list[DataNeed]:
    """The dataset of each column, read by the column's cells."""
    return [
        DatasetNeed(s.data.name, cells=(f"{NAME}/image_table/{id_part(s.data.column)}/*",)) for s in config.image_table
    ]


def image_cells(config: MemAEConfig) -> list[Cell]:
    """One training and test per (column, variant, normal class, seed)."""
    return [
        Cell(
            image_cell_id(setting, label, c, seed),
            functools.partial(_image_cell, setting, label, c, seed),
            cost=one_class_cost(setting.data, setting.train, c),
        )
        for _, setting, label, c, seed in image_cell_parts(config)
    ]


def image_cell_parts(config: MemAEConfig) -> Iterator[tuple[int, ImageSetting, str, int, int]]:
    """(index of the setting in ``config.image_table``, setting, row, normal class, seed) of every image-table cell,
    in the order of :func:`image_cells`."""
    for index, setting in enumerate(config.image_table):
        for label in IMAGE_VARIANTS:
            for c in setting.data.classes:
                for seed in config.seeds:
                    yield index, setting, label, c, seed


def image_cell_setting(config: MemAEConfig, cell_id: str) -> tuple[int, ImageSetting]:
    """The index in ``config.image_table`` and the setting of image-table cell ``cell_id``, with the memory of its
    row (:func:`image_memory`: no shrinkage for MemAE-nonSpar).

    Raises:
        KeyError: no image-table cell of ``config`` has that id.
    """
    for index, setting, label, c, seed in image_cell_parts(config):
        if image_cell_id(setting, label, c, seed) == cell_id:
            return index, replace(setting, memory=image_memory(setting, label))
    raise KeyError(f"no image-table cell {cell_id} in this configuration")


def image_table(config: MemAEConfig, results: Mapping[str, Mapping[str, Any]]) -> list[ResultRow]:
    """MemAE's image table (AUROC, mean over the classes), the other metrics and the per-class AUROCs."""
    rows = []
    for setting in config.image_table:
        data = setting.data
        for label in IMAGE_VARIANTS:
            per_seed = [[results[image_cell_id(setting, label, c, s)] for c in data.classes] for s in config.seeds]
            rows.append(_row(config, paper.IMAGE_TABLE, label, data, "", [_mean(m, "AUROC") for m in per_seed]))
            for key in EXTRA_METRICS:
                values = [_mean(m, key) for m in per_seed]
                rows.append(_row(config, OTHER_METRICS_TABLE, label, data, f" {key}", values))
            for index, c in enumerate(data.classes):
                values = [m[index]["AUROC"] for m in per_seed]
                rows.append(_row(config, PER_CLASS_TABLE, label, data, f" {c}", values))
    return rows


def _mean(metrics: Sequence[Mapping[str, float]], key: str) -> float:
    return float(np.mean([m[key] for m in metrics]))


# --------------------------------------------------------------------------------------------- C-MemAE
def _prefix(setting: ConditionalSetting) -> str:
    return f"{NAME}/conditional/{id_part(setting.data.column)}"


def single_cell_id(setting: ConditionalSetting, c: int, seed: int) -> str:
    """The MemAE of class ``c``: ``memae/conditional/<column>/MemAE/class-<c>/seed-<seed>``."""
    return f"{_prefix(setting)}/MemAE/class-{c}/seed-{seed}"


def group_cell_id(setting: ConditionalSetting, variant: str, group: Sequence[int], seed: int) -> str:
    """The C-MemAE or conditional AE of a group: ``memae/conditional/<column>/<cmemae|cae>/group-0-1/seed-<seed>``."""
    return f"{_prefix(setting)}/{variant}/group-{'-'.join(map(str, group))}/seed-{seed}"


def few_shot_cell_id(setting: ConditionalSetting, strategy: str, shots: int, new_class: int, seed: int) -> str:
    """``memae/conditional/<column>/few-shot/<strategy>/k-<shots>/class-<new class>/seed-<seed>``."""
    return f"{_prefix(setting)}/few-shot/{strategy}/k-{shots}/class-{new_class}/seed-{seed}"


def _source_cell_id(setting: ConditionalSetting, source: str, seed: int) -> str:
    """The cell of the pretrained model a few-shot strategy starts from (``single`` or ``conditional``)."""
    few = setting.few_shot
    if source == "single":
        return single_cell_id(setting, few.source_class, seed)
    return group_cell_id(setting, "cmemae", few.source_group, seed)


def _grouped_classes(setting: ConditionalSetting) -> list[int]:
    return sorted({c for group in setting.groups for c in group})


def _single_cell(setting: ConditionalSetting, c: int, seed: int, ctx: RunContext) -> dict[str, Any]:
    """One MemAE on class ``c``; the few-shot cells start from its ``model.pt``."""
    return _train_one_class(ctx, setting.data, "memae", setting.memory, setting.train, c, seed)


def _selection_modes(variant: str) -> dict[str, str | None]:
    """The memory selections each class of a group is evaluated with: all for C-MemAE, the known one for the CAE."""
    return SELF_SELECTION_MODES if variant == "cmemae" else {"known": None}


def _group_cell(
    setting: ConditionalSetting, variant: str, group: tuple[int, ...], seed: int, ctx: RunContext
) -> dict[str, Any]:
    """One C-MemAE (or conditional AE) on a group, each class evaluated with known and self-selected memory.

    Returns ``<mode>_<class>`` → metrics (``selection_accuracy`` too for self-selection) and ``training`` → steps
    run and skipped; the few-shot cells start from a C-MemAE's ``model.pt``.
    """
    train_data, test_data = _load(setting.data)
    seed_everything(seed)
    model = _build(setting.data.architecture, variant, setting.memory, ctx, conditions=len(group))
    modes = _selection_modes(variant)
    evaluations = [
        Evaluation(
            f"{mode}_{c}",
            create_evaluator(model, c, group, selection is None, selection or "sum"),
            _loader(_test_set(test_data, c, seed), EVAL_BATCH, ctx),
        )
        for c in group
        for mode, selection in modes.items()
    ]
    loader = _loader(training_set(train_data, group), setting.train.batch_size, ctx, seed, shuffle=True)
    entropy_weight = setting.memory.entropy_weight if variant == "cmemae" else 0.0
    metrics, source = _fit(ctx, model, loader, evaluations, setting.train, entropy_weight, seed, group=group)
    return {**metrics, **source}


def source_model(setting: ConditionalSetting, source: str, ctx: RunContext) -> Autoencoder:
    """The untrained model a few-shot strategy starts from: the source class's MemAE or the source group's
    C-MemAE (``source`` ``"single"`` or ``"conditional"``)."""
    if source == "single":
        return _build(setting.data.architecture, "memae", setting.memory, ctx)
    return _build(setting.data.architecture, "cmemae", setting.memory, ctx, len(setting.few_shot.source_group))


def _pretrained(setting: ConditionalSetting, source: str, seed: int, ctx: RunContext) -> Autoencoder:
    """The model a few-shot strategy starts from, loaded from the ``model.pt`` of its cell."""
    model = source_model(setting, source, ctx)
    return load_weights(model, ctx.folder_of(_source_cell_id(setting, source, seed)) / FINAL_MODEL)


def few_shot_model(setting: ConditionalSetting, name: str, source: Autoencoder, shots: torch.Tensor) -> Autoencoder:
    """The model a few-shot cell fine-tunes: strategy ``name`` on ``source`` and the normalised ``shots``; a memory
    with a new N gets its λ by the setting's ``threshold_on_resize``."""
    return STRATEGIES[name].apply(source, shots, setting.memory.threshold_on_resize)


def _few_shot_cell(
    setting: ConditionalSetting, name: str, shots: int, new_class: int, seed: int, ctx: RunContext
) -> dict[str, Any]:
    """Fine-tune the pretrained MemAE / C-MemAE on ``shots`` images of ``new_class`` with strategy ``name``."""
    strategy, few = STRATEGIES[name], setting.few_shot
    train_data, test_data = _load(setting.data)
    source = _pretrained(setting, strategy.source, seed, ctx)
    shot_set = training_set(train_data, [new_class], shots, np.random.default_rng([seed, new_class, shots]))
    images = normalisation(shot_set.images.shape[1])(shot_set.images.to(ctx.device))
    seed_everything(seed)
    model = few_shot_model(setting, name, source, images)
    evaluation = Evaluation(
        "test", create_evaluator(model, new_class), _loader(_test_set(test_data, new_class, seed), EVAL_BATCH, ctx)
    )
    loader = _loader(shot_set, few.train.batch_size, ctx, seed, shuffle=True) if strategy.trains else None
    entropy_weight = setting.memory.entropy_weight
    metrics, loaded = _fit(ctx, model, loader, [evaluation], few.train, entropy_weight, seed, freeze_batchnorm=True)
    return {**metrics["test"], **metrics[TRAINING], **loaded}


def conditional_data(config: MemAEConfig) -> list[DataNeed]:
    """The dataset of each setting, read by the setting's cells."""
    return [DatasetNeed(s.data.name, cells=(f"{_prefix(s)}/*",)) for s in config.conditional]


def conditional_cells(config: MemAEConfig) -> list[Cell]:
    """Per seed: a MemAE per grouped class, a C-MemAE and a conditional AE per group, every few-shot run."""
    found = []
    for setting in config.conditional:
        few = setting.few_shot
        for seed in config.seeds:
            found += [
                Cell(
                    single_cell_id(setting, c, seed),
                    functools.partial(_single_cell, setting, c, seed),
                    cost=one_class_cost(setting.data, setting.train, c),
                )
                for c in _grouped_classes(setting)
            ]
            found += [
                Cell(
                    group_cell_id(setting, v, g, seed),
                    functools.partial(_group_cell, setting, v, g, seed),
                    cost=group_cost(setting, g, len(_selection_modes(v))),
                )
                for g in setting.groups
                for v in GROUP_VARIANTS
            ]
            found += [
                Cell(
                    few_shot_cell_id(setting, name, shots, c, seed),
                    functools.partial(_few_shot_cell, setting, name, shots, c, seed),
                    needs=(_source_cell_id(setting, strategy.source, seed),),
                    cost=few_shot_cost(setting, strategy.trains, shots, c),
                )
                for name, strategy in STRATEGIES.items()
                for shots in few.shots
                for c in few.new_classes
            ]
    return found


CONDITIONAL_ROWS = {
    "cmemae_known": "C-MemAE, known condition",
    "cmemae_self_sum": "C-MemAE, self-selection (summed similarity)",
    "cmemae_self_max": "C-MemAE, self-selection (best slot)",
    "cae_known": "conditional AE, known condition",
}
"""``<variant>_<mode>`` → row label of the conditional table (after "MemAE, one model per class")."""
SELECTION_ROWS = {"self_sum": "summed similarity", "self_max": "best slot"}


def conditional_table(config: MemAEConfig, results: Mapping[str, Mapping[str, Any]]) -> list[ResultRow]:
    """The C-MemAE table (AUROC and self-selection accuracy, mean over the classes) and the few-shot table."""
    return [row for setting in config.conditional for row in _conditional_rows(config, setting, results)]


def _conditional_rows(
    config: MemAEConfig, setting: ConditionalSetting, results: Mapping[str, Mapping[str, Any]]
) -> list[ResultRow]:
    data, seeds = setting.data, config.seeds

    def group_mean(variant: str, mode: str, metric: str, seed: int) -> float:
        """The mean over every grouped class of ``metric`` of its ``<mode>_<class>`` evaluation."""
        per_class = [
            results[group_cell_id(setting, variant, group, seed)][f"{mode}_{c}"]
            for group in setting.groups
            for c in group
        ]
        return _mean(per_class, metric)

    single = [_mean([results[single_cell_id(setting, c, s)] for c in _grouped_classes(setting)], "AUROC")
              for s in seeds]  # fmt: skip
    rows = [_row(config, CONDITIONAL_TABLE, "MemAE, one model per class", data, " AUROC", single)]
    for key, label in CONDITIONAL_ROWS.items():
        variant, mode = key.split("_", 1)
        values = [group_mean(variant, mode, "AUROC", s) for s in seeds]
        rows.append(_row(config, CONDITIONAL_TABLE, label, data, " AUROC", values))
    for mode, label in SELECTION_ROWS.items():
        values = [group_mean("cmemae", mode, "selection_accuracy", s) for s in seeds]
        row = f"C-MemAE self-selection accuracy ({label})"
        rows.append(_row(config, CONDITIONAL_TABLE, row, data, " accuracy", values))
    for name, strategy in STRATEGIES.items():
        for shots in setting.few_shot.shots:
            per_seed = [[results[few_shot_cell_id(setting, name, shots, c, s)] for c in setting.few_shot.new_classes]
                        for s in seeds]  # fmt: skip
            values = [_mean(cells, "AUROC") for cells in per_seed]
            rows.append(_row(config, FEW_SHOT_TABLE, strategy.label, data, f" k={shots}", values))
    return rows


# --------------------------------------------------------------------------------------------- original files
def find_official(cell_id: str, root: Path) -> Path | None:
    """The official code's file of image-table cell ``cell_id`` under ``root``: in its :func:`original_folder`, the
    :data:`OFFICIAL_FILE` of the highest epoch (``..._final.pt`` on a tie). None for the conditional cells: the
    official code trains no C-MemAE and none of their flat networks."""
    if not cell_id.startswith(f"{NAME}/{IMAGE_TABLE}/"):
        return None
    folder = original_folder(root, cell_id)
    return last_numbered(path for path in folder.glob("*.pt") if OFFICIAL_FILE.fullmatch(path.name))


def load_official(path: Path, cell_id: str, config: MemAEConfig) -> Autoencoder:
    """Our autoencoder of image-table cell ``cell_id``'s setting with the weights of the official file ``path``.

    Raises:
        DataError: the file holds a MemAE and the cell's memory does not address by the dot product, as the
            official code's does (the loaded weights would give other numbers than the official model's).
    """
    index, setting = image_cell_setting(config, cell_id)
    model = load_original(path, setting)
    similarity = setting.memory.similarity
    if model.bottleneck is not None and similarity != "dot":
        raise DataError(
            path,
            f"the official MemAE addresses its memory by the dot product, cell {cell_id} by {similarity}: to "
            f"evaluate it as the official code does, add --set image_table.{index}.memory.similarity=dot",
        )
    return model


ORIGINAL_MODELS: tuple[OriginalModels, ...] = (
    OriginalModels(
        f"the official code's state dicts (image table only, dot-product memory): DIR/{IMAGE_TABLE}/<cell "
        "folder>/<setting>_epoch_<NNNN>[_final].pt of the highest epoch there",
        find_official,
        load_official,
    ),
)
"""Readers of the official code's trained models for ``--checkpoints``, tried after this suite's run folders."""


PAPER = Paper(
    NAME,
    CITATION,
    experiments=(
        Experiment(
            IMAGE_TABLE,
            "MemAE image table: AE / MemAE-nonSpar / MemAE, one-class AUROC (MNIST, CIFAR-10; demo: digits)",
            configure,
            image_cells,
            image_table,
            cpu_threads=attrgetter("cpu_threads"),
            data=image_data,
            original_models=ORIGINAL_MODELS,
        ),
        Experiment(
            "conditional",
            "C-MemAE: conditional vs per-class MemAE, self-selection accuracy, few-shot memory strategies",
            configure,
            conditional_cells,
            conditional_table,
            cpu_threads=attrgetter("cpu_threads"),
            data=conditional_data,
            original_models=ORIGINAL_MODELS,
        ),
    ),
)
