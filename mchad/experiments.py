"""The main table of MCHAD (``tab:results``) at the demo or paper scale, registered with ``main.py``.

Every (dataset, method, seed) is one Ignite training in ``<run>/<dataset>/<method>/seed-<s>/`` (tensorboard,
checkpoints, ``result.json``). The table aggregates like the original notebook (reference mchad.md §3.4): one row
per (seed, OOD set), in percent, mean and SEM (ddof 1) over all rows, accuracy repeated in each row. A second table
gives the AUROC per OOD set (mean and SEM over seeds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import CosineAnnealingScheduler
from torch.optim import Adam

from common.files import write_json_atomically
from common.handlers import latest_checkpoint, log_histogram, log_pr_curve, setup_handlers
from common.papers import Experiment, Paper, RunOptions, register_paper
from common.results import ResultRow, mean_and_sem
from common.run import resolve_device, save_run_config, seed_everything, torch_threads
from mchad import paper
from mchad.config import SETTINGS, DatasetConfig, MethodConfig, TrainConfig, with_epochs
from mchad.data import ImageCache, build_run_data
from mchad.engine import build_model, build_objective, collect_outputs, create_evaluator, create_trainer

PAPER = "mchad"
CITATION = "Kirchheim, Filax, Ortmeier: Multi-Class Hypersphere Anomaly Detection, ICPR 2022"
RESULT_FILE = "result.json"
COLUMN_KEYS = {  # the paper's column → key of common.metrics.ood_metrics (mchad.md §3.1–3.2)
    "AUROC": "AUROC",
    "AUPR-IN": "AUPR-OUT-trapz",  # the paper's AUPR-IN has OOD as positives (old pytorch-ood naming)
    "AUPR-OUT": "AUPR-IN-trapz",
    "FPR95": "FPR95TPR",
}
EMBEDDING_POINTS = 2000  # points written to tensorboard's projector


def slug(name: str) -> str:
    """A folder name for a dataset or method name ("G-MCHAD" → "g-mchad")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_dir_of(run_dir: Path, dataset: DatasetConfig, method: MethodConfig, seed: int) -> Path:
    """The folder of one training: ``<run>/<dataset>/<method>/seed-<seed>``."""
    return run_dir / slug(dataset.name) / slug(method.name) / f"seed-{seed}"


def train_and_evaluate(
    method: MethodConfig,
    dataset: DatasetConfig,
    train: TrainConfig,
    seed: int,
    folder: Path,
    options: RunOptions,
    cache: ImageCache | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``dataset`` with ``seed`` and return its final test metrics (percent).

    A finished training (``result.json`` present) is read back instead of re-run; with ``options.resume`` an
    unfinished one continues from its newest checkpoint. ``cache`` shares images between the runs of a table.

    Returns:
        ``{"accuracy": %, "scores": {score kind: {OOD set: {paper column: %}}}}``.
    """
    result_path = folder / RESULT_FILE
    if result_path.is_file():
        return json.loads(result_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    with torch_threads(train.cpu_threads if device.type == "cpu" else None):
        result = _train_and_evaluate(method, dataset, train, seed, folder, options, device, cache)
    write_json_atomically(result_path, result)
    return result


def _train_and_evaluate(
    method: MethodConfig,
    dataset: DatasetConfig,
    train: TrainConfig,
    seed: int,
    folder: Path,
    options: RunOptions,
    device: torch.device,
    cache: ImageCache | None,
) -> dict[str, Any]:
    seed_everything(seed)
    data = build_run_data(dataset, train, outliers=method.outliers, seed=seed, device=device, cache=cache)
    model = build_model(method, dataset, train).to(device)
    optimizer = Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    # One cosine decay from lr to 0, stepped every batch: the original's CosineAnnealingWarmRestarts with
    # T_0 = epochs × limit_train_batches (3920 on CIFAR-10, whose epochs have only 391 batches),
    # lr_k = lr·(1 + cos(πk/T_0))/2 at step k.
    period = max(dataset.epochs * (dataset.max_batches or len(data.train)), 2)
    scheduler = CosineAnnealingScheduler(optimizer, "lr", start_value=train.lr, end_value=0.0, cycle_size=period)
    trainer = create_trainer(model, build_objective(method, dataset.n_classes), optimizer, method)
    evaluator = create_evaluator(model, method, data.ood_names)
    outputs = collect_outputs(evaluator)
    handlers = setup_handlers(
        trainer,
        {"test": (evaluator, data.evaluation)},
        folder,
        {"model": model, "optimizer": optimizer},
        seed=seed,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        eval_every=train.eval_every,
        checkpoint_every_iterations=train.checkpoint_every_iterations,
        progress=options.progress,
        resume=latest_checkpoint(folder) if options.resume else None,
    )
    try:
        # A checkpoint of the finished run must not restart it (Ignite restarts an engine that is done).
        if trainer.state.iteration < dataset.epochs * len(data.train):
            trainer.run(data.train, max_epochs=dataset.epochs)
        if not outputs:  # resumed after the last evaluation: evaluate the final weights once
            evaluator.run(data.evaluation)
        log_test_extras(handlers.tb_logger, outputs, model, method, data.ood_names, dataset.epochs)
    finally:
        if handlers.tb_logger is not None:
            handlers.tb_logger.close()
    return final_result(evaluator.state.metrics, method)


def final_result(metrics: dict[str, Any], method: MethodConfig) -> dict[str, Any]:
    """The evaluator's metrics as ``{"accuracy": %, "scores": {kind: {set: {column: %}}}}``."""
    return {
        "accuracy": 100 * metrics["accuracy"],
        "scores": {
            kind: {
                name: {column: 100 * values[key] for column, key in COLUMN_KEYS.items()}
                for name, values in metrics[kind].items()
            }
            for kind in method.scores
        },
    }


def log_test_extras(
    tb_logger: Any,
    outputs: list[dict[str, Any]],
    model: torch.nn.Module,
    method: MethodConfig,
    ood_names: Sequence[str],
    step: int,
) -> None:
    """Score histograms and PR curves per test case, and the embeddings (with the centers) for the projector."""
    if tb_logger is None or not outputs:
        return
    labels = torch.cat([out["labels"] for out in outputs])
    known = labels >= 0
    for kind in method.scores:
        scores = torch.cat([out["scores"][kind] for out in outputs])
        log_histogram(tb_logger, f"scores/{kind}/ID test", scores[known], step)
        for k, name in enumerate(ood_names):
            ood = labels == -(k + 1)
            log_histogram(tb_logger, f"scores/{kind}/{name}", scores[ood], step)
            log_pr_curve(tb_logger, f"pr/{kind}/{name}", scores[known | ood], ood[known | ood], step)
    embeddings = torch.cat([out["embedding"] for out in outputs])
    chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:EMBEDDING_POINTS]
    tags = [f"ID {label}" if label >= 0 else ood_names[-label - 1] for label in labels[chosen].tolist()]
    points = embeddings[chosen]
    centers = getattr(model, "centers", None)
    if centers is not None:
        points = torch.cat([points, centers.centers.detach().cpu()])
        tags += [f"center {j}" for j in range(len(centers.centers))]
    tb_logger.writer.add_embedding(points.float(), metadata=tags, tag="test embedding", global_step=step)


