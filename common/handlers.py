"""Ignite handlers shared by the papers: progress bars, tensorboard, checkpoints that resume exactly, a NaN guard.

``setup_handlers`` wires a training run in one call (what ``setup_common_training_handlers`` and
``setup_tb_logging`` do in Ignite's examples); each piece also works alone.

Checkpoints hold everything a run needs to continue exactly where it stopped, even part-way through an epoch
(``common.run.make_reproducible`` explains how); they are written atomically and load with ``weights_only=True``.
Beside each ``checkpoint_<iteration>.pt`` lies ``checkpoint_<iteration>.pt.sha256``, the digest of what was written,
checked whenever the checkpoint is read, so a file changed on disk afterwards (a flipped bit) is refused instead
of resuming with altered weights. A full disk while saving leaves the previous checkpoints as they were.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import ignite.distributed as idist
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import (
    Checkpoint,
    DiskSaver,
    ParamScheduler,
    ProgressBar,
    TensorboardLogger,
)
from ignite.handlers.tensorboard_logger import WeightsHistHandler
from tensorboardX.proto.summary_pb2 import Summary
from torch import nn

from common.errors import DataError, MissingDataError
from common.files import fsync_folder, is_disk_full, new_file_mode, write_text_atomically
from common.metrics import OOD_METRIC_KEYS
from common.run import make_reproducible
from common.smoke import limit_training

PROGRESS_ENV = "OOD_REPRO_PROGRESS"  # "0" turns progress bars off
SKIPPED_STEPS = "skipped_steps"  # trainer.state counter written by finite_step
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)\.pt")
CHECKSUM_SUFFIX = ".sha256"
_CHUNK_BYTES = 1 << 20
_PNG_CHANNELS = {1: None, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}  # OpenCV writes BGR(A)


def attach_progress(
    engine: Engine,
    *,
    metric_names: str | list[str] | None = None,
    output_transform: Callable[[Any], Any] | None = None,
    desc: str | None = None,
    disable: bool | None = None,
    **tqdm_kwargs: Any,
) -> ProgressBar | None:
    """Attach Ignite's tqdm ``ProgressBar`` to ``engine`` on rank 0 (returns None on the other ranks).

    Args:
        engine: trainer or evaluator.
        metric_names: ``engine.state.metrics`` to show, or ``"all"``.
        output_transform: maps the engine output to a number or a dict of numbers to show.
        desc: text before the bar (default: Ignite's "Epoch [e/E]").
        disable: hide the bar; default: hidden when the environment sets ``OOD_REPRO_PROGRESS=0``.
        tqdm_kwargs: passed to tqdm, e.g. ``file=``.
    """
    if idist.get_rank() != 0:
        return None
    if disable is None:
        disable = os.environ.get(PROGRESS_ENV, "1") == "0"
    if desc is not None:
        tqdm_kwargs["desc"] = desc
    bar = ProgressBar(persist=False, disable=disable, **tqdm_kwargs)
    bar.attach(engine, metric_names=metric_names, output_transform=output_transform)
    return bar


def output_scalars(output: Any) -> dict[str, float]:
    """A training step's output as named floats: a mapping as is, a single number as ``{"loss": value}``."""
    if isinstance(output, Mapping):
        return {str(name): float(value) for name, value in output.items()}
    if isinstance(output, (int, float)) or (isinstance(output, torch.Tensor) and output.numel() == 1):
        return {"loss": float(output)}
    raise TypeError(f"a training step must return a number or a mapping of numbers, got {type(output).__name__}")


def open_tensorboard(run_dir: Path) -> TensorboardLogger:
    """Ignite's ``TensorboardLogger`` (which writes with tensorboardX) on ``run_dir``.

    Tags may hold spaces (OOD set names such as "Held-out digits 6-9"): tensorboardX replaces them with ``_``
    and would log one line per scalar saying so, which buries a run's output; that message is silenced.
    """
    logging.getLogger("tensorboardX.summary").setLevel(logging.WARNING)
    return TensorboardLogger(log_dir=str(run_dir))


def setup_tensorboard(
    run_dir: Path,
    trainer: Engine,
    optimizer: torch.optim.Optimizer | None = None,
    evaluators: Mapping[str, Engine] | None = None,
    log_every: int = 10,
    histogram_model: nn.Module | None = None,
) -> TensorboardLogger | None:
    """Log a run to tensorboard (with tensorboardX) in ``run_dir``, on rank 0 (None on the other ranks).

    Written: ``train/<name>`` for the step outputs (see ``output_scalars``) and ``train/skipped_steps`` if the
    trainer counts them, every ``log_every`` iterations; ``lr/group_<i>`` at the same pace; ``<evaluator>/<metric>``
    after each evaluation, at the trainer's epoch; weight histograms of ``histogram_model`` every epoch. The metrics
    of :data:`PERCENT_METRICS` are written in percent, as the tables print them. Close the logger when done.
    """
    if idist.get_rank() != 0:
        return None
    tb_logger = open_tensorboard(run_dir)
    counted = [SKIPPED_STEPS] if SKIPPED_STEPS in trainer.state_dict_user_keys else None
    every = Events.ITERATION_COMPLETED(every=log_every)
    tb_logger.attach_output_handler(
        trainer, every, tag="train", output_transform=_output_scalars_in_percent, state_attributes=counted
    )
    if optimizer is not None:
        tb_logger.attach_opt_params_handler(trainer, Events.ITERATION_STARTED(every=log_every), optimizer)
    for name, evaluator in (evaluators or {}).items():
        evaluator.add_event_handler(Events.COMPLETED, _log_scalar_metrics, tb_logger, name, trainer)
    if histogram_model is not None:
        tb_logger.attach(trainer, WeightsHistHandler(histogram_model), Events.EPOCH_COMPLETED)
    return tb_logger


def _log_scalar_metrics(evaluator: Engine, tb_logger: TensorboardLogger, tag: str, trainer: Engine) -> None:
    """Log every number among ``evaluator``'s metrics as ``<tag>/<name>`` at the trainer's epoch.

    Metrics that are not numbers (``common.metrics.CollectTensors``' per-sample tensors) are left out, where
    Ignite's output handler would log one scalar per sample.
    """
    for key, value in in_percent(scalar_metrics(evaluator.state.metrics, tag)).items():
        tb_logger.writer.add_scalar(key, value, trainer.state.epoch)


PERCENT_METRICS = frozenset({*OOD_METRIC_KEYS, "accuracy", "selection_accuracy"})
"""Metrics computed as fractions whose tables print percent; tensorboard shows them in percent too (same tags)."""


def in_percent(scalars: Mapping[str, float]) -> dict[str, float]:
    """``scalars`` by tag, those whose tag ends in a :data:`PERCENT_METRICS` name times 100."""
    return {tag: 100 * value if tag.rsplit("/", 1)[-1] in PERCENT_METRICS else value for tag, value in scalars.items()}


def _output_scalars_in_percent(output: Any) -> dict[str, float]:
    return in_percent(output_scalars(output))


def scalar_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numbers in ``metrics`` (nested mappings flattened), keyed ``<prefix>/<name>[/<key>...]``."""
    found = {}
    for name, value in metrics.items():
        key = f"{prefix}/{name}"
        if isinstance(value, Mapping):
            found.update(scalar_metrics(value, key))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            found[key] = float(value)
        elif isinstance(value, torch.Tensor) and value.ndim == 0:
            found[key] = float(value.item())
    return found


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0) -> torch.Tensor:
    """Tile images (N, C, H, W) into one (C, rows·(H+p)+p, nrow·(W+p)+p) image, row by row, ``p`` = padding."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) with N > 0, got {tuple(images.shape)}")
    n, c, h, w = images.shape
    columns = min(nrow, n)
    rows = math.ceil(n / columns)
    blank = images.new_full((rows * columns - n, c, h, w), pad_value)
    tiles = F.pad(torch.cat([images, blank]), (padding, 0, padding, 0), value=pad_value)
    grid = tiles.reshape(rows, columns, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + padding), columns * (w + padding))
    return F.pad(grid, (0, padding, 0, padding), value=pad_value)


