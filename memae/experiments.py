"""The tables ``python main.py memae`` reproduces: the MemAE image table and the C-MemAE experiments.

- ``image_table``: AE, MemAE-nonSpar and MemAE under the one-class protocol (each class normal in turn, ~30 %
  anomalies from the other classes), AUROC averaged over the classes (Gong et al., Sec. 4.1).
- ``conditional``: C-MemAE (one memory per class of a group, known condition and self-selection) against one
  MemAE per class and the conditional AE, self-selection accuracy, and the few-shot memory strategies over k.

Each training has its own folder ``<run>/<column>/<row>/seed<s>/<task>/`` (tensorboard events, checkpoints);
with ``--resume <run>`` each continues from its newest checkpoint. AUROC and accuracies are printed in percent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.datasets import ImageSet, load
from common.loaders import TensorBatchLoader
from common.papers import Experiment, Paper, RunOptions, register_paper
from common.results import ResultRow
from common.run import resolve_device, save_run_config, seed_everything, torch_threads
from memae import paper
from memae.config import (
    SCALES,
    ConditionalSetting,
    DataConfig,
    ImageSetting,
    MemoryConfig,
    ScaleConfig,
    TrainConfig,
)
from memae.data import normalisation, one_class_test_set, training_set
from memae.engine import Evaluation, create_evaluator, fit
from memae.few_shot import STRATEGIES
from memae.models import ARCHITECTURES, Autoencoder, build_model

PAPER = "memae"
CITATION = (
    "Gong et al., Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for Unsupervised "
    "Anomaly Detection, ICCV 2019; and C-MemAE (Zamel), class-conditional memories"
)
EVAL_BATCH = 500  # C-MemAE's test_batch_size
EXTRA_METRICS = ("AUPR-IN", "AUPR-OUT", "FPR95TPR")
CONDITIONAL_TABLE = "C-MemAE: one memory per class of a group (AUROC %, mean over the classes)"
SELF_SELECTION_MODES: dict[str, str | None] = {"known": None, "self_sum": "sum", "self_max": "max"}
"""C-MemAE evaluations: known condition, and self-selection by summed (C-MemAE) or maximal slot similarity."""
FEW_SHOT_TABLE = "C-MemAE few-shot transfer to a new class (AUROC %, mean over the new classes)"


@dataclass(frozen=True)
class Context:
    """What every training of one experiment shares."""

    scale: ScaleConfig
    scale_name: str
    seeds: tuple[int, ...]
    device: torch.device
    epochs: int | None
    resume: bool
    progress: bool
    run_dir: Path

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """``train`` with the ``--epochs`` override applied."""
        if self.epochs is None:
            return train
        return replace(
            train,
            epochs=self.epochs,
            eval_every=min(train.eval_every, self.epochs),
            checkpoint_every=min(train.checkpoint_every, self.epochs),
        )


def _context(options: RunOptions, run_dir: Path) -> Context:
    if options.nproc_per_node not in (None, 1):
        raise ValueError("memae trains its many small models in one process: --nproc-per-node is not supported")
    scale = SCALES[options.scale]
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(run_dir, {"options": asdict(options), "scale": asdict(scale)})
    return Context(
        scale=scale,
        scale_name=options.scale,
        seeds=options.seeds or scale.seeds,
        device=resolve_device(options.device),
        epochs=options.epochs,
        resume=options.resume is not None,
        progress=options.progress,
        run_dir=run_dir,
    )


def _folder(*parts: object) -> str:
    """Nested folder ``part/part/...`` of one training, each part made safe for a file name."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(part)) for part in parts)


def _load(data: DataConfig) -> tuple[ImageSet, ImageSet]:
    return load(data.name, "train", **data.load_options), load(data.name, "test", **data.load_options)


def _loader(data: ImageSet, batch_size: int, ctx: Context, seed: int = 0, shuffle: bool = False) -> TensorBatchLoader:
    channels = data.images.shape[1]
    return TensorBatchLoader(
        data.images,
        data.labels,
        batch_size,
        shuffle=shuffle,
        transform=normalisation(channels),
        device=ctx.device,
        seed=seed,
    )


