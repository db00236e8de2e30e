"""Data-parallel training through ``ignite.distributed`` that follows the one-process trajectory exactly.

A training run in ``R`` processes (``--nproc-per-node R``, or ``torchrun``) must end with the weights and metrics
of the same run in one process with the same global batch, up to float rounding. Four pieces give that:

- **batches**: every global batch of ``common.loaders.TensorBatchLoader`` is split over the ranks in contiguous
  blocks, so the blocks gathered rank after rank are the one-process batch in its order (:class:`Shards`);
- **randomness**: every rank's generators are seeded alike (``common.run``) and every per-sample draw is made
  for the whole global batch, each rank keeping its rows: the loader transforms the whole batch (augmentation,
  dequantisation noise) and :func:`batch_dropout` draws the dropout mask of the whole batch. The generators
  therefore stay in the same state on every rank;
- **BatchNorm** uses the statistics of the global batch (:class:`SyncBatchNorm`, which works on CPUs with gloo,
  where ``torch.nn.SyncBatchNorm`` needs GPUs);
- **objectives** are computed on the global batch: the per-sample outputs are gathered from all ranks
  (:meth:`Shards.gather`), every rank evaluates the same loss, and DDP averages the gradients. Objectives that are
  not means over samples (sums, batch class means, minima over the batch) stay exact this way, and the logged
  losses are those of the global batch.

A trainer runs its forward passes through :func:`prepare_model`'s wrapper (DDP with several ranks); evaluation and
checkpoints use the plain module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import ignite.distributed as idist
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """What a trainer calls as ``replica("forward", x)`` (or any other method of ``model`` by name): in one process
    ``MethodCalls(model)``; with several ranks ``model``'s BatchNorms turned into :class:`SyncBatchNorm` (in place,
    same parameters and state-dict keys) and ``MethodCalls(model)`` wrapped in DDP.

    DDP is built directly rather than through ``idist.auto_model``, which in one process on a machine with several
    GPUs would wrap ``torch.nn.DataParallel`` (per-GPU BatchNorm statistics: another trajectory). DDP copies rank 0's
    parameters and buffers to every rank when it is built, and rank 0's buffers at every forward (which every rank
    computes alike anyway from the global statistics).
    """
    if idist.get_world_size() == 1:
        return MethodCalls(model)
    convert_batchnorm(model)
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(MethodCalls(model), device_ids=device_ids)


@dataclass(frozen=True)
class Shards:
    """How the rows of one global batch are split over the ranks: rank ``r`` holds ``sizes[r]`` rows, rank 0's first.

    With the loaders of ``common.loaders`` the rows gathered in rank order are the one-process batch in its order.
    """

    sizes: tuple[int, ...]
    rank: int

    @classmethod
    def exchange(cls, *counts: int) -> tuple[Shards, ...]:
        """The split of each of several batches (segments) of which this rank holds ``counts`` rows: one collective
        with several ranks, none in one process."""
        rank, world_size = idist.get_rank(), idist.get_world_size()
        if world_size == 1:
            return tuple(cls((count,), 0) for count in counts)
        local = torch.tensor([list(counts)], dtype=torch.int64, device=idist.device())
        table = idist.all_gather(local).cpu().tolist()  # (world_size, segments)
        return tuple(cls(tuple(row[segment] for row in table), rank) for segment in range(len(counts)))

    @property
    def total(self) -> int:
        """Rows of the global batch."""
        return sum(self.sizes)

    @property
    def mine(self) -> slice:
        """This rank's rows in the global batch."""
        start = sum(self.sizes[: self.rank])
        return slice(start, start + self.sizes[self.rank])

    def select(self, keep: torch.Tensor) -> Shards:
        """The split after keeping the rows where ``keep`` (a (total,) bool mask of the global batch) is set."""
        bounds = torch.tensor([0, *self.sizes]).cumsum(0).tolist()
        kept = keep.to("cpu", torch.int64).cumsum(0).tolist()
        counts = [0, *kept]
        return Shards(tuple(counts[bounds[r + 1]] - counts[bounds[r]] for r in range(len(self.sizes))), self.rank)

    def gather(self, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """Each tensor's rows (this rank's, first dimension) gathered from every rank into the global batch.

        Differentiable: every rank computes the same loss from the gathered rows, so the backward pass hands this
        rank the gradient of its own rows times the number of ranks, which DDP's averaging divides again. Tensors
        travel packed in one float64 matrix (integer labels come back exactly); ``None`` stays ``None``.
        """
        if len(self.sizes) == 1:
            return tensors
        present = [tensor for tensor in tensors if tensor is not None]
        for tensor in present:
            if len(tensor) != self.sizes[self.rank]:
                raise ValueError(f"gather: rank {self.rank} holds {self.sizes[self.rank]} rows, got {len(tensor)}")
        columns = [tensor.reshape(len(tensor), -1).to(torch.float64) for tensor in present]
        packed = _GatherRows.apply(torch.cat(columns, dim=1), self.sizes, self.rank)
        parts = iter(packed.split([column.shape[1] for column in columns], dim=1))
        return tuple(
            None if tensor is None else next(parts).reshape(self.total, *tensor.shape[1:]).to(tensor.dtype)
            for tensor in tensors
        )


class _GatherRows(torch.autograd.Function):
    """All-gather of rows (ranks may hold different numbers) whose backward keeps this rank's rows × world size."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, local: torch.Tensor, sizes: tuple[int, ...], rank: int):
        ctx.rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))  # type: ignore[attr-defined]
        ctx.world_size = len(sizes)  # type: ignore[attr-defined]
        longest = max(sizes)
        if longest == 0:  # every rank knows the sizes: all skip the collective alike
            return local.clone()
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: len(local)] = local
        gathered = idist.all_gather(padded)  # (world_size · longest, ...), rank 0's rows first
        return torch.cat([gathered[r * longest : r * longest + size] for r, size in enumerate(sizes)])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        return grad[ctx.rows] * ctx.world_size, None, None  # type: ignore[attr-defined]


_dropout_rows: tuple[torch.Tensor, int] | None = None


@contextlib.contextmanager
def global_batch_rows(segments: Sequence[Shards]) -> Iterator[None]:
    """Within the block, the forward's input holds this rank's rows of the global batch made of ``segments``
    (e.g. the in-distribution batch then the outlier batch, concatenated): :func:`batch_dropout` draws for that
    whole batch. A no-op in one process."""
    global _dropout_rows
    if all(len(segment.sizes) == 1 for segment in segments):
        yield
        return
    rows, offset = [], 0
    for segment in segments:
        rows.append(torch.arange(segment.mine.start, segment.mine.stop) + offset)
        offset += segment.total
    previous, _dropout_rows = _dropout_rows, (torch.cat(rows), offset)
    try:
        yield
    finally:
        _dropout_rows = previous


def batch_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, whose mask is drawn for the whole global batch inside
    :func:`global_batch_rows`, this rank keeping the mask of its rows: each sample gets the mask it gets in one
    process, and the generator advances alike on every rank."""
    if _dropout_rows is None or not training or p == 0:
        return F.dropout(x, p=p, training=training)
    rows, total = _dropout_rows
    if len(rows) != len(x):
        raise RuntimeError(f"batch_dropout: the input has {len(x)} rows, global_batch_rows announced {len(rows)}")
    mask = F.dropout(x.new_ones((total, *x.shape[1:])), p=p, training=True)
    return x * mask[rows.to(x.device)]


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all ranks, on any device and backend (gloo included).

    In training with several ranks, the per-channel mean and variance are those of the union of the ranks'
    batches (one all-gather of every rank's mean, variance and count, combined in float64) and the backward pass
    sums its two per-channel reductions over the ranks (one all-reduce), as ``torch.nn.SyncBatchNorm`` does on
    GPUs. Running statistics are updated from the global statistics (unbiased variance), identically on every
    rank. In one process, or in evaluation, it is ``F.batch_norm`` exactly. Made by :func:`convert_batchnorm`.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and idist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)  # type: ignore[operator]
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias, self.running_mean, self.running_var, self.eps, factor
        )


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        eps: float,
        momentum: float,
    ) -> torch.Tensor:
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.numel() // channels
        if count:
            var, mean = torch.var_mean(x, dim=dims, correction=0)
        else:
            var = mean = x.new_zeros(channels)
        local = torch.cat([mean.double(), var.double(), x.new_full((1,), count, dtype=torch.float64)])
        gathered = idist.all_gather(local[None])  # (world_size, 2C + 1)
        means, variances, counts = gathered[:, :channels], gathered[:, channels:-1], gathered[:, -1:]
        total = counts.sum()
        if total < 2:
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel over all ranks, got {total}")
        global_mean = (counts * means).sum(0) / total
        global_var = (counts * (variances + (means - global_mean).pow(2))).sum(0) / total
        if running_mean is not None and running_var is not None:
            running_mean.mul_(1 - momentum).add_(global_mean.to(running_mean.dtype), alpha=momentum)
            unbiased = global_var * total / (total - 1)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        invstd = torch.rsqrt(global_var + eps).to(x.dtype)
        normalised = (x - global_mean.to(x.dtype).view(shape)) * invstd.view(shape)
        ctx.save_for_backward(normalised, weight, invstd)
        ctx.total = float(total)  # type: ignore[attr-defined]
        out = normalised if weight is None else normalised * weight.view(shape)
        return out if bias is None else out + bias.view(shape)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        normalised, weight, invstd = ctx.saved_tensors  # type: ignore[attr-defined]
        channels = grad.shape[1]
        dims = [0, *range(2, grad.dim())]
        shape = [1, channels] + [1] * (grad.dim() - 2)
        sum_grad, sum_grad_normalised = grad.sum(dims), (grad * normalised).sum(dims)
        both = torch.cat([sum_grad, sum_grad_normalised])
        dist.all_reduce(both)  # sums over the ranks' batches
        mean_grad, mean_grad_normalised = (both / ctx.total).split(channels)  # type: ignore[attr-defined]
        scale = invstd if weight is None else invstd * weight
        grad_input = scale.view(shape) * (grad - mean_grad.view(shape) - normalised * mean_grad_normalised.view(shape))
        grad_weight = sum_grad_normalised if weight is not None else None
        grad_bias = sum_grad if weight is not None else None
        return grad_input, grad_weight, grad_bias, None, None, None, None


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``module`` (in place, recursively) by a :class:`SyncBatchNorm` sharing its
    parameters and buffers; returns ``module`` (or the replacement when ``module`` is itself a BatchNorm)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        converted = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        replacement = convert_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


class MethodCalls(nn.Module):
    """``module`` whose ``forward(name, *args)`` runs ``module.name(*args)``.

    DDP synchronises the gradients of what runs through its forward only; a training that needs another method
    (InvGlow's supervised model trains through ``class_log_densities``) calls it through this wrapper.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, method: str, *args: object) -> object:
        return self.module(*args) if method == "forward" else getattr(self.module, method)(*args)
