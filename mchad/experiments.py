"""The main table of MCHAD (``tab:results``) as cells: one training per (dataset, method, seed).

Paper: Kirchheim, Filax, Ortmeier, "Multi-Class Hypersphere Anomaly Detection", ICPR 2022 (kkirchheim/mchad).

A cell ``mchad/main_table/<dataset>/<method>/seed-<s>`` trains one model with :func:`mchad.engine.fit` in its folder
(tensorboard, checkpoints) and returns its final test metrics; it needs no other cell. In a run with
``--checkpoints DIR`` it loads the model it trained from DIR instead and only tests it (:func:`mchad.engine.evaluate`,
:mod:`common.trained_models`), from a run of this suite or from the original code's file in
``DIR/main_table/<cell folder>`` (:func:`find_original`). The table aggregates like the
original notebook (reference mchad.md §3.4): one row per (seed, OOD set), in percent, mean and SEM (ddof 1) over all
rows, accuracy repeated in each row. A second table gives the AUROC per OOD set (mean and SEM over seeds).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from common.cells import Cell, Experiment, Paper, RunContext, id_part
from common.datasets.svhn import split_file
from common.preflight import DataNeed, DatasetNeed, FileNeed
from common.results import ResultRow, Spread, stand_in_note, summary_row
from common.trained_models import FINAL_MODEL, OriginalModels, last_numbered, load_trained, original_folder
from mchad import paper, pretrained
from mchad.config import (
    HELD_OUT_DIGITS,
    PAPER_OOD_SETS,
    PAPER_TRAIN,
    DatasetConfig,
    MainTableConfig,
    MethodConfig,
    configure,
)
from mchad.cost import cell_cost
from mchad.data import ImageCache
from mchad.engine import build_model, evaluate, fit
from mchad.models import CenterNet
from mchad.original_checkpoints import load_original

NAME = "mchad"
EXPERIMENT = "main_table"
CITATION = "Kirchheim, Filax, Ortmeier: Multi-Class Hypersphere Anomaly Detection, ICPR 2022"
COLUMN_KEYS = {  # the paper's column → key of common.metrics.ood_metrics (mchad.md §3.1–3.2)
    "AUROC": "AUROC",
    "AUPR-IN": "AUPR-OUT-trapz",  # the paper's AUPR-IN has OOD as positives (old pytorch-ood naming)
    "AUPR-OUT": "AUPR-IN-trapz",
    "FPR95": "FPR95TPR",
}
MAIN_SPREAD = Spread(statistic="SEM", ddof=1, over="seeds × OOD sets")  # the notebook's pandas sem over all rows
PER_SET_SPREAD = Spread(statistic="SEM", ddof=1, over="seeds")

LIGHTNING_LAST = "last.ckpt"
"""The original's ``ModelCheckpoint(save_last=True)`` file: the final epoch's weights, which its table was tested on."""

_images: dict[DatasetConfig, ImageCache] = {}  # the images of the latest dataset, shared by its cells in a process


def slug(name: str) -> str:
    """A cell-id part for a dataset or method name ("G-MCHAD" → "g-mchad", "Digits 0-5" → "digits-0-5")."""
    return id_part(name.lower())


def cell_id(dataset: DatasetConfig, method: MethodConfig, seed: int) -> str:
    """``mchad/main_table/<dataset>/<method>/seed-<seed>``."""
    return f"{NAME}/{EXPERIMENT}/{slug(dataset.name)}/{slug(method.name)}/seed-{seed}"


def image_cache(dataset: DatasetConfig) -> ImageCache:
    """This process's image cache for ``dataset`` (the images of any other dataset are let go)."""
    if dataset not in _images:
        _images.clear()
        _images[dataset] = {}
    return _images[dataset]


def train_cell(dataset: DatasetConfig, method: MethodConfig, seed: int, context: RunContext) -> dict[str, Any]:
    """One cell: train ``method`` on ``dataset`` with ``seed`` in the cell's folder; its test metrics in percent."""
    if context.settings.checkpoints is not None:
        return evaluate_cell(dataset, method, seed, context)
    metrics = fit(
        method,
        dataset,
        context.config.train,
        seed,
        context.folder,
        device=context.device,
        progress=context.progress,
        cache=image_cache(dataset),
    )
    return cell_values(metrics, method)


