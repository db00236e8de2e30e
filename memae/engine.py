"""Ignite engines for MemAE / C-MemAE: the training step, the one-class evaluator, tensorboard extras.

:func:`fit` is the one way a model of this package is trained (one normal class, one conditional group or one
few-shot fine-tuning) with ``common.handlers.setup_handlers``: progress bars, tensorboard, checkpoints and an exact
resume from the newest intact checkpoint of its folder. The model of the **last** epoch is the one evaluated
(C-MemAE reported the maximum test AUROC over epochs instead). :func:`save_weights` / :func:`load_weights` pass a
trained model to the cells that fine-tune it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from torch import nn

from common.errors import MissingDataError
from common.files import torch_save_atomically
from common.handlers import (
    count_skipped_steps,
    finite_step,
    log_histogram,
    log_image,
    setup_handlers,
    training_counts,
)
from common.loaders import TensorBatchLoader
from common.metrics import CollectTensors, OODMetrics
from memae.config import TrainConfig
from memae.data import denormalise
from memae.losses import memae_loss
from memae.memory import ConditionalMemory, MemoryModule
from memae.models import Autoencoder
from memae.scores import anomaly_scores

GRID_IMAGES = 16  # inputs / reconstructions shown per evaluation
GRID_SLOTS = 32  # decoded memory slots shown per memory
GRID_COLUMNS = 8  # images per row of every grid
SCORES = "scores"  # the evaluator's CollectTensors metric: every test image's score and is_anomalous
RECONSTRUCTIONS_FILE = "reconstructions.png"
MEMORY_SLOTS_FILE = "memory-slots.png"


def memory_indices(labels: torch.Tensor, group: Sequence[int]) -> torch.Tensor:
    """Each label's position in the target ``group`` (its memory / condition index).

    Raises:
        ValueError: a label is not in the group.
    """
    lookup = torch.tensor(list(group), device=labels.device)
    matches = labels[:, None] == lookup[None, :]
    if not bool(matches.any(dim=1).all()):
        missing = sorted(set(labels[~matches.any(dim=1)].tolist()))
        raise ValueError(f"class(es) {missing} are not in the target group {tuple(group)}")
    return matches.int().argmax(dim=1)


def create_trainer(
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    entropy_weight: float,
    group: Sequence[int] | None = None,
    freeze_batchnorm: bool = False,
) -> Engine:
    """Trainer minimising the objective ``mse + α · entropy``; conditional models read their true label's memory.

    The step returns ``{"loss", "mse", "entropy"}``; a non-finite step is skipped and counted (``finite_step``).
    ``freeze_batchnorm`` keeps BatchNorm layers on their running statistics (few-shot fine-tuning, where a batch
    may hold a single image).
    """
    if model.conditional and group is None:
        raise ValueError("a conditional model needs the target group (the class of each memory)")

    def step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        images, labels = batch
        model.train()
        if freeze_batchnorm:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        optimizer.zero_grad(set_to_none=True)
        condition = memory_indices(labels, group) if model.conditional else None
        reconstruction, out = model(images, condition)
        terms = memae_loss(images, reconstruction, out.attention, entropy_weight)
        terms.total.backward()
        finite_step(engine, terms.total, optimizer)
        values = torch.stack([terms.total, terms.reconstruction, terms.entropy]).detach().tolist()  # one host sync
        return dict(zip(("loss", "mse", "entropy"), values, strict=True))

    trainer = Engine(step)
    count_skipped_steps(trainer)
    return trainer


class SelectionAccuracy(Metric):
    """Share of samples of the target group whose self-selected memory is their own class's memory.

    ``update`` takes ``(selection, expected)``: (B,) chosen memory and (B,) own memory, −1 for samples outside
    the group (not counted).
    """

    @reinit__is_reduced
    def reset(self) -> None:
        self._correct = torch.zeros((), dtype=torch.int64)
        self._counted = torch.zeros((), dtype=torch.int64)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        selection, expected = (tensor.detach().cpu() for tensor in output)
        inside = expected >= 0
        self._correct += (selection[inside] == expected[inside]).sum()
        self._counted += inside.sum()

    @sync_all_reduce("_correct", "_counted")
    def compute(self) -> float:
        if int(self._counted) == 0:
            raise ValueError("no sample of the target group was evaluated: selection accuracy is undefined")
        return float(self._correct) / float(self._counted)


def create_evaluator(
    model: Autoencoder,
    normal_class: int,
    group: Sequence[int] | None = None,
    known_condition: bool = True,
    selection: str = "sum",
) -> Engine:
    """Evaluator of the one-class test set of ``normal_class``: the ``common.metrics`` keys (AUROC, ...), and
    :data:`SCORES`, every test image's ``score`` and ``is_anomalous`` (for the plots).

    Args:
        model: the autoencoder; scored with :func:`memae.scores.anomaly_scores` (higher = more anomalous).
        normal_class: the class that is normal; every other label is an anomaly (the positive class).
        group: target group of a conditional model.
        known_condition: conditional models only: every sample reads the memory of ``normal_class`` (C-MemAE's
            ``conditional=known``), or picks its memory itself (``unknown``; adds ``selection_accuracy``).
        selection: the self-selection criterion, ``"sum"`` (C-MemAE) or ``"max"``.
    """
    conditional = model.conditional
    if conditional and (group is None or normal_class not in group):
        raise ValueError(f"normal class {normal_class} is not in the target group {group}")

    def step(_: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        images, labels = batch
        condition = None
        if conditional and known_condition:
            condition = memory_indices(torch.full_like(labels, normal_class), group)
        scores, reconstruction, out = anomaly_scores(model, images, condition, selection)
        expected = torch.full_like(labels, -1)
        if conditional:
            inside = torch.isin(labels, torch.tensor(list(group), device=labels.device))
            expected[inside] = memory_indices(labels[inside], group)
        return {
            "score": scores,
            "is_anomalous": labels != normal_class,
            "images": images,
            "reconstruction": reconstruction,
            "attention": out.attention,
            "selection": out.selection,
            "expected": expected,
        }

    evaluator = Engine(step)
    OODMetrics(output_transform=lambda o: (o["score"], o["is_anomalous"])).attach(evaluator, "ood")
    CollectTensors(lambda o: {"score": o["score"], "is_anomalous": o["is_anomalous"]}).attach(evaluator, SCORES)
    if conditional and not known_condition:
        SelectionAccuracy(output_transform=lambda o: (o["selection"], o["expected"])).attach(
            evaluator, "selection_accuracy"
        )
    return evaluator


def memories_of(model: Autoencoder) -> list[MemoryModule]:
    """The model's memories (none for AEs)."""
    if isinstance(model.bottleneck, MemoryModule):
        return [model.bottleneck]
    if isinstance(model.bottleneck, ConditionalMemory):
        return list(model.bottleneck.memories)
    return []


