"""Ignite engines of InvGlow (Schirrmeister et al., NeurIPS 2020): maximum-likelihood training with optional
outlier loss, likelihood evaluation, and :func:`fit`, the one way this package trains one model.

Training (reference note invglow.md §3): mean per-image NLL in nats on dequantized, augmented images; with an
outlier loss, one general-distribution (Tiny) batch per step (``common.loaders.PairedLoader``) adds the paper's
Eq. 2 loss (``"class"``) or the margin loss; steps with non-finite loss or gradients are skipped and counted
(``common.handlers.finite_step``), as the original skips them. Evaluation runs on bin centres, collects every
image's per-scale log-densities (``common.metrics.CollectTensors``) and reports
:func:`invglow.scores.evaluate_sets` (bits/dim per set, AUROC per score and OOD set).

Under ``ignite.distributed`` (several processes) :func:`fit` trains data-parallel on the same global batches and
trajectory as one process (``common.data_parallel``): each rank forwards its block of every batch, the
log-densities are gathered so that the losses, the non-finite examples' recomputation and the logged values are
those of the global batch, and each rank evaluates a contiguous block of the evaluation images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from torch import nn

from common import smoke
from common.data_parallel import MethodCalls, Shards, prepare_model
from common.datasets import ImageSet
from common.files import torch_save_atomically
from common.handlers import (
    SKIPPED_STEPS,
    attach_progress,
    count_skipped_steps,
    finite_step,
    log_histogram,
    log_image,
    setup_handlers,
    training_counts,
)
from common.loaders import ChainedBatches, PairedLoader, TensorBatchLoader, evaluation_loaders
from common.metrics import CollectTensors
from common.run import seed_everything
from common.trained_models import FINAL_MODEL
from common.transforms import BatchPipeline, bin_centres, dequantize, random_crop, random_horizontal_flip
from invglow.config import NonFiniteExamples, TrainConfig
from invglow.data import EvalSets
from invglow.losses import bits_per_dim, margin_loss, nll_nats, outlier_loss, wrong_class_loss
from invglow.models import ClassConditionalGlow, Glow, PatchGlow, initialize_actnorms
from invglow.scores import ScoreKind, anomaly_scores, evaluate_sets, score_kinds

SAMPLE_TEMPERATURES = (0.0, 0.5, 0.7, 1.0)
SAMPLES_FILE = "samples.png"
LIKELIHOODS = "likelihoods"
"""The evaluator's ``CollectTensors`` metric: ``{"fine": (N, L)}`` per-scale log-densities of the trained model,
plus ``"base": (N, L')`` of the general (Tiny) model when there is one, in the order of the evaluation images."""
Flow = Glow | ClassConditionalGlow | PatchGlow
OutlierKind = Literal["class", "margin"]


@dataclass(frozen=True)
class OutlierLossConfig:
    """Outlier loss on general-distribution batches (reference note §3).

    Attributes:
        kind: ``"class"`` (the paper's Eq. 2, needs the base model) or ``"margin"``.
        weight: λ of the class loss (6000).
        temperature: T of the class loss (1000).
        margin: margin of the margin loss in nats; None = D nats (≈1.44 bits/dim), as the original.
    """

    kind: OutlierKind = "class"
    weight: float = 6000.0
    temperature: float = 1000.0
    margin: float | None = None


def train_transform(generator: torch.Generator, translate_pixels: int, flip: bool) -> BatchPipeline:
    """Augment (random translation with zero fill, horizontal flip) then dequantize: u/256 − 0.5 + U[0, 1/256).

    # Deviation: torchvision RandomAffine(translate=0.1) draws round(U(−3.2, 3.2)) pixel shifts; a padded random
    # crop draws uniform integers in [−3, 3]: the same shifts with slightly different probabilities.
    """
    steps: list[Any] = []
    if translate_pixels:
        steps.append(lambda images: random_crop(images, images.shape[-1], translate_pixels, generator=generator))
    if flip:
        steps.append(partial(random_horizontal_flip, generator=generator))
    steps.append(partial(dequantize, generator=generator))
    return BatchPipeline(steps)


def eval_transform() -> BatchPipeline:
    """Noise-free evaluation input: bin centres u/256 − 0.5 + 1/512 (the original's final evaluation)."""
    return BatchPipeline([bin_centres])


def create_trainer(
    model: Glow | ClassConditionalGlow | PatchGlow,
    optimizer: torch.optim.Optimizer,
    *,
    base_model: Glow | None = None,
    outlier: OutlierLossConfig | None = None,
    non_finite_examples: NonFiniteExamples = "recompute",
    replica: nn.Module | None = None,
) -> Engine:
    """Training engine; batches are ``(images, labels)``, or ``((images, labels), (outliers, _))`` with ``outlier``.

    With a :class:`~invglow.models.ClassConditionalGlow` (supervised variant) the NLL is that of the true class,
    and the 'class' outlier loss adds :func:`~invglow.losses.wrong_class_loss` on the other classes; the outlier
    batch is scored with the class-marginal density. ``non_finite_examples`` (see
    :class:`~invglow.config.TrainConfig`): ``"recompute"`` drops examples with non-finite log-likelihoods and
    recomputes the batch (:func:`forward_on_finite_examples`), ``"skip_step"`` leaves them to the step skip.

    Returns per step ``loss`` (total), ``bpd`` (in-distribution batch), ``non_finite_examples`` (examples dropped
    from both batches), and with an outlier loss ``outlier_loss`` (and ``wrong_class_loss`` for the supervised
    variant).

    ``replica`` runs the forward passes: ``common.data_parallel.prepare_model(model, device)``, DDP under several
    processes, whose batches are then each rank's block of the global batch; every value above is of the global
    batch. Default: ``model`` itself, in one process.
    """
    if outlier is not None and outlier.kind == "class" and base_model is None:
        raise ValueError("outlier: the 'class' outlier loss needs base_model, the general (Tiny) model")
    if non_finite_examples not in ("recompute", "skip_step"):
        raise ValueError(f"non_finite_examples: expected 'recompute' or 'skip_step', got {non_finite_examples!r}")
    n_dims = model.n_dims
    recompute = non_finite_examples == "recompute"
    calls = replica if replica is not None else MethodCalls(model)
    supervised_class_loss = isinstance(model, ClassConditionalGlow) and outlier is not None and outlier.kind == "class"

    def base_log_density(images: torch.Tensor) -> torch.Tensor:
        base_model.eval()  # type: ignore[union-attr]  # create_trainer checked it is given where needed
        with torch.no_grad():
            return base_model(images)[1].sum(1)  # type: ignore[misc]

    def inlier_forward(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """log p(x) (true class), log p(x | c) per class (supervised), base log p (for the wrong-class loss)."""
        if isinstance(model, ClassConditionalGlow):
            class_log_densities = calls("class_log_densities", images)
            log_density = class_log_densities.gather(1, labels[:, None]).squeeze(1)
        else:
            class_log_densities, log_density = None, calls("forward", images)[1].sum(1)
        return log_density, class_log_densities, base_log_density(images) if supervised_class_loss else None

    def outlier_forward(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """log p of the trained model, and of the base model for the 'class' outlier loss."""
        class_loss = outlier is not None and outlier.kind == "class"
        return calls("forward", images)[1].sum(1), base_log_density(images) if class_loss else None

    def step(engine: Engine, batch: Any) -> dict[str, float]:
        calls.train()
        optimizer.zero_grad(set_to_none=True)
        (images, labels), outliers = (batch, None) if outlier is None else batch
        counts = (len(labels),) if outliers is None else (len(labels), len(outliers[1]))
        inlier_shards, *outlier_shards = Shards.exchange(*counts)
        (log_density, class_log_densities, base_in), labels = forward_on_finite_examples(
            inlier_forward, images, labels, recompute, inlier_shards
        )
        dropped = inlier_shards.total - len(labels)
        nll = nll_nats(log_density, n_dims)
        loss = nll.mean()
        output = {"bpd": float(bits_per_dim(log_density.detach(), n_dims).mean())}
        if supervised_class_loss:
            wrong = wrong_class_loss(class_log_densities, base_in, labels, outlier.weight, outlier.temperature)
            loss = loss + wrong
            output["wrong_class_loss"] = float(wrong.detach())
        if outlier is not None:
            (log_density_out, base_out), kept = forward_on_finite_examples(
                outlier_forward, outliers[0], outliers[1], recompute, outlier_shards[0]
            )
            dropped += outlier_shards[0].total - len(kept)
            extra = _outlier_term(log_density_out, base_out, nll, n_dims, outlier)
            loss = loss + extra
            output["outlier_loss"] = float(extra.detach())
        loss.backward()
        finite_step(engine, loss, optimizer)
        output["loss"] = float(loss.detach())
        output["non_finite_examples"] = float(dropped)
        return output

    trainer = Engine(step)
    count_skipped_steps(trainer)
    return trainer


def forward_on_finite_examples(
    forward: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor | None, ...]],
    images: torch.Tensor,
    labels: torch.Tensor,
    recompute: bool = True,
    shards: Shards | None = None,
) -> tuple[tuple[torch.Tensor | None, ...], torch.Tensor]:
    """``forward(images, labels)``, recomputed on the examples whose outputs are all finite (the original's
    ``BaseFineIndependent.get_nlls``, reference note §3).

    While some example has a non-finite output (a row of any returned tensor; None entries are ignored) and more
    than a quarter of the current batch is finite, ``forward`` runs again on the finite examples only, so that the
    loss and gradients come from them alone. With fewer finite examples, or ``recompute=False``, the outputs are
    returned as they are (the step is then skipped by :func:`common.handlers.finite_step`).

    With ``shards`` (several processes, each holding its block of the global batch) the outputs are gathered from
    every rank and the decisions are taken on the global batch, alike on every rank, as in one process.

    Returns:
        The outputs of the last forward, and the labels of the examples they belong to (of the global batch).
    """
    shards = shards if shards is not None else Shards((len(labels),), 0)
    *outputs, all_labels = shards.gather(*forward(images, labels), labels)
    while recompute:
        rows = [output.detach().reshape(len(output), -1).sum(1) for output in outputs if output is not None]
        finite = torch.stack(rows).isfinite().all(0)
        n_finite = int(finite.sum())
        if n_finite == shards.total or n_finite <= shards.total // 4:
            break
        mine = finite[shards.mine]
        images, labels, shards = images[mine], labels[mine], shards.select(finite)
        *outputs, all_labels = shards.gather(*forward(images, labels), labels)
    return tuple(outputs), all_labels


def _outlier_term(
    log_density_out: torch.Tensor,
    log_density_base: torch.Tensor | None,
    nll_in: torch.Tensor,
    n_dims: int,
    config: OutlierLossConfig,
) -> torch.Tensor:
    if config.kind == "margin":
        margin = float(n_dims) if config.margin is None else config.margin
        return margin_loss(nll_in, nll_nats(log_density_out, n_dims), margin)
    return outlier_loss(log_density_out, log_density_base, config.weight, config.temperature)  # type: ignore[arg-type]


def create_evaluator(
    model: Flow, evaluation: EvalSets, base_model: Glow | None = None, base_likelihoods: torch.Tensor | None = None
) -> Engine:
    """Evaluation engine over the batches of :func:`eval_loader` (``evaluation``'s images in order).

    After a run, ``state.metrics[LIKELIHOODS]`` holds every image's per-scale log-densities (see
    :data:`LIKELIHOODS`) and ``state.metrics`` the :func:`invglow.scores.evaluate_sets` results against
    ``evaluation.set_ids`` (set 0 = the in-distribution test set).

    The general (Tiny) model is fixed: its log-densities on ``evaluation`` (``"base"``) are computed with
    ``base_model`` in the first run only and reused in the next ones, or taken from ``base_likelihoods`` (N, L')
    when given (:mod:`invglow.base_likelihoods`) without running ``base_model`` at all.
    """
    known = {"base": base_likelihoods}

    @torch.no_grad()
    def step(engine: Engine, batch: Any) -> dict[str, torch.Tensor]:
        images, _ = batch
        model.eval()
        output = {"fine": model(images)[1]}
        if base_model is not None and known["base"] is None:
            base_model.eval()
            output["base"] = base_model(images)[1]
        return output

    evaluator = Engine(step)
    # The set ids are not collected: the tensorboard logger of common.handlers logs every metric and would write an
    # (N,) tensor as N scalars. The loader visits the images in index order: the rows align with evaluation.set_ids.
    CollectTensors().attach(evaluator, LIKELIHOODS)

    def score(engine: Engine) -> None:
        likelihoods = engine.state.metrics[LIKELIHOODS]
        if known["base"] is None:
            known["base"] = likelihoods.get("base")
        else:
            likelihoods["base"] = known["base"]
        if len(likelihoods["fine"]) != len(evaluation.set_ids):
            raise RuntimeError(f"evaluated {len(likelihoods['fine'])} images, expected {len(evaluation.set_ids)}")
        scores = evaluate_sets(
            likelihoods["fine"], likelihoods.get("base"), evaluation.set_ids, evaluation.names, model.n_dims
        )
        engine.state.metrics.update(scores)

    evaluator.add_event_handler(Events.COMPLETED, score)
    return evaluator


def eval_loader(evaluation: EvalSets, batch_size: int, device: torch.device) -> ChainedBatches:
    """Batches of ``evaluation``'s images in index order, set after set, bin-centred; under several processes this
    rank's contiguous block of them (``common.loaders.evaluation_loaders``), so that the likelihoods collected from
    the ranks align with the images."""
    sets = [
        (evaluation.images[chosen], evaluation.set_ids[chosen])
        for chosen in (evaluation.set_ids == k for k in range(len(evaluation.names)))
    ]
    return ChainedBatches(evaluation_loaders(sets, batch_size, transform=eval_transform(), device=device))


def evaluation_scores(likelihoods: dict[str, torch.Tensor]) -> dict[ScoreKind, np.ndarray]:
    """Every score kind the evaluator's :data:`LIKELIHOODS` give, (N,) per kind in the order of the images."""
    fine, base = likelihoods["fine"], likelihoods.get("base")
    return {kind: anomaly_scores(kind, fine, base).values for kind in score_kinds(fine, base)}


def write_score_plots(
    evaluation: EvalSets,
    likelihoods: dict[str, torch.Tensor],
    folder: Path,
    tb_logger: TensorboardLogger | None,
    step: int,
) -> None:
    """``roc-<set>.png`` and ``hist-<set>.png`` in ``folder`` for every OOD set of ``evaluation``, each score kind
    a curve / panel, also logged to tensorboard if given (``common.plots.write_score_plots``)."""
    from common import plots  # matplotlib loads only when a cell plots

    scores = evaluation_scores(likelihoods)
    plots.write_score_plots(folder, scores, evaluation.set_ids, evaluation.names, tb_logger, step)


def attach_score_histograms(
    evaluator: Engine, tb_logger: TensorboardLogger | None, trainer: Engine, evaluation: EvalSets, tag: str
) -> None:
    """Log the histogram of every score of every set after each evaluation, at the trainer's epoch."""

    def log(engine: Engine) -> None:
        for kind, scores in evaluation_scores(engine.state.metrics[LIKELIHOODS]).items():
            values = torch.from_numpy(scores)
            for index, name in enumerate(evaluation.names):
                tag_name = f"{tag}/score-{kind}/{name}"
                log_histogram(tb_logger, tag_name, values[evaluation.set_ids == index], trainer.state.epoch)

    if tb_logger is not None:
        evaluator.add_event_handler(Events.COMPLETED, log)


def attach_sample_logging(
    trainer: Engine,
    model: Glow | PatchGlow,
    tb_logger: TensorboardLogger | None,
    folder: Path,
    temperatures: tuple[float, ...] = SAMPLE_TEMPERATURES,
    n_samples: int = 16,
) -> None:
    """After every epoch (and when a smoke run ends the training early), sample images from ``model`` at a few
    temperatures: logged as ``samples/T=<t>`` and saved as :data:`SAMPLES_FILE` in ``folder`` (a row per
    temperature), enlarged to at least 256 pixels a side."""

    def log(engine: Engine) -> None:
        from common import plots  # matplotlib loads only when a cell plots

        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
        model.eval()
        samples = [model.sample(n_samples, t, generator).add(0.5).clamp(0, 1) for t in temperatures]
        for temperature, images in zip(temperatures, samples, strict=True):
            log_image(tb_logger, f"samples/T={temperature}", plots.visible_grid([images], 8), engine.state.epoch)
        plots.save_png(plots.visible_grid(samples, n_samples), folder / SAMPLES_FILE)

    if tb_logger is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED | Events.TERMINATE, log)