def as_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W), C = 1 (gray), 3 (RGB) or 4 (RGBA), uint8 or float in [0, 1], as uint8 (floats clamped)."""
    if images.ndim != 4 or images.shape[1] not in _PNG_CHANNELS:
        raise ValueError(f"images must have shape (N, C, H, W) with C in 1, 3, 4, got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        images = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images


def encode_png(image: torch.Tensor) -> bytes:
    """One uint8 image (C, H, W), C = 1, 3 (RGB) or 4 (RGBA), as the bytes of a PNG file."""
    pixels = image.cpu().permute(1, 2, 0).numpy()
    conversion = _PNG_CHANNELS[pixels.shape[2]]
    if conversion is not None:
        pixels = cv2.cvtColor(pixels, conversion)
    encoded, png = cv2.imencode(".png", pixels)
    if not encoded:
        raise RuntimeError(f"OpenCV could not encode a {tuple(image.shape)} image as PNG")
    return png.tobytes()


def log_image(tb_logger: TensorboardLogger | None, tag: str, image: torch.Tensor, step: int) -> None:
    """Log one uint8 image (C, H, W), C = 1 (gray), 3 (RGB) or 4 (RGBA), as a PNG."""
    if tb_logger is None:
        return
    channels, height, width = image.shape
    summary = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=encode_png(image))
    # tensorboardX's add_image needs Pillow, which the suite does not use itself: write the same Summary it would.
    tb_logger.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=summary)]), step)


def log_images(tb_logger: TensorboardLogger | None, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
    """Log images (N, C, H, W), C = 1 (gray), 3 (RGB) or 4 (RGBA), uint8 or float in [0, 1], as one PNG grid."""
    if tb_logger is not None:
        log_image(tb_logger, tag, image_grid(as_uint8_images(images).cpu(), nrow=nrow), step)


def log_histogram(
    tb_logger: TensorboardLogger | None, tag: str, values: torch.Tensor, step: int, bins: int = 64
) -> None:
    """Log the histogram of the finite ``values`` (any shape), e.g. the anomaly scores of a test set, in ``bins``
    equal bins from their minimum to their maximum; nothing when none is finite (a diverged model's likelihoods:
    tensorboard cannot bin infinities or NaN).

    The bins are computed here: tensorboardX's own binning fails on finite values of large magnitude (its bin
    edges overflow for |x| ≳ 1e20, "The histogram is empty"), which an early Glow's log-likelihoods reach.
    """
    values = values.detach().cpu().double().flatten()
    finite = values[torch.isfinite(values)].numpy()
    if tb_logger is None or not len(finite):
        return
    low, high = float(finite.min()), float(finite.max())
    scale = max(abs(low), abs(high)) or 1.0  # bin x / scale in [-1, 1], where the edges cannot overflow
    span = (low / scale, high / scale) if high > low else (low / scale - 0.5, low / scale + 0.5)
    counts, edges = np.histogram(finite / scale, bins=bins if high > low else 1, range=span)
    with np.errstate(over="ignore"):
        sums = float(finite.sum()), float(np.square(finite).sum())
    tag = re.sub(r"[^-/\w.]", "_", tag).lstrip("/")  # as tensorboardX's add_histogram names it ("ID test": ID_test)
    edges = (edges[1:] * scale).tolist()
    tb_logger.writer.add_histogram_raw(tag, low, high, len(finite), *sums, edges, counts.tolist(), global_step=step)


def log_pr_curve(
    tb_logger: TensorboardLogger | None,
    tag: str,
    scores: torch.Tensor,
    is_anomalous: torch.Tensor,
    step: int,
    num_thresholds: int = 127,
) -> None:
    """Log the precision-recall curve of anomaly scores (higher = more anomalous; anomalous = positive class).

    Tensorboard takes probabilities, so the scores are min-max scaled to [0, 1]: the ranking, and with it the
    curve, is unchanged up to tensorboard's ``num_thresholds`` equally spaced thresholds.
    """
    if tb_logger is None:
        return
    scores = scores.detach().cpu().double().flatten()
    span = (scores.max() - scores.min()).clamp_min(torch.finfo(torch.float64).tiny)
    scaled = ((scores - scores.min()) / span).numpy()
    labels = is_anomalous.detach().cpu().flatten().bool().numpy()
    tb_logger.writer.add_pr_curve(tag, labels, scaled, step, num_thresholds=num_thresholds)


class NonFiniteTrainingError(FloatingPointError):
    """Training cannot go on usefully: every step so far was skipped as non-finite, or an update made weights
    non-finite. The message says which and what to change."""


class _RotatingDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` writing a checksum beside each checkpoint, naming the file when the disk is full,
    and whose rotation passes over a file that is gone already.

    A run resumed from an older checkpoint (the newest was unreadable) inherits that checkpoint's list of files, which
    names files the original run had already rotated away.
    """

    def remove(self, filename: str) -> None:
        if idist.get_rank() == self.save_on_rank:
            path = Path(self.dirname) / filename
            path.unlink(missing_ok=True)
            checksum_path(path).unlink(missing_ok=True)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        """Write through a hashing stream into a temporary file, sync it, rename it, then write its checksum.

        A stale checksum of an earlier file of that name is removed before the rename, so a crash before the new
        checksum is written leaves a checkpoint without one (read unverified), never one with a wrong one.
        """
        path = Path(path)
        descriptor, temporary = tempfile.mkstemp(dir=self.dirname, prefix=f".{path.name}.", suffix=".tmp")
        digest = hashlib.sha256()
        try:
            os.fchmod(descriptor, new_file_mode())
            with os.fdopen(descriptor, "wb") as handle:
                func(checkpoint, _HashingWriter(handle, digest), **self.kwargs)
                handle.flush()
                os.fsync(handle.fileno())
            checksum_path(path).unlink(missing_ok=True)
            os.replace(temporary, path)
            write_text_atomically(checksum_path(path), f"{digest.hexdigest()}  {path.name}\n")
        except BaseException as error:
            Path(temporary).unlink(missing_ok=True)
            if is_disk_full(error):
                older = [str(p) for p in checkpoints_newest_first(Path(self.dirname).parent) if p != path]
                kept = f"the newest earlier checkpoint, {older[0]}, is intact" if older else "no earlier checkpoint"
                raise DataError(
                    path, f"could not be written: the disk is full (no space left on device); {kept}"
                ) from error
            raise
        fsync_folder(path.parent)