@torch.no_grad()
def decode_slots(model: Autoencoder, memory: MemoryModule, latent_size: tuple[int, ...]) -> torch.Tensor:
    """Decode each slot (up to :data:`GRID_SLOTS`) as a latent whose every position holds that slot: (n, C, H, W)."""
    model.eval()
    slots = memory.memory[:GRID_SLOTS]
    latent = slots.reshape(*slots.shape, *([1] * len(latent_size))).expand(*slots.shape, *latent_size)
    return model.decoder(latent.contiguous())


def attach_diagnostics(
    evaluator: Engine,
    model: Autoencoder,
    folder: Path,
    tb_logger: TensorboardLogger | None,
    tag: str,
    step: Callable[[], int],
) -> None:
    """After each evaluation save and log input / reconstruction grids and decoded memory slots, addressing weights
    and memory usage.

    Saved in ``folder`` (grids enlarged to at least 256 pixels a side): :data:`RECONSTRUCTIONS_FILE` (the first
    batch's inputs above their reconstructions) and :data:`MEMORY_SLOTS_FILE` (the decoded slots, a block of rows
    per memory; models with a memory only). Logged under ``<tag>/`` at ``step()`` if ``tb_logger`` is given:
    ``input``, ``reconstruction``, ``addressing_weights`` (histogram of the first batch's ŵ), ``slots_used`` (slots
    with a non-zero weight for some test query) and ``memory_<i>_slots``.
    """
    seen: dict[str, Any] = {}

    def collect(engine: Engine) -> None:
        output = engine.state.output
        if engine.state.iteration == 1:
            seen.update(first=output, used=None)
        if output["attention"] is not None:
            used = (output["attention"] > 0).movedim(1, -1).reshape(-1, output["attention"].shape[1]).any(dim=0)
            seen["used"] = used if seen["used"] is None else seen["used"] | used

    def write(_: Engine) -> None:
        from common import plots  # matplotlib loads only when a cell plots

        epoch, first = step(), seen["first"]
        inputs, reconstructions = (denormalise(first[key][:GRID_IMAGES]) for key in ("images", "reconstruction"))
        log_image(tb_logger, f"{tag}/input", plots.visible_grid([inputs], GRID_COLUMNS), epoch)
        log_image(tb_logger, f"{tag}/reconstruction", plots.visible_grid([reconstructions], GRID_COLUMNS), epoch)
        plots.save_png(plots.visible_grid([inputs, reconstructions], GRID_COLUMNS), folder / RECONSTRUCTIONS_FILE)
        if first["attention"] is not None and tb_logger is not None:
            log_histogram(tb_logger, f"{tag}/addressing_weights", first["attention"], epoch)
            tb_logger.writer.add_scalar(f"{tag}/slots_used", int(seen["used"].sum()), epoch)
        latent_size = tuple(model.encoder(first["images"][:1]).shape[2:])
        slots = [denormalise(decode_slots(model, memory, latent_size)) for memory in memories_of(model)]
        for index, decoded in enumerate(slots):
            log_image(tb_logger, f"{tag}/memory_{index}_slots", plots.visible_grid([decoded], GRID_COLUMNS), epoch)
        if slots:
            plots.save_png(plots.visible_grid(slots, GRID_COLUMNS), folder / MEMORY_SLOTS_FILE)

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    evaluator.add_event_handler(Events.COMPLETED, write)


