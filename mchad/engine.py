"""Ignite engines of MCHAD and its baselines: model and objective per method, trainer, evaluator, metrics, ``fit``.

Paper: Kirchheim, Filax, Ortmeier, "Multi-Class Hypersphere Anomaly Detection", ICPR 2022 (kkirchheim/mchad).

The trainer takes ID batches ``(images, labels)`` or, for the G-variants, ``PairedLoader`` pairs of an ID batch and
an outlier batch (labels −1), concatenated into one forward pass with shared BatchNorm statistics as in the
original (reference mchad.md §2.2). The evaluator scores one pass over the ID test set and every OOD set (labels
−(k + 1), see :mod:`mchad.data`) and computes closed-set accuracy and, per OOD set, the metrics of
``common.metrics`` on ID test ∪ that set (never pooled over OOD sets, §3.1). :func:`fit` is the one way to train
and test one model.

Under ``ignite.distributed`` (several processes) :func:`fit` trains data-parallel on the global batches and
trajectory of one process (``common.data_parallel``): each rank forwards its block of the ID batch and of the
outlier batch; BatchNorm uses the statistics of the whole global batch (``SyncBatchNorm``); dropout masks are drawn
for the whole batch; the embeddings, distances and logits are gathered, so that every objective (also the sums
of the "original" normalisation and II's batch class means) and the logged values are those of the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.handlers import CosineAnnealingScheduler, TensorboardLogger
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from torch import nn
from torch.optim import Adam

from common.data_parallel import MethodCalls, Shards, global_batch_rows, prepare_model
from common.files import torch_save_atomically
from common.handlers import (
    SKIPPED_STEPS,
    attach_progress,
    finite_step,
    log_histogram,
    log_pr_curve,
    setup_handlers,
    training_counts,
)
from common.metrics import CollectTensors, gather_rows, ood_metrics_per_set
from common.run import seed_everything
from common.trained_models import FINAL_MODEL
from mchad.config import DatasetConfig, MethodConfig, TrainConfig
from mchad.data import ImageCache, build_run_data
from mchad.losses import CACLoss, IILoss, LossTerms, MCHADLoss, SoftmaxLoss, batch_class_means, cac_distances
from mchad.models import CenterNet, CenterOutput, ClassAnchors, ClassCenters, RunningCenters, WideResNet
from mchad.pretrained import load_pretrained
from mchad.scores import predict, score

Objective = Callable[[CenterNet, CenterOutput, torch.Tensor], LossTerms]
OUTPUTS = "outputs"  # the evaluator's CollectTensors metric: labels, embeddings and scores of every test image
ID_TEST = "ID test"  # the in-distribution test set in tensorboard tags and plots
EMBEDDING_POINTS = 2000  # points written to tensorboard's projector


def build_model(method: MethodConfig, dataset: DatasetConfig, train: TrainConfig) -> CenterNet:
    """The network of ``method``: a WRN emitting D values, plus centers / anchors / classifier / BatchNorm.

    Loads the pretrained WRN-40-2 when ``train.pretrained`` (a clear error names the missing file).
    """
    n_classes = dataset.n_classes
    n_outputs = method.n_dim or n_classes
    backbone = WideResNet(n_outputs, train.depth, train.widen_factor, train.dropout, dataset.in_channels)
    if train.pretrained:
        load_pretrained(backbone)
    if method.kind == "softmax":
        return CenterNet(backbone)
    if method.kind == "cac":
        return CenterNet(backbone, ClassAnchors(n_classes, method.magnitude))
    if method.kind == "ii":
        return CenterNet(backbone, RunningCenters(n_classes, n_outputs), embedding_norm=nn.BatchNorm1d(n_outputs))
    # Center and G-Center train a linear classifier on z (G-Center still predicts by the nearest center).
    classifier = nn.Linear(n_outputs, n_classes) if method.kind == "center" else None
    return CenterNet(backbone, ClassCenters(n_classes, n_outputs), classifier=classifier)


def build_objective(method: MethodConfig, n_classes: int) -> Objective:
    """``objective(model, output, labels) -> LossTerms`` of ``method`` (mchad.md §1.2 and §2.3)."""
    if method.kind in ("mchad", "center"):
        loss = MCHADLoss(
            method.weight_center,
            method.weight_nll,
            method.weight_outlier,
            method.radius,
            method.margin,
            method.normalization,
        )
        use_logits = method.kind == "center"  # Center: CE on the classifier's logits; MCHAD: on −distances
        return lambda model, output, labels: loss(output.distances, labels, output.logits if use_logits else None)
    if method.kind == "cac":
        cac = CACLoss(
            method.anchor_weight,
            method.weight_nll,
            method.weight_outlier,
            method.margin,
            method.normalization,
            method.cac_index_bug,
        )
        return lambda model, output, labels: cac(cac_distances(output.distances, method.cac_distance_power), labels)
    if method.kind == "ii":
        ii = IILoss(n_classes, method.ii_alpha)

        def ii_objective(model: CenterNet, output: CenterOutput, labels: torch.Tensor) -> LossTerms:
            model.centers.update(*batch_class_means(output.embedding.detach(), labels, n_classes))
            return ii(output.embedding, labels)

        return ii_objective
    if method.kind == "softmax":
        softmax = SoftmaxLoss()
        return lambda model, output, labels: softmax(output.logits, labels)
    raise ValueError(f"unknown method kind {method.kind!r}")


def merge_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of an ID batch, or of an (ID batch, outlier batch) pair concatenated."""
    if isinstance(batch[0], torch.Tensor):
        return batch
    (images, labels), (outlier_images, outlier_labels) = batch
    return torch.cat([images, outlier_images]), torch.cat([labels, outlier_labels])