def evaluate_cell(dataset: DatasetConfig, method: MethodConfig, seed: int, context: RunContext) -> dict[str, Any]:
    """One cell of a run with ``--checkpoints``: the model it trained, loaded from there, tested as :func:`train_cell`
    tests it; the values say which file it was."""
    train = replace(context.config.train, pretrained=False)  # the trained weights replace the pretrained ones
    model = build_model(method, dataset, train).to(context.device)
    source = load_trained(model, context, ORIGINAL_MODELS)
    where = {"device": context.device, "progress": context.progress, "cache": image_cache(dataset)}
    metrics = evaluate(model, method, dataset, context.config.train, seed, context.folder, **where)
    return cell_values(metrics, method) | source


def cell_values(metrics: Mapping[str, Any], method: MethodConfig) -> dict[str, Any]:
    """The evaluator's metrics as ``{"accuracy": %, "scores": {kind: {OOD set: {paper column: %}}}}``, with the
    training's ``steps`` and ``skipped_steps``."""
    return {
        "steps": metrics["steps"],
        "skipped_steps": metrics["skipped_steps"],
        "accuracy": 100 * metrics["accuracy"],
        "scores": {
            kind: {
                name: {column: 100 * values[key] for column, key in COLUMN_KEYS.items()}
                for name, values in metrics[kind].items()
            }
            for kind in method.scores
        },
    }


def cells(config: MainTableConfig) -> list[Cell]:
    """Every (dataset, method, seed) of the table, dataset by dataset (the image cache is per dataset)."""
    return [
        Cell(
            cell_id(dataset, method, seed),
            partial(train_cell, dataset, method, seed),
            cost=cell_cost(dataset, method, config.train),
        )
        for dataset, method, seed in cell_parts(config)
    ]


def cell_parts(config: MainTableConfig) -> Iterator[tuple[DatasetConfig, MethodConfig, int]]:
    """(dataset, method, seed) of every cell, in the order of :func:`cells`."""
    for dataset in config.datasets:
        for method in config.methods[dataset.name]:
            for seed in config.seeds:
                yield dataset, method, seed


def dataset_and_method(config: MainTableConfig, wanted: str) -> tuple[DatasetConfig, MethodConfig]:
    """The dataset and method of the cell with id ``wanted``.

    Raises:
        KeyError: no cell of ``config`` has that id.
    """
    for dataset, method, seed in cell_parts(config):
        if cell_id(dataset, method, seed) == wanted:
            return dataset, method
    raise KeyError(f"no cell {wanted} in this configuration")


def data(config: MainTableConfig) -> list[DataNeed]:
    """The files the cells read: a dataset's cells its ID set (training and test split) and OOD sets, the
    G-variants also the outlier set, and every training the pretrained WRN-40-2 it starts from (if it does)."""
    needs: list[DataNeed] = []
    for dataset in config.datasets:
        prefix = f"{NAME}/{EXPERIMENT}/{slug(dataset.name)}"
        id_files = tuple(map(split_file, ("train", "test"))) if dataset.source == "svhn" else ()
        needs.append(DatasetNeed(dataset.source, id_files, (f"{prefix}/*",)))
        ood = [source for _, source in dataset.ood_sets if source != HELD_OUT_DIGITS]  # held out: the ID digits
        needs += [DatasetNeed(source, cells=(f"{prefix}/*",)) for source in ood]
        outliers = tuple(f"{prefix}/{slug(m.name)}/*" for m in config.methods[dataset.name] if m.outliers)
        if outliers:
            needs.append(DatasetNeed(config.train.outlier_source, cells=outliers))
    if config.train.pretrained:
        path = pretrained.pretrained_path()
        needs.append(FileNeed(path, "pretrained WRN-40-2", pretrained.how_to_get(path)))
    return needs


def table(config: MainTableConfig, results: Mapping[str, Mapping[str, Any]]) -> list[ResultRow]:
    """The main-table rows and the per-OOD-set AUROC rows of every (dataset, method)."""
    rows = []
    for dataset in config.datasets:
        for method in config.methods[dataset.name]:
            values = [results[cell_id(dataset, method, seed)] for seed in config.seeds]
            rows += method_rows(config, dataset, method, values)
    return rows


