"""Ignite engines of InvGlow: maximum-likelihood training with optional outlier loss, and likelihood evaluation.

Training (reference note invglow.md §3): mean per-image NLL in nats on dequantized, augmented images; with an
outlier loss, one general-distribution (Tiny) batch per step (``common.loaders.PairedLoader``) adds the paper's
Eq. 2 loss (``"class"``) or the margin loss; steps with non-finite loss or gradients are skipped and counted
(``common.handlers.finite_step``), as the original skips them. Evaluation runs on bin centres and reports
:func:`invglow.scores.evaluate_sets` (bits/dim per set, AUROC per score and OOD set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger

from common.handlers import count_skipped_steps, finite_step, log_histogram, log_images
from common.transforms import BatchPipeline, bin_centres, dequantize, random_crop, random_horizontal_flip
from invglow.config import NonFiniteExamples
from invglow.losses import bits_per_dim, margin_loss, nll_nats, outlier_loss, wrong_class_loss
from invglow.models import ClassConditionalGlow, Glow, PatchGlow
from invglow.scores import SCORE_KINDS, anomaly_scores, evaluate_sets

SAMPLE_TEMPERATURES = (0.0, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class OutlierLossConfig:
    """Outlier loss on general-distribution batches (reference note §3).

    Attributes:
        kind: ``"class"`` (the paper's Eq. 2, needs the base model) or ``"margin"``.
        weight: λ of the class loss (6000).
        temperature: T of the class loss (1000).
        margin: margin of the margin loss in nats; None = D nats (≈1.44 bits/dim), as the original.
    """

    kind: Literal["class", "margin"] = "class"
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
    """
    if outlier is not None and outlier.kind == "class" and base_model is None:
        raise ValueError("outlier: the 'class' outlier loss needs base_model, the general (Tiny) model")
    if non_finite_examples not in ("recompute", "skip_step"):
        raise ValueError(f"non_finite_examples: expected 'recompute' or 'skip_step', got {non_finite_examples!r}")
    n_dims = model.n_dims
    recompute = non_finite_examples == "recompute"
    supervised_class_loss = isinstance(model, ClassConditionalGlow) and outlier is not None and outlier.kind == "class"

    def base_log_density(images: torch.Tensor) -> torch.Tensor:
        base_model.eval()  # type: ignore[union-attr]  # create_trainer checked it is given where needed
        with torch.no_grad():
            return base_model(images)[1].sum(1)  # type: ignore[misc]

    def inlier_forward(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """log p(x) (true class), log p(x | c) per class (supervised), base log p (for the wrong-class loss)."""
        if isinstance(model, ClassConditionalGlow):
            class_log_densities = model.class_log_densities(images)
            log_density = class_log_densities.gather(1, labels[:, None]).squeeze(1)
        else:
            class_log_densities, log_density = None, model(images)[1].sum(1)
        return log_density, class_log_densities, base_log_density(images) if supervised_class_loss else None

    def outlier_forward(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """log p of the trained model, and of the base model for the 'class' outlier loss."""
        class_loss = outlier is not None and outlier.kind == "class"
        return model(images)[1].sum(1), base_log_density(images) if class_loss else None

    def step(engine: Engine, batch: Any) -> dict[str, float]:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        (images, labels), outliers = (batch, None) if outlier is None else batch
        (log_density, class_log_densities, base_in), labels = forward_on_finite_examples(
            inlier_forward, images, labels, recompute
        )
        dropped = len(images) - len(labels)
        nll = nll_nats(log_density, n_dims)
        loss = nll.mean()
        output = {"bpd": float(bits_per_dim(log_density.detach(), n_dims).mean())}
        if supervised_class_loss:
            wrong = wrong_class_loss(class_log_densities, base_in, labels, outlier.weight, outlier.temperature)
            loss = loss + wrong
            output["wrong_class_loss"] = float(wrong.detach())
        if outlier is not None:
            (log_density_out, base_out), kept = forward_on_finite_examples(
                outlier_forward, outliers[0], outliers[1], recompute
            )
            dropped += len(outliers[0]) - len(kept)
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
) -> tuple[tuple[torch.Tensor | None, ...], torch.Tensor]:
    """``forward(images, labels)``, recomputed on the examples whose outputs are all finite (the original's
    ``BaseFineIndependent.get_nlls``, reference note §3).

    While some example has a non-finite output (a row of any returned tensor; None entries are ignored) and more
    than a quarter of the current batch is finite, ``forward`` runs again on the finite examples only, so that the
    loss and gradients come from them alone. With fewer finite examples, or ``recompute=False``, the outputs are
    returned as they are (the step is then skipped by :func:`common.handlers.finite_step`).

    Returns:
        The outputs of the last forward, and the labels of the examples they belong to.
    """
    outputs = forward(images, labels)
    while recompute:
        rows = [output.detach().reshape(len(output), -1).sum(1) for output in outputs if output is not None]
        finite = torch.stack(rows).isfinite().all(0)
        n_finite = int(finite.sum())
        if n_finite == len(images) or n_finite <= len(images) // 4:
            break
        images, labels = images[finite], labels[finite]
        outputs = forward(images, labels)
    return outputs, labels


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
    model: Glow | ClassConditionalGlow | PatchGlow, set_names: tuple[str, ...], base_model: Glow | None = None
) -> Engine:
    """Evaluation engine over ``(images, set_ids)`` batches (set 0 = in-distribution test set).

    After a run, ``state.likelihoods`` holds ``(fine (N, L), base (N, L) or None, set_ids (N,))`` on the CPU and
    ``state.metrics`` the :func:`invglow.scores.evaluate_sets` results.
    """

    @torch.no_grad()
    def step(engine: Engine, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        images, set_ids = batch
        model.eval()
        fine = model(images)[1].cpu()
        base = None
        if base_model is not None:
            base_model.eval()
            base = base_model(images)[1].cpu()
        return fine, base, set_ids.cpu()

    evaluator = Engine(step)

    def reset(engine: Engine) -> None:
        engine.state.collected = []

    def collect(engine: Engine) -> None:
        engine.state.collected.append(engine.state.output)

    def summarise(engine: Engine) -> None:
        fine, base, set_ids = (
            None if parts[0] is None else torch.cat(parts) for parts in zip(*engine.state.collected, strict=True)
        )
        engine.state.likelihoods = (fine, base, set_ids)
        engine.state.metrics.update(evaluate_sets(fine, base, set_ids, set_names, model.n_dims))

    evaluator.add_event_handler(Events.STARTED, reset)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    evaluator.add_event_handler(Events.COMPLETED, summarise)
    return evaluator


def attach_score_histograms(
    evaluator: Engine, tb_logger: TensorboardLogger | None, trainer: Engine, set_names: tuple[str, ...], tag: str
) -> None:
    """Log the histogram of every score of every set after each evaluation, at the trainer's epoch."""

    def log(engine: Engine) -> None:
        fine, base, set_ids = engine.state.likelihoods
        for kind in SCORE_KINDS:
            if (kind == "ratio" and base is None) or (kind == "final_scale" and fine.shape[1] == 1):
                continue
            values = torch.from_numpy(anomaly_scores(kind, fine, base).values)
            for index, name in enumerate(set_names):
                log_histogram(tb_logger, f"{tag}/score-{kind}/{name}", values[set_ids == index], trainer.state.epoch)

    if tb_logger is not None:
        evaluator.add_event_handler(Events.COMPLETED, log)


def attach_sample_logging(
    trainer: Engine,
    model: Glow | PatchGlow,
    tb_logger: TensorboardLogger | None,
    temperatures: tuple[float, ...] = SAMPLE_TEMPERATURES,
    n_samples: int = 16,
) -> None:
    """Log images sampled from ``model`` at a few temperatures after every epoch."""

    def log(engine: Engine) -> None:
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
        model.eval()
        for temperature in temperatures:
            images = model.sample(n_samples, temperature, generator).add(0.5).clamp(0, 1)
            log_images(tb_logger, f"samples/T={temperature}", images, engine.state.epoch)

    if tb_logger is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, log)