def _build(architecture: str, variant: str, memory: MemoryConfig, ctx: Context, conditions: int = 1) -> Autoencoder:
    model = build_model(
        architecture,
        variant,
        num_slots=memory.num_slots,
        shrink_threshold=memory.shrink_threshold,
        similarity=memory.similarity,
        num_conditions=conditions,
    )
    return model.to(ctx.device)


def _test_sets(test: ImageSet, classes: Sequence[int], seed: int) -> dict[int, ImageSet]:
    """One-class test set per class, the anomalies drawn with ``default_rng([seed, class])``."""
    return {c: one_class_test_set(test, c, np.random.default_rng([seed, c])) for c in classes}


def _train_one_class(
    ctx: Context,
    architecture: str,
    variant: str,
    memory: MemoryConfig,
    train: TrainConfig,
    train_set: ImageSet,
    test_set: ImageSet,
    normal_class: int,
    seed: int,
    folder: str,
) -> tuple[dict[str, Any], Autoencoder]:
    """Train one model on ``train_set`` (normal class only); return its last-epoch test metrics and the model."""
    seed_everything(seed)
    model = _build(architecture, variant, memory, ctx)
    train = ctx.train_config(train)
    evaluation = Evaluation("test", create_evaluator(model, normal_class), _loader(test_set, EVAL_BATCH, ctx))
    metrics = fit(
        model,
        _loader(train_set, train.batch_size, ctx, seed, shuffle=True),
        [evaluation],
        train,
        memory.entropy_weight if variant != "ae" else 0.0,
        ctx.run_dir / folder,
        seed=seed,
        resume=ctx.resume,
        progress=ctx.progress,
    )
    return metrics["test"], model


def _percent_row(
    ctx: Context, table: str, row: str, column: str, per_seed: Sequence[float], paper_value: float | None, note: str
) -> ResultRow:
    """A table cell in percent: mean over seeds, spread = standard deviation over seeds (None for one seed)."""
    values = 100.0 * np.asarray(per_seed, dtype=np.float64)
    return ResultRow(
        paper=PAPER,
        table=table,
        row=row,
        column=column,
        ours=float(values.mean()),
        paper_value=None if paper_value is None else 100.0 * paper_value,
        spread=float(values.std(ddof=1)) if len(values) > 1 else None,
        seeds=ctx.seeds,
        scale=ctx.scale_name,
        note=note,
    )


def _data_note(data: DataConfig) -> str:
    options = ", ".join(f"{key}={value}" for key, value in data.options)
    return f"{data.name}{f' ({options})' if options else ''}, {ARCHITECTURES[data.architecture].input_shape} input"