class _HashingWriter:
    """A binary file that also feeds every byte written to a hash (torch.save writes sequentially)."""

    def __init__(self, handle: Any, digest: Any) -> None:
        self._handle, self._digest = handle, digest

    def write(self, data: Any) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


def checksum_path(checkpoint: Path) -> Path:
    """``<checkpoint>.sha256``: the sha256 of ``checkpoint`` as written (``sha256sum`` format)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CHECKSUM_SUFFIX)


def setup_checkpoint(
    run_dir: Path,
    to_save: Mapping[str, Any],
    trainer: Engine,
    *,
    every_epochs: int | None = 1,
    every_iterations: int | None = None,
    n_saved: int | None = 2,
) -> Checkpoint:
    """Save ``to_save`` to ``run_dir/checkpoints/checkpoint_<iteration>.pt`` (atomic writes, rank 0).

    Args:
        run_dir: the run's folder; existing checkpoints there are kept (resuming into the same run).
        to_save: objects with ``state_dict``/``load_state_dict``: the trainer, model, optimizer, scheduler,
            ``RandomStates``. The checkpointer adds its own list of files, so a resumed run keeps rotating them.
        trainer: engine whose iterations and epochs trigger the saves.
        every_epochs: save at the end of every that many epochs (None: never).
        every_iterations: also save every that many iterations, so a killed run loses little (None: never).
        n_saved: how many of the newest files to keep (None: all).
    """
    if every_epochs is None and every_iterations is None:
        raise ValueError("setup_checkpoint needs every_epochs or every_iterations")
    checkpoint = Checkpoint(
        dict(to_save),
        _RotatingDiskSaver(Path(run_dir) / CHECKPOINT_DIR, atomic=True, require_empty=False),
        n_saved=n_saved,
        global_step_transform=lambda engine, _: engine.state.iteration,
        filename_pattern="checkpoint_{global_step}.{ext}",
        include_self=True,
    )
    events = [Events.EPOCH_COMPLETED(every=every_epochs)] if every_epochs is not None else []
    if every_iterations is not None:
        events.append(Events.ITERATION_COMPLETED(every=every_iterations))
    for event in events:
        trainer.add_event_handler(event, checkpoint)
    return checkpoint


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """The checkpoints of ``run_dir``, highest iteration first."""
    found = [
        (int(match.group(1)), path)
        for path in (Path(run_dir) / CHECKPOINT_DIR).glob("checkpoint_*.pt")
        if (match := _CHECKPOINT_NAME.fullmatch(path.name))
    ]
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of ``run_dir`` with the highest iteration, or None if it has none."""
    found = checkpoints_newest_first(run_dir)
    return found[0] if found else None