def table_rows(
    dataset: DatasetConfig,
    method: MethodConfig,
    results: Sequence[dict[str, Any]],
    analogue: str,
    scale: str,
    seeds: tuple[int, ...],
) -> list[ResultRow]:
    """The main-table rows of one (dataset, method) and its per-OOD-set AUROC rows."""
    rows = []
    note = "" if analogue == dataset.name else f"paper value: {analogue} row (demo analogue)"
    for kind in method.scores:
        label = method.name if len(method.scores) == 1 else f"{method.name} ({kind})"
        per_row = [(result["accuracy"], cells) for result in results for cells in result["scores"][kind].values()]
        columns = {"Accuracy": [accuracy for accuracy, _ in per_row]}
        columns |= {column: [cells[column] for _, cells in per_row] for column in COLUMN_KEYS}
        for column, values in columns.items():
            mean, sem = mean_and_sem(values)
            value = paper.paper_value(analogue, method.name, column)
            rows.append(
                ResultRow(
                    PAPER, paper.TABLE_NAME, f"{dataset.name} {label}", column, mean, value, sem, seeds, scale, note
                )
            )
        for name, _ in dataset.ood_sets:
            mean, sem = mean_and_sem([result["scores"][kind][name]["AUROC"] for result in results])
            value = paper.paper_per_set_auroc(dataset.name, method.name, name)
            rows.append(
                ResultRow(
                    PAPER, paper.PER_SET_TABLE_NAME, f"{dataset.name} {label}", name, mean, value, sem, seeds, scale
                )
            )
    return rows


def run_main_table(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Train and evaluate every method of the table on every dataset of the scale, for every seed."""
    setting = SETTINGS[options.scale]
    if options.nproc_per_node not in (None, 1):
        raise ValueError("mchad trains in one process; --nproc-per-node is not supported (use one GPU per run)")
    seeds = options.seeds or setting.train.seeds
    save_run_config(run_dir, {"options": asdict(options), "setting": asdict(setting)})
    rows = []
    for base in setting.datasets:
        dataset = with_epochs(base, options.epochs)
        cache: ImageCache = {}  # this dataset's images, shared by its methods and seeds
        for method in setting.methods[dataset.name]:
            results = [
                train_and_evaluate(
                    method, dataset, setting.train, seed, run_dir_of(run_dir, dataset, method, seed), options, cache
                )
                for seed in seeds
            ]
            rows += table_rows(dataset, method, results, setting.paper_analogue[dataset.name], options.scale, seeds)
    return rows


register_paper(
    Paper(
        PAPER,
        CITATION,
        experiments=(
            Experiment(
                "main_table",
                run_main_table,
                "Table tab:results: accuracy, AUROC, AUPR-IN/OUT, FPR95 of MCHAD, G-MCHAD and the Center, CAC, II "
                "baselines (+ softmax at demo scale), and AUROC per OOD set",
            ),
        ),
    )
)