def segment_sizes(batch: Any) -> tuple[int, ...]:
    """Rows of each part of a batch: ``(B_in,)``, or ``(B_in, B_out)`` for an (ID batch, outlier batch) pair."""
    if isinstance(batch[0], torch.Tensor):
        return (len(batch[1]),)
    return len(batch[0][1]), len(batch[1][1])


def gather_output(
    output: CenterOutput, labels: torch.Tensor, segments: tuple[Shards, ...]
) -> tuple[CenterOutput, torch.Tensor]:
    """The output and labels of the whole global batch (each segment gathered from every rank, in segment order)."""
    if all(len(segment.sizes) == 1 for segment in segments):
        return output, labels
    parts, start = [], 0
    for segment in segments:
        rows = slice(start, start + segment.sizes[segment.rank])
        start = rows.stop
        parts.append(segment.gather(*(None if part is None else part[rows] for part in output), labels[rows]))
    *fields, all_labels = (None if part[0] is None else torch.cat(part) for part in zip(*parts, strict=True))
    return CenterOutput(*fields), all_labels


def create_trainer(
    model: CenterNet,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    method: MethodConfig,
    replica: nn.Module | None = None,
) -> Engine:
    """Trainer whose step returns the total loss, each unweighted term and the batch accuracy on ID samples.

    Non-finite steps are skipped and counted (``common.handlers.finite_step``). For II the running centers are
    reset at the start of every epoch, as the original does (not when resuming part-way through an epoch).

    ``replica`` runs the forward pass: ``common.data_parallel.prepare_model(model, device)``, DDP under several
    processes, whose batches are then each rank's blocks of the global ID and outlier batches; the objective and
    every returned value are of the global batch. Default: ``model`` itself, in one process.
    """
    calls = replica if replica is not None else MethodCalls(model)

    def step(engine: Engine, batch: Any) -> dict[str, float]:
        calls.train()
        images, labels = merge_batch(batch)
        segments = Shards.exchange(*segment_sizes(batch))
        optimizer.zero_grad(set_to_none=True)
        with global_batch_rows(segments):
            output = calls("forward", images)
        output, labels = gather_output(output, labels, segments)
        loss = objective(model, output, labels)
        loss.total.backward()
        finite_step(engine, loss.total, optimizer)
        known = labels >= 0
        correct = predict(output, method.predict_by)[known] == labels[known]
        logged = {"loss": loss.total, **loss.terms, "accuracy": correct.float().mean()}
        values = torch.stack([value.detach().float() for value in logged.values()]).tolist()  # one host sync
        return dict(zip(logged, values, strict=True))

    trainer = Engine(step)
    if method.kind == "ii":

        @trainer.on(Events.EPOCH_STARTED)
        def reset_running_centers(engine: Engine) -> None:
            if engine.state.iteration % engine.state.epoch_length == 0:
                model.centers.reset()

    return trainer