def write_score_plots(evaluation: Evaluation, folder: Path, tb_logger: TensorboardLogger | None, step: int) -> None:
    """``roc-<name>.png`` and ``hist-<name>.png`` in ``folder``: the normal test images against the anomalies of
    ``evaluation`` (its last run), also logged to tensorboard if given (``common.plots.write_score_plots``)."""
    from common import plots  # matplotlib loads only when a cell plots

    collected = evaluation.engine.state.metrics[SCORES]
    scores = {"reconstruction error": collected["score"]}
    names = ("normal", evaluation.name)
    plots.write_score_plots(folder, scores, collected["is_anomalous"].long(), names, tb_logger, step)


@dataclass(frozen=True)
class Evaluation:
    """One evaluator to run after training: its name in tensorboard, engine and test loader."""

    name: str
    engine: Engine
    data: TensorBatchLoader


def metric_values(engine: Engine) -> dict[str, float]:
    """The numbers among an evaluator's metrics (the OOD keys, ``selection_accuracy``) as python floats."""
    return {
        name: float(value)
        for name, value in engine.state.metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


TRAINING = "training"
"""The key of :func:`fit`'s result that holds the steps run and skipped (not an evaluation)."""


def fit(
    model: Autoencoder,
    train_data: TensorBatchLoader | None,
    evaluations: Sequence[Evaluation],
    train: TrainConfig,
    entropy_weight: float,
    folder: Path,
    *,
    seed: int,
    group: Sequence[int] | None = None,
    progress: bool = True,
    freeze_batchnorm: bool = False,
) -> dict[str, dict[str, float]]:
    """Train ``model`` for ``train.epochs`` epochs (Adam), then return each evaluation's metrics of the last epoch.

    The training continues from the newest intact checkpoint in ``folder`` if there is one (exactly where it
    stopped, even part-way through an epoch). The last epoch is always checkpointed, so a finished training is not
    run again: its model is only evaluated.

    Args:
        model: the autoencoder, on the loaders' device.
        train_data: training batches; None evaluates the model as it is (the "freeze" few-shot strategy).
        evaluations: run every ``train.eval_every`` epochs and after the last one; the first also saves and logs
            images (:func:`attach_diagnostics`); each writes the score plots of its last run
            (:func:`write_score_plots`).
        train: epochs, learning rate, evaluation and checkpoint periods.
        entropy_weight: α, the entropy weight of the objective.
        folder: this training's folder (tensorboard events, ``checkpoints/``, the PNG files).
        seed: seed of the epoch reseeding (``common.run.make_reproducible``).
        group: target group of a conditional model.
        progress: show progress bars.
        freeze_batchnorm: train with BatchNorm on its running statistics (see :func:`create_trainer`).

    Returns:
        evaluation name → its metrics (:func:`metric_values`), and ``"training"`` → the steps run and skipped
        (``common.handlers.training_counts``; none without training data).
    """
    if train_data is None:
        if evaluations:
            attach_diagnostics(evaluations[0].engine, model, folder, None, evaluations[0].name, lambda: 0)
        for evaluation in evaluations:
            evaluation.engine.run(evaluation.data)
            write_score_plots(evaluation, folder, None, 0)
        return {**{e.name: metric_values(e.engine) for e in evaluations}, TRAINING: {"steps": 0, "skipped_steps": 0}}
    optimizer = torch.optim.Adam(model.parameters(), lr=train.learning_rate)
    trainer = create_trainer(model, optimizer, entropy_weight, group, freeze_batchnorm)
    handlers = setup_handlers(
        trainer,
        {evaluation.name: (evaluation.engine, evaluation.data) for evaluation in evaluations},
        folder,
        {"model": model, "optimizer": optimizer},
        seed=seed,
        optimizer=optimizer,
        eval_every=train.eval_every,
        log_every=train.log_every,
        checkpoint_every_epochs=train.checkpoint_every,
        n_saved=2,  # the one before the newest, for a resume when the newest is unreadable
        progress=progress,
        resume=True,
    )
    if train.epochs % train.checkpoint_every:  # checkpoint the last epoch too: a finished training is not rerun
        trainer.add_event_handler(Events.COMPLETED, handlers.checkpoint)
    if evaluations:
        first = evaluations[0]
        attach_diagnostics(first.engine, model, folder, handlers.tb_logger, first.name, lambda: trainer.state.epoch)
    try:
        if trainer.state.epoch >= train.epochs:  # a finished training restored from its last checkpoint
            for evaluation in evaluations:
                evaluation.engine.run(evaluation.data)
        else:
            trainer.run(train_data, max_epochs=train.epochs)
        for evaluation in evaluations:
            write_score_plots(evaluation, folder, handlers.tb_logger, trainer.state.epoch)
    finally:
        if handlers.tb_logger is not None:
            handlers.tb_logger.close()
    return {**{e.name: metric_values(e.engine) for e in evaluations}, TRAINING: training_counts(trainer)}


def save_weights(model: nn.Module, path: Path) -> None:
    """Write ``model``'s state_dict to ``path`` atomically."""
    torch_save_atomically(model.state_dict(), path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load the state_dict :func:`save_weights` wrote into ``model`` (``weights_only``); return ``model``.

    Raises:
        MissingDataError: ``path`` does not exist (its cell has not finished).
    """
    if not path.is_file():
        raise MissingDataError(path, "the cell that trains this model has not finished; run it first")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model