def resume_from(checkpoint_path: Path, to_load: Mapping[str, Any]) -> None:
    """Load a checkpoint into ``to_load`` (same keys as saved) with ``torch.load(weights_only=True)``.

    Raises:
        MissingDataError: the file does not exist.
        DataError: torch cannot read it as a weights-only checkpoint.
    """
    Checkpoint.load_objects(to_load=dict(to_load), checkpoint=_read_checkpoint(Path(checkpoint_path)))


def resume_from_newest_intact(run_dir: Path, to_load: Mapping[str, Any]) -> Path | None:
    """Load the newest checkpoint of ``run_dir`` that reads back whole; return it (None: there is none).

    A checkpoint that cannot be read (truncated by a crash, a full disk) is passed over with a warning naming it,
    and the next older one is tried, so a damaged newest file costs the steps since the one before it.
    """
    for path in checkpoints_newest_first(run_dir):
        try:
            checkpoint = _read_checkpoint(path)
        except DataError as error:
            warnings.warn(f"{error}; trying an older checkpoint", stacklevel=2)
            continue
        Checkpoint.load_objects(to_load=dict(to_load), checkpoint=checkpoint)
        return path
    return None


def _read_checkpoint(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise MissingDataError(path, "Pass a checkpoint_<iteration>.pt from a run's checkpoints/ folder.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:  # foreign, truncated, empty file
        raise DataError(path, f"not a checkpoint torch can load with weights_only=True ({exc})") from exc
    _verify_checksum(path)  # torch reads most damaged files without complaint, with altered tensors
    return checkpoint


def _verify_checksum(path: Path) -> None:
    """Compare ``path`` with the digest in its ``.sha256`` file, if it has one (older checkpoints have none).

    Raises:
        DataError: the digests differ, or the checksum file is unreadable.
    """
    recorded_file = checksum_path(path)
    if not recorded_file.is_file():
        return
    try:
        recorded = recorded_file.read_text(encoding="ascii").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError) as error:
        raise DataError(recorded_file, f"not a readable sha256 checksum file ({error})") from error
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != recorded:
        raise DataError(
            path,
            f"damaged since it was written: its sha256 is {digest.hexdigest()}, {recorded_file.name} recorded "
            f"{recorded}",
        )


def count_skipped_steps(engine: Engine) -> None:
    """Give ``engine.state`` the ``skipped_steps`` counter of ``finite_step``, kept in checkpoints (starts at 0)."""
    if SKIPPED_STEPS not in engine.state_dict_user_keys:
        engine.state_dict_user_keys.append(SKIPPED_STEPS)
    setattr(engine.state, SKIPPED_STEPS, 0)


def fail_if_every_step_skipped(trainer: Engine) -> None:
    """Make a training run fail with :class:`NonFiniteTrainingError` at the end of an epoch, or of the run, when
    every step so far was skipped by ``finite_step``: such a model is untrained, and its metrics must not be
    reported as results. ``setup_handlers`` attaches it; the check runs before that epoch's evaluation."""
    for event in (Events.EPOCH_COMPLETED, Events.COMPLETED):
        if not trainer.has_event_handler(_fail_if_every_step_skipped, event):
            trainer.add_event_handler(event, _fail_if_every_step_skipped)


def _fail_if_every_step_skipped(engine: Engine) -> None:
    skipped, steps = getattr(engine.state, SKIPPED_STEPS, 0), engine.state.iteration
    if steps > 0 and skipped >= steps:
        raise NonFiniteTrainingError(
            f"every one of the {steps} training steps so far was skipped ({SKIPPED_STEPS}={skipped}): each had a "
            "non-finite loss or gradient, so the model is untrained; lower the learning rate, check the inputs "
            "for NaN or inf, or turn mixed precision off"
        )


def training_counts(engine: Engine) -> dict[str, int]:
    """What a cell result should record of a training: ``{"steps": iterations run, "skipped_steps": skipped}``."""
    return {"steps": int(engine.state.iteration), SKIPPED_STEPS: int(getattr(engine.state, SKIPPED_STEPS, 0))}


def finite_step(
    engine: Engine,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
) -> bool:
    """Take the optimizer step only if the loss and all gradients are finite; otherwise drop it and count it.

    Use it in a process function in place of ``optimizer.step()``, after ``loss.backward()``. The check costs one
    host sync (the largest absolute gradient of every parameter, computed with one foreach kernel), and a step taken
    one more (the largest absolute value of every parameter afterwards). A skipped step zeroes the gradients and
    adds one to ``engine.state.skipped_steps`` (see ``count_skipped_steps``). InvGlow's reference code skips such
    steps (invglow notes, section 3); ``ignite.handlers.TerminateOnNan`` would end the run instead.

    Returns:
        Whether the optimizer stepped.

    Raises:
        NonFiniteTrainingError: the loss and gradients were finite but the update made parameters non-finite (it
            overflowed); the weights cannot be trusted any more, so the run stops at this step.
    """
    if not hasattr(engine.state, SKIPPED_STEPS):
        raise RuntimeError("finite_step needs the counter: call count_skipped_steps(trainer) when creating it")
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    checks = [torch.isfinite(loss.detach()).all()]
    if grads:
        checks.append(torch.isfinite(torch.stack(torch._foreach_norm(grads, ord=math.inf))).all())
    finite = bool(torch.stack([check.to(checks[0].device) for check in checks]).all())
    if finite:
        optimizer.step()
        _check_parameters_finite(engine, optimizer)
    else:
        optimizer.zero_grad(set_to_none=True)
        setattr(engine.state, SKIPPED_STEPS, getattr(engine.state, SKIPPED_STEPS) + 1)
    return finite


def _check_parameters_finite(engine: Engine, optimizer: torch.optim.Optimizer) -> None:
    """Raise NonFiniteTrainingError naming the parameters an optimizer step left non-finite (one host sync)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.is_floating_point()]
    if not params:
        return
    largest = torch.stack([norm.to(params[0].device) for norm in torch._foreach_norm(params, ord=math.inf)])
    if bool(torch.isfinite(largest).all()):
        return
    position = {id(p): (g, i) for g, group in enumerate(optimizer.param_groups) for i, p in enumerate(group["params"])}
    bad = [
        f"group {position[id(p)][0]} tensor {position[id(p)][1]} {tuple(p.shape)}"
        for p, value in zip(params, largest.tolist(), strict=True)
        if not math.isfinite(value)
    ]
    raise NonFiniteTrainingError(
        f"iteration {engine.state.iteration}: the optimizer step made {len(bad)} of {len(params)} parameter tensors "
        f"non-finite ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}) although the loss and every gradient "
        "were finite: the update overflowed; lower the learning rate or clip the gradients"
    )


@dataclass(frozen=True)
class TrainingHandlers:
    """What ``setup_handlers`` made: the checkpointer, everything it saves, and the tensorboard logger."""

    checkpoint: Checkpoint
    to_save: dict[str, Any]
    tb_logger: TensorboardLogger | None  # None on ranks other than 0; close it at the end of the run


def setup_handlers(
    trainer: Engine,
    evaluators: Mapping[str, tuple[Engine, Iterable]],
    run_dir: Path,
    to_save: Mapping[str, Any],
    *,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: ParamScheduler | None = None,
    eval_every: int = 1,
    log_every: int = 10,
    checkpoint_every_epochs: int | None = 1,
    checkpoint_every_iterations: int | None = None,
    n_saved: int | None = 2,
    histogram_model: nn.Module | None = None,
    progress: bool | None = None,
    resume: bool | Path = False,
) -> TrainingHandlers:
    """Wire a training run: scheduler, reproducible epochs, progress, evaluation, tensorboard, checkpoints, resume.

    In a smoke run (``common.smoke``) the training ends after 2 steps, and is then evaluated.

    A run in which every step is skipped as non-finite fails (``fail_if_every_step_skipped``); record
    ``training_counts(trainer)`` in the cell's result so that its skipped steps are reported.

    Args:
        trainer: the training engine; its step returns a number or a dict of numbers.
        evaluators: name → (evaluator, data), run every ``eval_every`` epochs and at the end of the run (unless the
            last epoch was just evaluated); their metrics are logged as ``<name>/<metric>``.
        run_dir: the run's folder (``common.run.create_run_dir``).
        to_save: model(s), optimizer, scaler, ... for the checkpoint; "trainer", "rng" and "lr_scheduler" are
            added here.
        seed: the run's seed; every epoch is reseeded from it (``common.run.seed_epoch``).
        optimizer: its learning rates are logged as ``lr/group_<i>``.
        lr_scheduler: an Ignite parameter scheduler (wrap torch ones in ``ignite.handlers.LRScheduler``), stepped
            at ITERATION_STARTED as Ignite prescribes.
        eval_every, log_every: evaluation period in epochs, tensorboard period in iterations.
        checkpoint_every_epochs, checkpoint_every_iterations, n_saved: see ``setup_checkpoint``.
        histogram_model: log the histograms of its weights every epoch.
        progress: show progress bars (default: unless ``OOD_REPRO_PROGRESS=0``).
        resume: a checkpoint file to continue from, or True for the newest intact one in ``run_dir`` if there is
            one (see ``resume_from_newest_intact``); ``trainer.run`` then picks up at its iteration.
    """
    added = {"trainer", "rng", "lr_scheduler", "checkpointer"} & set(to_save)
    if added:
        raise ValueError(f"to_save must not contain {sorted(added)}: setup_handlers adds these entries")
    count_skipped_steps(trainer)
    fail_if_every_step_skipped(trainer)
    limit_training(trainer)
    if lr_scheduler is not None:
        trainer.add_event_handler(Events.ITERATION_STARTED, lr_scheduler)
    saved = {"trainer": trainer, **to_save, "rng": make_reproducible(trainer, seed)}
    if lr_scheduler is not None:
        saved["lr_scheduler"] = lr_scheduler
    disable = None if progress is None else not progress
    attach_progress(trainer, metric_names="all", output_transform=output_scalars, desc="train", disable=disable)
    for name, (evaluator, _) in evaluators.items():
        attach_progress(evaluator, desc=name, disable=disable)
    _attach_evaluation(trainer, evaluators, eval_every)
    engines = {name: evaluator for name, (evaluator, _) in evaluators.items()}
    tb_logger = setup_tensorboard(run_dir, trainer, optimizer, engines, log_every, histogram_model)
    checkpoint = setup_checkpoint(
        run_dir,
        saved,
        trainer,
        every_epochs=checkpoint_every_epochs,
        every_iterations=checkpoint_every_iterations,
        n_saved=n_saved,
    )
    if resume is True:
        resume_from_newest_intact(run_dir, {**saved, "checkpointer": checkpoint})
    elif resume:
        resume_from(resume, {**saved, "checkpointer": checkpoint})
    return TrainingHandlers(checkpoint, saved, tb_logger)


def _attach_evaluation(trainer: Engine, evaluators: Mapping[str, tuple[Engine, Iterable]], every: int) -> None:
    if not evaluators:
        return

    def evaluate(_: Engine) -> None:
        for evaluator, data in evaluators.values():
            evaluator.run(data)

    def not_just_evaluated(engine: Engine, _: int) -> bool:
        return engine.state.iteration % (every * engine.state.epoch_length) != 0

    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=every), evaluate)
    trainer.add_event_handler(Events.COMPLETED(event_filter=not_just_evaluated), evaluate)
