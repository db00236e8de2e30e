"""Local vs. semantic: is a Glow's likelihood about local, low-level features? (Schirrmeister et al. 2020, Sec. 4).

Per in-distribution set, three flows are trained from scratch by maximum likelihood (no Tiny model, no outlier
loss; reference note invglow.md §2.1 "Dense", "Local / patch variant", §4 item 4): the full multi-scale
convolutional Glow, a local Glow that only sees non-overlapping patches (:class:`~invglow.models.PatchGlow`,
16 patches per image: 8×8 in the paper) and the fully connected ("dense") Glow (K = 8, frozen orthogonal mixing, no
LU). If the full Glow's likelihood were about the semantic content, the local model could not reproduce it; the
paper finds that the local and dense likelihoods track the full Glow's and fail on the same OOD pairs (CIFAR-10 →
SVHN). The table has, per model, the raw-likelihood AUROC of every (in → OOD) pair, the Spearman rank correlation
of its per-image log-likelihoods with the full Glow's over all evaluated images (test set and OOD sets), and its
test bits/dim. Each model is a stage of :mod:`invglow.experiments` (``<run>/<kind>-glow-<set>/seed<s>``: the same
engines, tensorboard logs, checkpoints and ``--resume``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from ignite.engine import Engine
from scipy.stats import spearmanr

from common.papers import RunOptions
from common.results import ResultRow
from common.run import resolve_device, seed_everything
from invglow.config import InvGlowConfig
from invglow.experiments import (
    DEMO_STAND_INS,
    Stage,
    eval_sets,
    load_group_data,
    result_rows,
    run_every_seed,
    stage_epochs,
    train_stage,
)
from invglow.models import Glow, PatchGlow
from invglow.scores import anomaly_scores

TABLE = "local vs semantic: raw-likelihood AUROC (%), Spearman ρ with the full Glow, bits/dim"
FULL_GLOW = "full Glow"
LOCAL_GLOW = "local Glow (16 patches, 8×8 at 32×32)"
DENSE_GLOW = "dense (fully connected) Glow"
ModelKind = Literal["full", "local", "dense"]
MODEL_ROWS: dict[ModelKind, str] = {"full": FULL_GLOW, "local": LOCAL_GLOW, "dense": DENSE_GLOW}
SPEARMAN = "Spearman ρ with full Glow"
BITS_PER_DIM = "test bits/dim"
NOT_RETRIEVED = "arXiv 2006.10848 local / fully connected model results: not retrieved (paper_numbers.md §1.3)"


def spearman_column(in_name: str) -> str:
    """Column of the rank correlation with the full Glow on ``in_name``'s evaluation images."""
    return f"{in_name}: {SPEARMAN}"


def bits_per_dim_column(in_name: str) -> str:
    """Column of the bits/dim on ``in_name``'s test set."""
    return f"{in_name}: {BITS_PER_DIM}"


def build_variant(kind: ModelKind, config: InvGlowConfig) -> Glow | PatchGlow:
    """The ``"full"`` convolutional Glow, the ``"local"`` patch Glow or the ``"dense"`` Glow of ``config``.

    All three have ``config.glow``'s channels, image size, coupling and width (the original hard-codes 512 hidden
    units for every model); the local one has ``patch_steps`` steps on one scale, the dense one the Glow's scales
    with ``dense_steps`` steps each and frozen orthogonal mixing instead of (LU) 1×1 convolutions.
    """
    glow, local = config.glow, config.local_semantic
    shape = (glow.channels, glow.image_size, glow.image_size)
    if kind == "full":
        return Glow(shape, glow.n_scales, glow.steps, glow.hidden, glow.coupling, glow.lu)
    if kind == "local":
        return PatchGlow(shape, local.patch_size, local.patch_steps, glow.hidden, glow.coupling, glow.lu)
    if kind == "dense":
        return Glow(shape, glow.n_scales, local.dense_steps, local.dense_hidden, glow.coupling, lu=False, dense=True)
    raise ValueError(f"kind: expected one of {', '.join(MODEL_ROWS)}, got {kind!r}")


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


def _model_cells(
    in_name: str, set_names: tuple[str, ...], row: str, evaluator: Engine, full_likelihoods: torch.Tensor | None
) -> dict[tuple[str, str, str], float]:
    """One model's cells: raw AUROC per OOD set, Spearman ρ with the full Glow (variants only), test bits/dim."""
    metrics = evaluator.state.metrics
    cells = {(TABLE, row, f"{in_name} → {ood_name}"): metrics[f"AUROC-raw/{ood_name}"] for ood_name in set_names[1:]}
    if full_likelihoods is not None:
        likelihoods = evaluator.state.likelihoods[0]
        cells[(TABLE, row, spearman_column(in_name))] = rank_correlation(full_likelihoods, likelihoods)
    cells[(TABLE, row, bits_per_dim_column(in_name))] = metrics[f"bpd/{in_name}"]
    return cells


def run_local_vs_semantic_seed(
    config: InvGlowConfig, options: RunOptions, run_dir: Path, seed: int
) -> dict[tuple[str, str, str], float]:
    """Train the three models per in-distribution set of ``config`` for one seed: {(table, row, column): value}."""
    device = resolve_device(options.device)
    train = config.local_semantic.train
    data = load_group_data(config, options.scale, seed)  # every set before any training
    values: dict[tuple[str, str, str], float] = {}
    for in_name in config.data.in_distribution:
        train_set = data.train[in_name]
        evaluation = eval_sets(in_name, data.tests[in_name], data.ood)
        flip = in_name not in config.data.no_flip
        full_likelihoods = None
        for kind, row in MODEL_ROWS.items():
            seed_everything(seed)  # the model's initial weights (rotations, coupling nets) depend on the seed only
            model = build_variant(kind, config).to(device)
            folder = run_dir / f"{kind}-glow-{in_name}" / f"seed{seed}"
            stage = Stage(folder, train, stage_epochs(options, train), seed, flip, evaluation)
            evaluator = train_stage(stage, model, train_set, options, device)
            values.update(_model_cells(in_name, evaluation.names, row, evaluator, full_likelihoods))
            if kind == "full":
                full_likelihoods = evaluator.state.likelihoods[0]
    return values


def run_local_vs_semantic(options: RunOptions, run_dir: Path) -> list[ResultRow]:
    """The local-vs-semantic table: full, local and dense Glow trained from scratch per in-distribution set."""
    config, seeds, values = run_every_seed(options, run_dir, run_local_vs_semantic_seed)
    patch, size = config.local_semantic.patch_size, config.glow.image_size
    note = NOT_RETRIEVED
    if options.scale == "demo":
        note = f"{DEMO_STAND_INS}; local Glow: {patch}×{patch} patches at {size}×{size}; {NOT_RETRIEVED}"
    return result_rows(values, seeds, options.scale, lambda table, row, column: (None, note))