def method_rows(
    config: MainTableConfig, dataset: DatasetConfig, method: MethodConfig, results: list[Mapping[str, Any]]
) -> list[ResultRow]:
    """The rows of one (dataset, method) from the values of its cells, one per seed."""
    rows = []
    analogue, note = config.paper_analogue[dataset.name], demo_data(config, dataset)
    for kind in method.scores:
        label = method.name if len(method.scores) == 1 else f"{method.name} ({kind})"
        where = {"paper": NAME, "row": paper.row_name(dataset.name, label), "seeds": config.seeds}
        per_row = [(result["accuracy"], cells) for result in results for cells in result["scores"][kind].values()]
        columns = {"Accuracy": [accuracy for accuracy, _ in per_row]}
        columns |= {column: [cells[column] for _, cells in per_row] for column in COLUMN_KEYS}
        for column, values in columns.items():
            published = paper.published(paper.TABLE_NAME, paper.row_name(analogue, label), column)
            rows.append(
                summary_row(values, MAIN_SPREAD, published, table=paper.TABLE_NAME, column=column, note=note, **where)
            )
        for name, _ in dataset.ood_sets:
            aurocs = [result["scores"][kind][name]["AUROC"] for result in results]
            published = paper.published(paper.PER_SET_TABLE_NAME, where["row"], name)
            rows.append(
                summary_row(
                    aurocs, PER_SET_SPREAD, published, table=paper.PER_SET_TABLE_NAME, column=name, note=note, **where
                )
            )
    return rows


def demo_data(config: MainTableConfig, dataset: DatasetConfig) -> str:
    """Which data stood in for which in ``dataset``'s rows: the dataset for the one whose published rows are printed
    beside them, its OOD sets the paper has not for those it lacks, and the G-variants' training outliers; "" when
    the paper's data ran."""
    paper_sets = [name for name, _ in PAPER_OOD_SETS]
    extra = [name for name, _ in dataset.ood_sets if name not in paper_sets]
    missing = [name for name in paper_sets if name not in dict(dataset.ood_sets)]
    pairs = [(dataset.name, config.paper_analogue[dataset.name])]
    if extra and missing:
        pairs.append((" and ".join(extra), "/".join(missing)))
    if any(method.outliers for method in config.methods[dataset.name]):
        pairs.append((f"{config.train.outlier_source} outliers", f"{PAPER_TRAIN.outlier_source} outliers"))
    return stand_in_note(pairs)


# --------------------------------------------------------------------------------------------- original files
def find_original(wanted: str, root: Path) -> Path | None:
    """The original code's file of cell ``wanted`` under ``root``, in its :func:`original_folder`:
    :data:`LIGHTNING_LAST`, else the ``*.ckpt`` with the highest numbers in its name (``epoch=NN.ckpt``), else the
    ``*.pt`` (a pytorch-ood state dict, never our ``model.pt``) with the highest numbers."""
    folder = original_folder(root, wanted)
    if (folder / LIGHTNING_LAST).is_file():
        return folder / LIGHTNING_LAST
    checkpoints = [path for path in folder.glob("*.ckpt") if path.is_file()]
    state_dicts = [path for path in folder.glob("*.pt") if path.is_file() and path.name != FINAL_MODEL]
    return last_numbered(checkpoints) or last_numbered(state_dicts)


def load_original_model(path: Path, wanted: str, config: MainTableConfig) -> CenterNet:
    """Our model of cell ``wanted``'s dataset and method with the weights of the original's file ``path``."""
    return load_original(path, config.train, *dataset_and_method(config, wanted))


ORIGINAL_MODELS: tuple[OriginalModels, ...] = (
    OriginalModels(
        f"the original code's files: DIR/{EXPERIMENT}/<cell folder>/last.ckpt (Lightning), else the *.ckpt with the "
        "highest epoch there, else its *.pt (a pytorch-ood state dict; not model.pt)",
        find_original,
        load_original_model,
    ),
)
"""Readers of the original code's trained models for ``--checkpoints``, tried after this suite's run folders."""


PAPER = Paper(
    NAME,
    CITATION,
    experiments=(
        Experiment(
            EXPERIMENT,
            "Table tab:results: accuracy, AUROC, AUPR-IN/OUT, FPR95 of MCHAD, G-MCHAD and the Center, CAC, II "
            "baselines (+ softmax at demo scale), and AUROC per OOD set",
            configure,
            cells,
            table,
            cpu_threads=lambda config: config.train.cpu_threads,
            data_parallel=True,
            global_batches=lambda config: {
                "train.batch_size": config.train.batch_size,
                "train.outlier_batch_size": config.train.outlier_batch_size,
            },
            data=data,
            original_models=ORIGINAL_MODELS,
        ),
    ),
)