def fit(
    model: Flow,
    train_set: ImageSet,
    evaluation: EvalSets,
    train: TrainConfig,
    folder: Path,
    *,
    seed: int,
    flip: bool,
    device: torch.device,
    progress: bool = True,
    base_model: Glow | None = None,
    outlier: OutlierLossConfig | None = None,
    outlier_images: torch.Tensor | None = None,
    base_likelihoods: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``train.epochs`` epochs in ``folder`` and return its final evaluation's metrics.

    ``folder`` receives the tensorboard events, the checkpoints, ``samples.png`` (every epoch) and, at the end,
    ``model.pt`` (written atomically) and the final evaluation's ``roc-<set>.png`` / ``hist-<set>.png``.
    A training resumes from the newest intact checkpoint in ``folder``; one whose checkpoint is of the last epoch is
    only evaluated again. A model without ``base_model`` is trained from scratch: its ActNorms are initialised from
    the first ``train.init_batches`` training batches; a finetuned model starts from the (initialised) Tiny model.
    ``outlier`` adds its loss on one batch of ``outlier_images`` beside every training batch. ``base_likelihoods``:
    ``base_model``'s log-densities on ``evaluation``, if known (:func:`create_evaluator`).

    Under ``ignite.distributed`` every rank calls ``fit`` with the same arguments (``device`` = ``idist.device()``):
    ``train.batch_size`` is the global batch, each rank trains on its block of it through DDP, and the run follows
    the one-process trajectory (module docstring). Rank 0 writes the checkpoints, tensorboard and ``model.pt``;
    every rank returns the same metrics.

    Returns:
        The final evaluator's ``state.metrics`` (:func:`create_evaluator`), ``steps`` and ``skipped_steps``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    evaluator = create_evaluator(model, evaluation, base_model, base_likelihoods)
    loader = eval_loader(evaluation, train.eval_batch_size, device)
    seed_everything(seed)
    trainer, optimizer, train_loader = _training(
        model, train_set, train, seed, flip, device, base_model, outlier, outlier_images
    )
    handlers = setup_handlers(
        trainer,
        {"eval": (evaluator, loader)},
        folder,
        {"model": model, "optimizer": optimizer},
        seed=seed,
        optimizer=optimizer,
        progress=None if progress else False,  # None: on unless OOD_REPRO_PROGRESS=0
        resume=True,
    )
    attach_score_histograms(evaluator, handlers.tb_logger, trainer, evaluation, "eval")
    sampled = model.glow if isinstance(model, ClassConditionalGlow) else model
    attach_sample_logging(trainer, sampled, handlers.tb_logger, folder)
    try:
        if trainer.state.epoch >= train.epochs:  # a finished training restored from its last checkpoint
            evaluator.run(loader)
        else:
            trainer.run(train_loader, max_epochs=train.epochs)
        if handlers.tb_logger is not None:  # rank 0
            likelihoods = evaluator.state.metrics[LIKELIHOODS]
            write_score_plots(evaluation, likelihoods, folder, handlers.tb_logger, trainer.state.epoch)
    finally:
        if handlers.tb_logger is not None:
            handlers.tb_logger.close()
    if idist.get_rank() == 0:
        torch_save_atomically(model.state_dict(), folder / FINAL_MODEL)
    return {**evaluator.state.metrics, **training_counts(trainer)}


def evaluate(
    model: Flow,
    evaluation: EvalSets,
    train: TrainConfig,
    folder: Path,
    *,
    device: torch.device,
    progress: bool = True,
    base_model: Glow | None = None,
    base_likelihoods: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Evaluate a trained ``model`` as :func:`fit` evaluates it after its training, without training it.

    ``folder`` receives what :func:`fit` writes there at the end: ``roc-<set>.png`` / ``hist-<set>.png`` and
    ``model.pt``. Under ``ignite.distributed`` every rank calls it, each evaluating its block of the images.

    Returns:
        The evaluator's ``state.metrics`` (:func:`create_evaluator`), ``steps`` and ``skipped_steps`` 0.
    """
    folder.mkdir(parents=True, exist_ok=True)
    evaluator = create_evaluator(model, evaluation, base_model, base_likelihoods)
    attach_progress(evaluator, desc="eval", disable=None if progress else True)  # None: on unless OOD_REPRO_PROGRESS=0
    evaluator.run(eval_loader(evaluation, train.eval_batch_size, device))
    if idist.get_rank() == 0:
        write_score_plots(evaluation, evaluator.state.metrics[LIKELIHOODS], folder, None, 0)
        torch_save_atomically(model.state_dict(), folder / FINAL_MODEL)
    return {**evaluator.state.metrics, "steps": 0, SKIPPED_STEPS: 0}


def _training(
    model: Flow,
    train_set: ImageSet,
    train: TrainConfig,
    seed: int,
    flip: bool,
    device: torch.device,
    base_model: Glow | None,
    outlier: OutlierLossConfig | None,
    outlier_images: torch.Tensor | None,
) -> tuple[Engine, torch.optim.Optimizer, TensorBatchLoader | PairedLoader]:
    """The trainer, its Adamax optimizer and its training batches; ActNorms initialised if trained from scratch.

    The data-dependent ActNorm initialisation runs on the whole first batches, alike on every rank, before DDP
    copies rank 0's parameters to the others (it must not see one rank's block only: glow-pytorch issue #2).
    """
    loader: TensorBatchLoader | PairedLoader = _train_loader(train_set, train, seed, flip, device)
    if base_model is None:
        count = smoke.training_batches(min(train.init_batches, len(loader)))
        batches = [loader.global_batch_at(0, i)[0] for i in range(count)]
        initialize_actnorms(model, torch.cat(batches))
    if outlier is not None:
        if outlier_images is None:
            raise ValueError("outlier_images: an outlier loss needs the general-distribution (Tiny) images")
        outlier_set = ImageSet(outlier_images, torch.full((len(outlier_images),), -1))
        loader = PairedLoader(loader, _train_loader(outlier_set, train, seed + 1, flip, device))
    optimizer = torch.optim.Adamax(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    trainer = create_trainer(
        model,
        optimizer,
        base_model=base_model,
        outlier=outlier,
        non_finite_examples=train.non_finite_examples,
        replica=prepare_model(model, device),
    )
    return trainer, optimizer, loader


def _train_loader(
    images: ImageSet, train: TrainConfig, seed: int, flip: bool, device: torch.device
) -> TensorBatchLoader:
    # The global generator is reseeded every epoch and checkpointed mid-epoch (common.run.make_reproducible), so
    # augmentation and dequantization noise continue exactly after a resume; it is in the same state on every rank,
    # and the loader transforms the whole global batch, so each image gets its one-process noise.
    transform = train_transform(torch.default_generator, train.translate_pixels, flip)
    return TensorBatchLoader(
        images.images, images.labels, train.batch_size, shuffle=True, drop_last=True, transform=transform,
        device=device, seed=seed,
    )  # fmt: skip


def load_model(model: Flow, path: Path, device: torch.device) -> Flow:
    """``model`` with the state dict saved at ``path`` (a ``model.pt`` that :func:`fit` wrote), on ``device``."""
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device)