class IDAccuracy(Metric):
    """Closed-set accuracy over the in-distribution samples (label ≥ 0) of ``(predictions, labels)`` batches."""

    @reinit__is_reduced
    def reset(self) -> None:
        self._correct = torch.zeros((), dtype=torch.long, device=self._device)
        self._total = torch.zeros((), dtype=torch.long, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        predictions, labels = output
        known = labels >= 0
        self._correct += (predictions[known] == labels[known]).sum().to(self._device)
        self._total += known.sum().to(self._device)

    @sync_all_reduce("_correct", "_total")
    def compute(self) -> float:
        if self._total == 0:
            raise ValueError("IDAccuracy: no in-distribution sample (label >= 0) was seen")
        return self._correct.item() / self._total.item()


class CenterDistance(Metric):
    """Mean Euclidean distance ||z − μ_y|| of the in-distribution samples to their own class center, from
    ``(squared distances (B, C), labels)`` batches: how far training has contracted each class onto its center."""

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._total = torch.zeros((), dtype=torch.long, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        distances, labels = output
        known = labels >= 0
        own = distances[known].gather(1, labels[known][:, None]).sqrt()
        self._sum += own.sum().to(self._device, torch.float64)
        self._total += known.sum().to(self._device)

    @sync_all_reduce("_sum", "_total")
    def compute(self) -> float:
        if self._total == 0:
            raise ValueError("CenterDistance: no in-distribution sample (label >= 0) was seen")
        return (self._sum / self._total).item()


class PerSetOODMetrics(Metric):
    """``common.metrics`` OOD metrics of every test case ID ∪ OOD set k, from ``(scores, labels)`` batches.

    Labels ≥ 0 are ID test samples, label −(k + 1) marks OOD set k. ``compute`` gathers every rank's samples, sorts
    the ID scores once for all sets (``common.metrics.ood_metrics_per_set``) and returns ``{set name: {metric:
    value}}`` (attach with ``metrics_result_mode="named"``: tensorboard then shows
    ``<evaluator>/<metric name>/<set>/<metric>``).
    """

    def __init__(self, set_names: Sequence[str], output_transform: Callable[[Any], Any] = lambda x: x) -> None:
        self.set_names = tuple(set_names)
        self._batches: list[torch.Tensor] = []
        super().__init__(output_transform, metrics_result_mode="named")

    @reinit__is_reduced
    def reset(self) -> None:
        self._batches = []

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        scores, labels = (value.detach().to("cpu", torch.float64) for value in output)
        self._batches.append(torch.stack([scores, labels], dim=1))

    def compute(self) -> dict[str, dict[str, float]]:
        scores, labels = gather_rows(self._batches, 2).numpy().T
        if not (labels >= 0).any():
            raise NotComputableError("PerSetOODMetrics needs in-distribution samples (labels >= 0)")
        ood = {name: scores[labels == -(k + 1)] for k, name in enumerate(self.set_names)}
        return ood_metrics_per_set(scores[labels >= 0], ood)


def create_evaluator(model: CenterNet, method: MethodConfig, ood_names: Sequence[str]) -> Engine:
    """Evaluator with metrics ``accuracy``, ``center_distance`` (:class:`CenterDistance`; models with centers) and,
    per score kind of ``method``, ``<kind>`` = per-set OOD metrics.

    Its step output: ``{"scores": {kind: (B,)}, "labels": (B,), "predictions": (B,), "embedding": (B, D),
    "distances": (B, C) or None}``.
    """

    @torch.no_grad()
    def step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        model.eval()
        images, labels = batch
        output = model(images)
        return {
            "scores": {kind: score(output, kind) for kind in method.scores},
            "labels": labels,
            "predictions": predict(output, method.predict_by),
            "embedding": output.embedding,
            "distances": output.distances,
        }

    evaluator = Engine(step)
    IDAccuracy(lambda out: (out["predictions"], out["labels"])).attach(evaluator, "accuracy")
    if model.centers is not None:
        CenterDistance(lambda out: (out["distances"], out["labels"])).attach(evaluator, "center_distance")
    for kind in method.scores:
        metric = PerSetOODMetrics(ood_names, lambda out, kind=kind: (out["scores"][kind], out["labels"]))
        metric.attach(evaluator, kind)
    return evaluator


def fit(
    method: MethodConfig,
    dataset: DatasetConfig,
    train: TrainConfig,
    seed: int,
    folder: Path,
    *,
    device: torch.device,
    progress: bool = True,
    cache: ImageCache | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``dataset`` with ``seed`` and test the final weights, as the original (mchad.md §2.2).

    Tensorboard events, checkpoints, the final test's ``roc-<set>.png`` / ``hist-<set>.png`` and the final weights
    (``model.pt``) go to ``folder``; the training continues from the newest intact checkpoint found there, and one
    that had finished is only tested again. ``cache`` shares images between trainings.

    Under ``ignite.distributed`` every rank calls ``fit`` with the same arguments (``device`` = ``idist.device()``):
    the batch sizes of ``train`` are global, each rank trains on its block of every batch through DDP, and the run
    follows the one-process trajectory (module docstring). Rank 0 writes the checkpoints, tensorboard and
    ``model.pt``; every rank returns the same metrics.

    Returns:
        The evaluator's metrics (fractions): ``accuracy`` and, per score kind, ``{OOD set: {metric: value}}``; and the
        training's ``steps`` and ``skipped_steps``.
    """
    seed_everything(seed)
    data = build_run_data(dataset, train, outliers=method.outliers, seed=seed, device=device, cache=cache)
    model = build_model(method, dataset, train).to(device)
    replica = prepare_model(model, device)  # several processes: SyncBatchNorm, DDP
    optimizer = Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    # One cosine decay from lr to 0, stepped every batch: the original's CosineAnnealingWarmRestarts with
    # T_0 = epochs × limit_train_batches (3920 on CIFAR-10, whose epochs have only 391 batches),
    # lr_k = lr·(1 + cos(πk/T_0))/2 at step k.
    period = max(dataset.epochs * (dataset.max_batches or len(data.train)), 2)
    scheduler = CosineAnnealingScheduler(optimizer, "lr", start_value=train.lr, end_value=0.0, cycle_size=period)
    trainer = create_trainer(model, build_objective(method, dataset.n_classes), optimizer, method, replica)
    evaluator = create_evaluator(model, method, data.ood_names)
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
        progress=progress,
        resume=True,
    )
    CollectTensors(collected).attach(evaluator, OUTPUTS)
    evaluator.add_event_handler(Events.COMPLETED, log_test_extras, handlers.tb_logger, trainer, model, method, dataset)
    try:
        # A checkpoint of the finished run must not restart it (Ignite restarts an engine that is done).
        if trainer.state.iteration < dataset.epochs * len(data.train):
            trainer.run(data.train, max_epochs=dataset.epochs)
        if "accuracy" not in evaluator.state.metrics:  # resumed after the last evaluation: test the final weights
            evaluator.run(data.evaluation)
        if handlers.tb_logger is not None:  # rank 0
            outputs = evaluator.state.metrics[OUTPUTS]
            write_score_plots(outputs, method, data.ood_names, folder, handlers.tb_logger, trainer.state.epoch)
    finally:
        if handlers.tb_logger is not None:
            handlers.tb_logger.close()
    if idist.get_rank() == 0:
        torch_save_atomically(model.state_dict(), folder / FINAL_MODEL)
    return {**final_metrics(evaluator), **training_counts(trainer)}


def evaluate(
    model: CenterNet,
    method: MethodConfig,
    dataset: DatasetConfig,
    train: TrainConfig,
    seed: int,
    folder: Path,
    *,
    device: torch.device,
    progress: bool = True,
    cache: ImageCache | None = None,
) -> dict[str, Any]:
    """Test a trained ``model`` as :func:`fit` tests its final weights, without training it.

    ``folder`` receives what :func:`fit` writes there at the end: ``roc-<set>.png`` / ``hist-<set>.png`` and
    ``model.pt``. Under ``ignite.distributed`` every rank calls it, each testing its block of the images.

    Returns:
        :func:`fit`'s metrics, with ``steps`` and ``skipped_steps`` 0.
    """
    data = build_run_data(dataset, train, outliers=False, seed=seed, device=device, cache=cache)
    evaluator = create_evaluator(model, method, data.ood_names)
    CollectTensors(collected).attach(evaluator, OUTPUTS)
    attach_progress(evaluator, desc="test", disable=not progress)
    evaluator.run(data.evaluation)
    if idist.get_rank() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        write_score_plots(evaluator.state.metrics[OUTPUTS], method, data.ood_names, folder, None, 0)
        torch_save_atomically(model.state_dict(), folder / FINAL_MODEL)
    return {**final_metrics(evaluator), "steps": 0, SKIPPED_STEPS: 0}


def final_metrics(evaluator: Engine) -> dict[str, Any]:
    """The evaluator's metrics without the collected outputs: ``accuracy``, ``center_distance``, per score kind."""
    return {name: value for name, value in evaluator.state.metrics.items() if name != OUTPUTS}


def write_score_plots(
    outputs: dict[str, torch.Tensor],
    method: MethodConfig,
    ood_names: Sequence[str],
    folder: Path,
    tb_logger: TensorboardLogger | None,
    step: int,
) -> None:
    """``roc-<set>.png`` and ``hist-<set>.png`` in ``folder`` for every OOD set against the ID test set, each score
    kind of ``method`` a curve / panel, also logged to tensorboard if given (``common.plots.write_score_plots``)."""
    from common import plots  # matplotlib loads only when a cell plots

    labels = outputs["labels"]
    set_ids = torch.where(labels >= 0, 0, -labels)  # label −(k + 1) marks OOD set k, set k + 1 of the plots
    scores = {kind: outputs[f"score/{kind}"] for kind in method.scores}
    plots.write_score_plots(folder, scores, set_ids, (ID_TEST, *ood_names), tb_logger, step)


def collected(output: dict[str, Any]) -> dict[str, torch.Tensor]:
    """What the evaluator's :class:`CollectTensors` keeps of a batch: labels, embeddings, ``score/<kind>``."""
    scores = {f"score/{kind}": value for kind, value in output["scores"].items()}
    return {"labels": output["labels"], "embedding": output["embedding"], **scores}


def log_test_extras(
    evaluator: Engine,
    tb_logger: TensorboardLogger | None,
    trainer: Engine,
    model: CenterNet,
    method: MethodConfig,
    dataset: DatasetConfig,
) -> None:
    """After the final evaluation: score histograms and PR curves per test case, and the embeddings (with the
    centers) for the projector."""
    outputs = evaluator.state.metrics[OUTPUTS]
    step = trainer.state.epoch
    if tb_logger is None or step < dataset.epochs:
        return
    labels = outputs["labels"]
    known = labels >= 0
    names = [name for name, _ in dataset.ood_sets]
    for kind in method.scores:
        scores = outputs[f"score/{kind}"]
        log_histogram(tb_logger, f"scores/{kind}/{ID_TEST}", scores[known], step)
        for k, name in enumerate(names):
            ood = labels == -(k + 1)
            log_histogram(tb_logger, f"scores/{kind}/{name}", scores[ood], step)
            log_pr_curve(tb_logger, f"pr/{kind}/{name}", scores[known | ood], ood[known | ood], step)
    chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:EMBEDDING_POINTS]
    tags = [f"ID {label}" if label >= 0 else names[-label - 1] for label in labels[chosen].tolist()]
    points = outputs["embedding"][chosen]
    if model.centers is not None:
        points = torch.cat([points, model.centers.centers.detach().cpu()])
        tags += [f"center {j}" for j in range(len(model.centers.centers))]
    tb_logger.writer.add_embedding(points.float(), metadata=tags, tag="test embedding", global_step=step)