# --------------------------------------------------------------------------------------------- image table
def image_table(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """MemAE's image table: AE, MemAE-nonSpar, MemAE; per-class one-class AUROC averaged over the classes."""
    ctx = _context(options, run_dir)
    with torch_threads(ctx.scale.cpu_threads if ctx.device.type == "cpu" else None):
        return [row for setting in ctx.scale.image_table for row in _image_setting(ctx, setting)]


def _image_setting(ctx: Context, setting: ImageSetting) -> list[ResultRow]:
    """One column of the image table: every variant, seed and normal class."""
    train_data, test_data = _load(setting.data)
    variants = (
        ("AE", "ae", setting.memory),
        ("MemAE-nonSpar", "memae", setting.memory.without_sparsity()),
        ("MemAE", "memae", setting.memory),
    )
    rows: list[ResultRow] = []
    for label, variant, memory in variants:
        per_seed: list[list[Mapping[str, Any]]] = []
        for seed in ctx.seeds:
            tests = _test_sets(test_data, setting.data.classes, seed)
            per_seed.append(
                [
                    _train_one_class(
                        ctx,
                        setting.data.architecture,
                        variant,
                        memory,
                        setting.train,
                        training_set(train_data, [c]),
                        tests[c],
                        c,
                        seed,
                        _folder(setting.data.column, label, f"seed{seed}", f"class{c}"),
                    )[0]
                    for c in setting.data.classes
                ]
            )
        rows += _image_rows(ctx, setting.data, label, per_seed)
    return rows


def _image_rows(ctx: Context, data: DataConfig, label: str, per_seed: list[list[Mapping[str, Any]]]) -> list[ResultRow]:
    note = _data_note(data)
    column = data.column
    rows = [
        _percent_row(
            ctx,
            paper.IMAGE_TABLE,
            label,
            column,
            [np.mean([m["AUROC"] for m in seed]) for seed in per_seed],
            paper.image_auroc(label, column),
            note,
        )
    ]
    for key in EXTRA_METRICS:
        values = [np.mean([m[key] for m in seed]) for seed in per_seed]
        rows.append(_percent_row(ctx, "Image table: other metrics (%)", label, f"{column} {key}", values, None, note))
    for index, c in enumerate(data.classes):
        values = [seed[index]["AUROC"] for seed in per_seed]
        rows.append(_percent_row(ctx, "Image table: AUROC (%) per class", label, f"{column} {c}", values, None, note))
    return rows


# --------------------------------------------------------------------------------------------- C-MemAE
@dataclass
class ConditionalResults:
    """Per seed: AUROC per class of each model kind, selection accuracies, few-shot AUROCs, pretrained models."""

    auroc: dict[str, dict[int, float]]
    selection: dict[str, list[float]]
    few_shot: dict[tuple[str, int], list[float]]
    single_models: dict[int, Autoencoder]
    conditional_models: dict[tuple[int, ...], Autoencoder]


def conditional(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """C-MemAE: conditional vs per-class MemAE, self-selection accuracy, few-shot strategies over k shots."""
    ctx = _context(options, run_dir)
    rows: list[ResultRow] = []
    with torch_threads(ctx.scale.cpu_threads if ctx.device.type == "cpu" else None):
        for setting in ctx.scale.conditional:
            train_data, test_data = _load(setting.data)
            runs = [_conditional_seed(ctx, setting, train_data, test_data, seed) for seed in ctx.seeds]
            rows += _conditional_rows(ctx, setting, runs)
    return rows


def _conditional_seed(
    ctx: Context, setting: ConditionalSetting, train_data: ImageSet, test_data: ImageSet, seed: int
) -> ConditionalResults:
    """One seed of the C-MemAE table: per-class MemAEs, a C-MemAE and a conditional AE per group, few-shot runs."""
    classes = sorted({c for group in setting.groups for c in group} | set(setting.few_shot.new_classes))
    tests = _test_sets(test_data, classes, seed)
    results = ConditionalResults({}, {}, {}, {}, {})
    arch, column = setting.data.architecture, setting.data.column
    single = results.auroc.setdefault("single", {})
    for c in sorted({c for group in setting.groups for c in group}):
        metrics, model = _train_one_class(
            ctx,
            arch,
            "memae",
            setting.memory,
            setting.train,
            training_set(train_data, [c]),
            tests[c],
            c,
            seed,
            _folder(column, "MemAE", f"seed{seed}", f"class{c}"),
        )
        single[c] = metrics["AUROC"]
        results.single_models[c] = model
    for group in setting.groups:
        _train_group(ctx, setting, "cmemae", group, train_data, tests, seed, results)
        _train_group(ctx, setting, "cae", group, train_data, tests, seed, results)
    _few_shot(ctx, setting, train_data, tests, seed, results)
    return results


def _train_group(
    ctx: Context,
    setting: ConditionalSetting,
    variant: str,
    group: tuple[int, ...],
    train_data: ImageSet,
    tests: Mapping[int, ImageSet],
    seed: int,
    results: ConditionalResults,
) -> None:
    """Train one C-MemAE (or conditional AE) on a group; evaluate each class with known and self-selected memory."""
    seed_everything(seed)
    model = _build(setting.data.architecture, variant, setting.memory, ctx, conditions=len(group))
    modes = SELF_SELECTION_MODES if variant == "cmemae" else {"known": None}
    evaluations = [
        Evaluation(
            f"{mode}_{c}",
            create_evaluator(model, c, group, selection is None, selection or "sum"),
            _loader(tests[c], EVAL_BATCH, ctx),
        )
        for c in group
        for mode, selection in modes.items()
    ]
    train = ctx.train_config(setting.train)
    metrics = fit(
        model,
        _loader(training_set(train_data, group), train.batch_size, ctx, seed, shuffle=True),
        evaluations,
        train,
        setting.memory.entropy_weight if variant == "cmemae" else 0.0,
        ctx.run_dir / _folder(setting.data.column, variant, f"seed{seed}", "group" + "-".join(map(str, group))),
        seed=seed,
        group=group,
        resume=ctx.resume,
        progress=ctx.progress,
    )
    for c in group:
        for mode, selection in modes.items():
            results.auroc.setdefault(f"{variant}_{mode}", {})[c] = metrics[f"{mode}_{c}"]["AUROC"]
            if selection is not None:
                results.selection.setdefault(mode, []).append(metrics[f"{mode}_{c}"]["selection_accuracy"])
    if variant == "cmemae":
        results.conditional_models[group] = model


def _few_shot(
    ctx: Context,
    setting: ConditionalSetting,
    train_data: ImageSet,
    tests: Mapping[int, ImageSet],
    seed: int,
    results: ConditionalResults,
) -> None:
    """Fine-tune the pretrained MemAE / C-MemAE on k shots of each new class with every strategy."""
    few = setting.few_shot
    sources = {
        "single": results.single_models[few.source_class],
        "conditional": results.conditional_models[few.source_group],
    }
    train = ctx.train_config(few.train)
    channels = train_data.images.shape[1]
    for new_class in few.new_classes:
        for shots in few.shots:
            shot_set = training_set(train_data, [new_class], shots, np.random.default_rng([seed, new_class, shots]))
            images = normalisation(channels)(shot_set.images.to(ctx.device))
            for name, strategy in STRATEGIES.items():
                seed_everything(seed)
                model = strategy.apply(sources[strategy.source], images)
                evaluation = Evaluation(
                    "test", create_evaluator(model, new_class), _loader(tests[new_class], EVAL_BATCH, ctx)
                )
                metrics = fit(
                    model,
                    _loader(shot_set, train.batch_size, ctx, seed, shuffle=True) if strategy.trains else None,
                    [evaluation],
                    train,
                    setting.memory.entropy_weight,
                    ctx.run_dir
                    / _folder(setting.data.column, "few-shot", name, f"seed{seed}", f"k{shots}", f"class{new_class}"),
                    seed=seed,
                    resume=ctx.resume,
                    progress=ctx.progress,
                    freeze_batchnorm=True,
                )
                results.few_shot.setdefault((name, shots), []).append(metrics["test"]["AUROC"])


def _conditional_rows(ctx: Context, setting: ConditionalSetting, runs: Sequence[ConditionalResults]) -> list[ResultRow]:
    column, note = setting.data.column, _data_note(setting.data)
    labels = {
        "single": "MemAE, one model per class",
        "cmemae_known": "C-MemAE, known condition",
        "cmemae_self_sum": "C-MemAE, self-selection (summed similarity)",
        "cmemae_self_max": "C-MemAE, self-selection (best slot)",
        "cae_known": "conditional AE, known condition",
    }
    rows = [
        _percent_row(
            ctx,
            CONDITIONAL_TABLE,
            label,
            f"{column} AUROC",
            [np.mean(list(r.auroc[key].values())) for r in runs],
            None,
            note,
        )
        for key, label in labels.items()
    ]
    for mode, label in (("self_sum", "summed similarity"), ("self_max", "best slot")):
        rows.append(
            _percent_row(
                ctx,
                CONDITIONAL_TABLE,
                f"C-MemAE self-selection accuracy ({label})",
                f"{column} accuracy",
                [np.mean(r.selection[mode]) for r in runs],
                None,
                note,
            )
        )
    for name, strategy in STRATEGIES.items():
        for shots in setting.few_shot.shots:
            values = [np.mean(r.few_shot[(name, shots)]) for r in runs]
            rows.append(_percent_row(ctx, FEW_SHOT_TABLE, strategy.label, f"{column} k={shots}", values, None, note))
    return rows


register_paper(
    Paper(
        PAPER,
        CITATION,
        experiments=(
            Experiment(
                "image_table",
                image_table,
                "MemAE image table: AE / MemAE-nonSpar / MemAE, one-class AUROC (MNIST, CIFAR-10; demo: digits)",
            ),
            Experiment(
                "conditional",
                conditional,
                "C-MemAE: conditional vs per-class MemAE, self-selection accuracy, few-shot memory strategies",
            ),
        ),
    )
)
