"""The InvGlow experiments ``main.py`` runs (Schirrmeister et al., NeurIPS 2020).

``tables``: pretrain Glow on (general) Tiny images, finetune copies per in-distribution set without an outlier
loss, with the paper's outlier loss, with the margin loss, and as the supervised class-conditional model, and
score every OOD set with the raw likelihood, the likelihood ratio to the Tiny model, the final-scale contribution,
and Serra et al.'s PNG input complexity. Each training stage writes tensorboard logs and checkpoints into its own
sub-folder of the run (``pretrain-tiny/seed<s>``, ``finetune-<set>[-<variant>]/seed<s>``); ``--resume RUN``
continues every stage from its newest checkpoint and reuses finished stages.

``local_vs_semantic`` (:mod:`invglow.local_semantic`) trains the full, local (patch) and dense Glows from scratch
with the same stages.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine

from common.datasets import ImageSet
from common.handlers import SKIPPED_STEPS, latest_checkpoint, setup_handlers
from common.loaders import PairedLoader, TensorBatchLoader
from common.papers import Experiment, Paper, RunOptions, register_paper
from common.results import ResultRow
from common.run import resolve_device, save_run_config, seed_everything, torch_threads
from invglow import paper
from invglow.config import InvGlowConfig, TrainConfig, get_config, grey_config
from invglow.data import image_set, tiny_images
from invglow.engine import (
    OutlierLossConfig,
    attach_sample_logging,
    attach_score_histograms,
    create_evaluator,
    create_trainer,
    eval_transform,
    train_transform,
)
from invglow.models import ClassConditionalGlow, Glow, PatchGlow, initialize_actnorms
from invglow.scores import ScoreKind, auroc_percent, png_bits_per_dim, serra_scores

PAPER_NAME = "invglow"
CITATION = (
    "Schirrmeister, Zhou, Ball, Zhang: Understanding anomaly detection with deep invertible networks through "
    "hierarchies of distributions and features, NeurIPS 2020"
)
FINAL_MODEL = "model.pt"
DEMO_STAND_INS = "demo stand-ins: shapes ~ CIFAR-10, digits-rgb ~ SVHN"
DEMO_THREADS = 1
"""Intra-op threads at the demo scale: its small convolutions gain nothing from more threads and slow down ~8× when
the cores are shared (measured 0.07 s vs 0.55 s per step on 2 busy cores)."""


@dataclass(frozen=True)
class EvalSets:
    """Images (uint8) of the in-distribution test set (id 0) and the OOD sets (ids 1, ...), concatenated."""

    names: tuple[str, ...]
    images: torch.Tensor
    set_ids: torch.Tensor

    def loader(self, batch_size: int, device: torch.device) -> TensorBatchLoader:
        """Batches in index order (so collected likelihoods align with ``images``), bin-centred."""
        return TensorBatchLoader(self.images, self.set_ids, batch_size, transform=eval_transform(), device=device)


def build_model(config: InvGlowConfig) -> Glow:
    """The Glow of ``config``."""
    glow = config.glow
    shape = (glow.channels, glow.image_size, glow.image_size)
    return Glow(shape, glow.n_scales, glow.steps, glow.hidden, glow.coupling, glow.lu, glow.dense)


def eval_sets(in_name: str, in_images: torch.Tensor, ood: dict[str, torch.Tensor]) -> EvalSets:
    """Concatenate ``in_images`` (id 0) with every OOD set except ``in_name`` itself."""
    others = {name: images for name, images in ood.items() if name != in_name}
    names = (in_name, *others)
    parts = [in_images, *others.values()]
    ids = torch.cat([torch.full((len(part),), index, dtype=torch.int64) for index, part in enumerate(parts)])
    return EvalSets(names, torch.cat(parts), ids)


@dataclass(frozen=True)
class Stage:
    """One training stage: where it writes, what it trains on and how it is evaluated."""

    folder: Path
    train: TrainConfig
    epochs: int
    seed: int
    flip: bool
    evaluation: EvalSets


def train_stage(
    stage: Stage,
    model: Glow | ClassConditionalGlow | PatchGlow,
    images: ImageSet,
    options: RunOptions,
    device: torch.device,
    *,
    base_model: Glow | None = None,
    outlier: OutlierLossConfig | None = None,
    outlier_images: torch.Tensor | None = None,
) -> Engine:
    """Train ``model`` for one stage (resuming from the stage's newest checkpoint) and return its final evaluator.

    A model without ``base_model`` is trained from scratch: its ActNorms are initialised from the first
    ``init_batches`` training batches. Finetuned models start from the (initialised) Tiny model.
    """
    stage.folder.mkdir(parents=True, exist_ok=True)
    config = stage.train
    if options.resume is not None and (stage.folder / FINAL_MODEL).is_file():
        model.load_state_dict(torch.load(stage.folder / FINAL_MODEL, map_location=device, weights_only=True))
        return _evaluate(model, stage, base_model, device)
    seed_everything(stage.seed)
    loader = _train_loader(images, config, stage, device)
    if base_model is None:
        batches = [loader.batch_at(0, i)[0] for i in range(min(config.init_batches, len(loader)))]
        initialize_actnorms(model, torch.cat(batches))
    if outlier is not None:
        outlier_set = ImageSet(outlier_images, torch.full((len(outlier_images),), -1))
        loader = PairedLoader(loader, _train_loader(outlier_set, config, replace(stage, seed=stage.seed + 1), device))
    optimizer = torch.optim.Adamax(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    trainer = create_trainer(
        model, optimizer, base_model=base_model, outlier=outlier, non_finite_examples=config.non_finite_examples
    )
    evaluator = create_evaluator(model, stage.evaluation.names, base_model)
    resume = latest_checkpoint(stage.folder) if options.resume is not None else None
    eval_loader = stage.evaluation.loader(config.eval_batch_size, device)
    handlers = setup_handlers(
        trainer,
        {"eval": (evaluator, eval_loader)},
        stage.folder,
        {"model": model, "optimizer": optimizer},
        seed=stage.seed,
        optimizer=optimizer,
        progress=None if options.progress else False,  # None: on unless OOD_REPRO_PROGRESS=0
        resume=resume,
    )
    attach_score_histograms(evaluator, handlers.tb_logger, trainer, stage.evaluation.names, "eval")
    attach_sample_logging(trainer, model.glow if isinstance(model, ClassConditionalGlow) else model, handlers.tb_logger)
    trainer.run(loader, max_epochs=stage.epochs)
    if getattr(evaluator.state, "likelihoods", None) is None:
        evaluator.run(eval_loader)
    evaluator.state.metrics["skipped_steps"] = float(getattr(trainer.state, SKIPPED_STEPS))
    if handlers.tb_logger is not None:
        handlers.tb_logger.close()
    partial = stage.folder / f"{FINAL_MODEL}.partial"  # --resume takes a stage with FINAL_MODEL as finished
    torch.save(model.state_dict(), partial)
    os.replace(partial, stage.folder / FINAL_MODEL)
    return evaluator


def _train_loader(images: ImageSet, config: TrainConfig, stage: Stage, device: torch.device) -> TensorBatchLoader:
    # The global generator is reseeded every epoch and checkpointed mid-epoch (common.run.make_reproducible), so
    # augmentation and dequantization noise continue exactly after a resume.
    transform = train_transform(torch.default_generator, config.translate_pixels, stage.flip)
    return TensorBatchLoader(
        images.images, images.labels, config.batch_size, shuffle=True, drop_last=True, transform=transform,
        device=device, seed=stage.seed,
    )  # fmt: skip


def _evaluate(
    model: Glow | ClassConditionalGlow | PatchGlow, stage: Stage, base_model: Glow | None, device: torch.device
) -> Engine:
    evaluator = create_evaluator(model, stage.evaluation.names, base_model)
    evaluator.run(stage.evaluation.loader(stage.train.eval_batch_size, device))
    return evaluator


def stage_epochs(options: RunOptions, train: TrainConfig) -> int:
    """Epochs of a stage: ``--epochs`` when given, else the stage's configured number."""
    return options.epochs if options.epochs is not None else train.epochs


def ood_test_sets(config: InvGlowConfig, scale: str, seed: int) -> dict[str, torch.Tensor]:
    """The test images (uint8) of every OOD set of ``config``, by name."""
    return {name: image_set(name, "test", config, scale, seed).images for name in config.data.ood}


def in_distribution_test(
    in_name: str, ood: dict[str, torch.Tensor], config: InvGlowConfig, scale: str, seed: int
) -> torch.Tensor:
    """The test images of ``in_name``: taken from ``ood`` when it is also an OOD set, loaded otherwise."""
    return ood[in_name] if in_name in ood else image_set(in_name, "test", config, scale, seed).images


@dataclass(frozen=True)
class GroupData:
    """The image sets one group of tables trains and evaluates on (uint8), by set name."""

    train: dict[str, ImageSet]
    tests: dict[str, torch.Tensor]
    ood: dict[str, torch.Tensor]


def load_group_data(config: InvGlowConfig, scale: str, seed: int) -> GroupData:
    """Every in-distribution training and test set and every OOD test set of ``config``.

    Experiments read them before training anything, so that a missing file stops a run at once rather than after
    days of pretraining.
    """
    ood = ood_test_sets(config, scale, seed)
    names = config.data.in_distribution
    return GroupData(
        train={name: image_set(name, "train", config, scale, seed) for name in names},
        tests={name: in_distribution_test(name, ood, config, scale, seed) for name in names},
        ood=ood,
    )


def pretrain_tiny(
    config: InvGlowConfig,
    options: RunOptions,
    run_dir: Path,
    seed: int,
    device: torch.device,
    prefix: str = "",
    ood: dict[str, torch.Tensor] | None = None,
) -> tuple[Glow, torch.Tensor, dict[str, torch.Tensor]]:
    """Train the general (Tiny) Glow into ``pretrain-tiny<prefix>/seed<s>``, evaluated on the ``ood`` test sets
    (read from ``config`` if None); returns it, the Tiny training images and the OOD test images by set."""
    tiny_train, tiny_test = tiny_images(config, options.scale, run_dir, seed)
    ood = ood_test_sets(config, options.scale, seed) if ood is None else ood
    seed_everything(seed)  # the 1×1 convolutions' random rotations and the coupling nets' weights
    tiny_model = build_model(config).to(device)
    stage = Stage(
        run_dir / f"pretrain-tiny{prefix}" / f"seed{seed}", config.pretrain, stage_epochs(options, config.pretrain),
        seed, True, eval_sets("tiny", tiny_test, ood),
    )  # fmt: skip
    train_stage(stage, tiny_model, ImageSet(tiny_train, torch.full((len(tiny_train),), -1)), options, device)
    return tiny_model, tiny_train, ood


def run_tables_seed(
    config: InvGlowConfig, options: RunOptions, run_dir: Path, seed: int
) -> dict[tuple[str, str, str], float]:
    """One seed of every table: {(table, row, column): value}."""
    device = resolve_device(options.device)
    groups = [(config, "", tuple(_VARIANTS), _CELLS)]
    if config.grey is not None:
        groups.append((grey_config(config), "-grey", ("plain", "outlier-loss"), _GREY_CELLS))
    data = [load_group_data(group[0], options.scale, seed) for group in groups]  # before any training
    values: dict[tuple[str, str, str], float] = {}
    for (group_config, prefix, variants, cells), group_data in zip(groups, data, strict=True):
        values.update(_run_group(group_config, group_data, options, run_dir, seed, device, prefix, variants, cells))
    return values


def _run_group(
    config: InvGlowConfig,
    data: GroupData,
    options: RunOptions,
    run_dir: Path,
    seed: int,
    device: torch.device,
    prefix: str,
    variants: tuple[str, ...],
    cells: tuple[tuple[str, str, str, ScoreKind], ...],
) -> dict[tuple[str, str, str], float]:
    """Pretrain a Tiny model, finetune ``variants`` per in-distribution set, read ``cells`` (and Serra's for RGB)."""
    tiny_model, tiny_train, ood = pretrain_tiny(config, options, run_dir, seed, device, prefix, data.ood)
    base_model = copy.deepcopy(tiny_model).requires_grad_(False)
    outlier = OutlierLossConfig("class", config.finetune.outlier_weight, config.finetune.outlier_temperature)
    values: dict[tuple[str, str, str], float] = {}
    in_distribution = config.data.in_distribution
    for in_name in in_distribution:
        stage = Stage(
            run_dir / f"finetune{prefix}-{in_name}" / f"seed{seed}", config.finetune,
            stage_epochs(options, config.finetune), seed, in_name not in config.data.no_flip,
            eval_sets(in_name, data.tests[in_name], ood),
        )  # fmt: skip
        chosen = {name: _VARIANTS[name] for name in variants}
        engines = _finetune_variants(
            stage, data.train[in_name], tiny_model, base_model, tiny_train, outlier, chosen, options
        )
        values.update(_table_cells(in_name, stage.evaluation.names, engines, cells))
        if config.glow.channels == 3 and in_name == in_distribution[0]:
            values.update(_serra_cells(stage.evaluation, engines["plain"], ood_name=in_distribution[-1]))
    return values


_CELLS: tuple[tuple[str, str, str, ScoreKind], ...] = (  # (table, row, finetuned variant, score kind)
    (paper.UNSUPERVISED_TABLE, paper.RAW, "plain", "raw"),
    (paper.UNSUPERVISED_TABLE, paper.RATIO, "plain", "ratio"),
    (paper.UNSUPERVISED_TABLE, paper.RATIO_OUTLIER_LOSS, "outlier-loss", "ratio"),
    (paper.UNSUPERVISED_TABLE, paper.FINAL_SCALE, "plain", "final_scale"),
    (paper.UNSUPERVISED_TABLE, paper.MARGIN_LOSS, "margin-loss", "raw"),
    (paper.SUPERVISED_TABLE, paper.SUPERVISED_RATIO, "supervised", "ratio"),
)


_VARIANTS: dict[str, str] = {  # finetuned variant → its outlier loss ("none", "class" or "margin")
    "plain": "none",
    "outlier-loss": "class",
    "margin-loss": "margin",
    "supervised": "class",  # class-conditional model
}


def _finetune_variants(
    stage: Stage,
    train_set: ImageSet,
    tiny_model: Glow,
    base_model: Glow,
    tiny_train: torch.Tensor,
    outlier: OutlierLossConfig,
    variants: dict[str, str],
    options: RunOptions,
) -> dict[str, Engine]:
    """Finetune one copy of the Tiny model per variant (``_VARIANTS``); returns each one's final evaluator."""
    device = next(tiny_model.parameters()).device
    losses = {"none": None, "class": outlier, "margin": OutlierLossConfig("margin")}
    engines = {}
    for variant, loss in variants.items():
        model: Glow | ClassConditionalGlow = copy.deepcopy(tiny_model)
        if variant == "supervised":
            model = ClassConditionalGlow(model, int(train_set.labels.max()) + 1).to(device)
        name = stage.folder.parent.name + ("" if variant == "plain" else f"-{variant}")
        engines[variant] = train_stage(
            replace(stage, folder=stage.folder.parent.parent / name / stage.folder.name), model, train_set,
            options, device, base_model=base_model, outlier=losses[loss], outlier_images=tiny_train,
        )  # fmt: skip
    return engines


_GREY_CELLS: tuple[tuple[str, str, str, ScoreKind], ...] = (
    (paper.GREY_TABLE, paper.RAW, "plain", "raw"),
    (paper.GREY_TABLE, paper.RATIO, "plain", "ratio"),
    (paper.GREY_TABLE, paper.RATIO_OUTLIER_LOSS, "outlier-loss", "ratio"),
    (paper.GREY_TABLE, paper.FINAL_SCALE, "plain", "final_scale"),
)


def _table_cells(
    in_name: str,
    names: tuple[str, ...],
    engines: dict[str, Engine],
    cells: tuple[tuple[str, str, str, ScoreKind], ...],
) -> dict[tuple[str, str, str], float]:
    values = {}
    for ood_name in names[1:]:
        for table, row, variant, kind in cells:
            values[(table, row, f"{in_name} → {ood_name}")] = engines[variant].state.metrics[f"AUROC-{kind}/{ood_name}"]
    return values


def _serra_cells(evaluation: EvalSets, plain: Engine, ood_name: str) -> dict[tuple[str, str, str], float]:
    """S-score and PNG-only AUROCs of in-distribution (id 0) vs ``ood_name`` with the finetuned model."""
    fine, _, set_ids = plain.state.likelihoods
    ood_id = evaluation.names.index(ood_name)
    chosen = (set_ids == 0) | (set_ids == ood_id)
    s_scores = serra_scores(fine[chosen], evaluation.images[chosen]).values
    png = png_bits_per_dim(evaluation.images[chosen])
    is_ood = (set_ids[chosen] == ood_id).numpy()
    cells = {}
    for row, scores in ((paper.SERRA_S, s_scores), (paper.SERRA_PNG, png)):
        auroc = auroc_percent(scores[~is_ood], scores[is_ood])["AUROC"]
        for column in (paper.ORIGINAL_CODE, paper.SERRA_PAPER):
            cells[(paper.SERRA_TABLE, row, column)] = auroc
    return cells


def result_rows(
    values: list[dict[tuple[str, str, str], float]],
    seeds: tuple[int, ...],
    scale: str,
    published: Callable[[str, str, str], tuple[float | None, str]],
) -> list[ResultRow]:
    """Rows of the cells ``{(table, row, column): value}`` of every seed: the mean over the seeds, their standard
    deviation (several seeds only) and ``published(table, row, column)``: (the paper's value or None, a note)."""
    rows = []
    for key in values[0]:
        samples = np.array([seed_values[key] for seed_values in values])
        published_value, note = published(*key)
        rows.append(
            ResultRow(
                PAPER_NAME, *key, float(samples.mean()), published_value,
                float(samples.std()) if len(samples) > 1 else None, seeds, scale, note,
            )
        )  # fmt: skip
    return rows


def _tables_published(scale: str) -> Callable[[str, str, str], tuple[float | None, str]]:
    def published(table: str, row: str, column: str) -> tuple[float | None, str]:
        if table == paper.SERRA_TABLE:
            serra = paper.SERRA_VALUES[(row, column)]
            return serra.value, serra.source
        in_name, ood_name = column.split(" → ")
        return paper.table_value(table, row, in_name, ood_name).value, "" if scale == "paper" else DEMO_STAND_INS

    return published


SeedFunction = Callable[[InvGlowConfig, RunOptions, Path, int], dict[tuple[str, str, str], float]]


def run_every_seed(
    options: RunOptions, run_dir: Path, run_seed: SeedFunction
) -> tuple[InvGlowConfig, tuple[int, ...], list[dict[tuple[str, str, str], float]]]:
    """Save the run's configuration, then ``run_seed`` for every seed (one thread at the demo scale); returns the
    configuration, the seeds and each seed's cells."""
    config = get_config(options.scale)
    seeds = tuple(options.seeds or config.seeds)
    save_run_config(run_dir, {"options": options, "config": config})
    with torch_threads(DEMO_THREADS if options.scale == "demo" else None):
        return config, seeds, [run_seed(config, options, run_dir, seed) for seed in seeds]


def run_tables(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """Unsupervised and supervised tables and the Serra et al. baseline, sharing one Tiny pretraining per seed."""
    _, seeds, values = run_every_seed(options, run_dir, run_tables_seed)
    return result_rows(values, seeds, options.scale, _tables_published(options.scale))


def run_local_vs_semantic(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """The local-vs-semantic experiment, :func:`invglow.local_semantic.run_local_vs_semantic`."""
    from invglow import local_semantic  # imported here: local_semantic builds on this module's stages

    return local_semantic.run_local_vs_semantic(options, run_dir)


register_paper(
    Paper(
        PAPER_NAME,
        CITATION,
        experiments=(
            Experiment(
                "tables",
                run_tables,
                "Tiny pretraining; finetuning per set (plain, outlier / margin loss, supervised); AUROC tables; Serra",
            ),
            Experiment(
                "local_vs_semantic",
                run_local_vs_semantic,
                "full, local (8×8 patches) and dense Glow from scratch per set: raw AUROC, Spearman ρ, bits/dim",
            ),
        ),
    )
)
