"""InvGlow: peak memory and time of one paper-configuration training step, ours with and without activation
checkpointing (``GlowConfig.memory_saving``), beside the original code.

Rows: ours (the default path), ours checkpointed every ``CHECKPOINT_SEGMENT`` flow steps (what
``memory_saving="checkpoint"`` builds) and every further segment size listed in ``INVGLOW_BENCH_SEGMENTS`` (e.g.
``1,4,16``: the trade-off curve), and the original ``create_glow_model`` (found as in :mod:`bench.bench_invglow`:
``INVGLOW_ORIGINAL``). Batch 64 of 3×32×32, L = 3, K = ``INVGLOW_BENCH_STEPS`` (32), 512 hidden, Adamax.

- Peak memory: each row in a fresh spawned process that builds its model, batch and optimiser and takes one
  untimed step (Adamax's state, the allocator's first blocks), then one measured step. On a CPU the peak resident
  set size is reset first (``5`` written to ``/proc/self/clear_refs`` resets VmHWM; Linux): "growth" is VmHWM
  minus VmRSS before the step, "peak" VmHWM itself (the interpreter, torch, the weights and Adamax's state
  included). With CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, and its growth over
  ``memory_allocated`` before the step.
- Step time: the best of ``INVGLOW_BENCH_REPEAT`` (2) rounds that take one step of every row in turn, in this
  process, after a warm-up round (:func:`bench.timing.best_times_interleaved`).

``python -m bench invglow_memory`` (10–20 minutes on a shared 2-core CPU at K = 32) prints its own table and
the load average before and after.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.bench_invglow import (
    ORIGINAL,
    REPEAT,
    STEPS,
    original_model,
    original_package,
    original_source,
    original_step,
    our_model,
    our_step,
)
from bench.timing import best_times_interleaved
from invglow.models import CHECKPOINT_SEGMENT

ORIGINAL_SIDE = "original"
"""The original code's row; our rows are named by their checkpoint segment (None: the default path)."""

Side = int | str | None


@dataclass(frozen=True)
class StepMemory:
    """Memory of one training step in MB: ``peak`` at its highest, ``growth`` that peak minus the use before it."""

    peak: float
    growth: float


def _segments() -> list[int]:
    """The checkpoint segment sizes measured: ``CHECKPOINT_SEGMENT`` and those of ``INVGLOW_BENCH_SEGMENTS``."""
    listed = os.environ.get("INVGLOW_BENCH_SEGMENTS", "")
    return sorted({CHECKPOINT_SEGMENT, *(int(size) for size in listed.split(",") if size.strip())})


def _device() -> str:
    """Where the steps run: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (VmRSS, VmHWM) in MB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}: the peak RSS is measured on Linux only")
    return int(match.group(1)) / 1024


def _cpu_step_memory(step: Callable[[], None]) -> StepMemory:
    """Peak RSS of one call of ``step``, VmHWM reset just before it."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mb("VmRSS")
    step()
    peak = _status_mb("VmHWM")
    return StepMemory(peak, peak - before)


def _cuda_step_memory(step: Callable[[], None]) -> StepMemory:
    """Peak CUDA memory allocated to tensors during one call of ``step``."""
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    peak = torch.cuda.max_memory_allocated()
    return StepMemory(peak / 2**20, (peak - before) / 2**20)


def _warm_step_memory(step: Callable[[], None]) -> StepMemory:
    """:class:`StepMemory` of the second call of ``step`` (the first allocates the optimiser's state)."""
    step()
    gc.collect()
    return _cuda_step_memory(step) if torch.cuda.is_available() else _cpu_step_memory(step)


def _side_memory(side: Side, source: Path) -> StepMemory:
    """:func:`_warm_step_memory` of one row's step (the original's read from ``source``)."""
    if side != ORIGINAL_SIDE:
        return _warm_step_memory(our_step(our_model(side), _device()))
    with original_package(source) as modules:
        return _warm_step_memory(original_step(original_model(*modules), _device()))


def _memory_in_child(side: Side, source: Path) -> StepMemory:
    """:func:`_side_memory` in a fresh spawned process, so that no other row's allocations share its peak."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_side_memory, side, source).result()


def _step_times(sides: list[Side], source: Path) -> list[float]:
    """Best step time of each row, the rows interleaved; the original's row comes last in ``sides``."""
    steps = [our_step(our_model(side), _device()) for side in sides[:-1]]
    with original_package(source) as modules:
        steps.append(original_step(original_model(*modules), _device()))
        return best_times_interleaved(steps, repeat=REPEAT)


def _row_name(side: Side) -> str:
    """The table's name of a row."""
    if side is None:
        return 'ours, default (`memory_saving="none"`)'
    if side == ORIGINAL_SIDE:
        return "original `create_glow_model`"
    option = ' (`memory_saving="checkpoint"`)' if side == CHECKPOINT_SEGMENT else ""
    return f"ours, checkpoint every {side} flow step{'s' if side != 1 else ''}{option}"


def _table(sides: list[Side], times: list[float], memory: list[StepMemory]) -> list[str]:
    """Markdown rows: step time and memory of each side, with their ratios to ours (time) and the original
    (memory)."""
    ours_time, original = times[0], memory[-1]
    lines = [
        "| step | time (s) | × ours default | peak growth (MB) | × original | peak (MB) | × original |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side, seconds, used in zip(sides, times, memory, strict=True):
        lines.append(
            f"| {_row_name(side)} | {seconds:.2f} | {seconds / ours_time:.2f} | {used.growth:,.0f} "
            f"| {used.growth / original.growth:.2f} | {used.peak:,.0f} | {used.peak / original.peak:.2f} |"
        )
    return lines


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report() -> str:
    """The table of every row's step time and peak memory, under a line saying where and how it was measured."""
    load_before = _load()
    with tempfile.TemporaryDirectory() as folder:
        source = original_source(Path(folder))
        if source is None:
            return f"invglow_memory: skipped, original code not found ({ORIGINAL}): set INVGLOW_ORIGINAL"
        sides: list[Side] = [None, *_segments(), ORIGINAL_SIDE]
        memory = [_memory_in_child(side, source) for side in sides]
        times = _step_times(sides, source)
    kind = "CUDA memory allocated" if torch.cuda.is_available() else "resident set size (VmHWM)"
    header = (
        f"InvGlow training step, batch 64 of 3×32×32, L=3, K={STEPS}, 512 hidden, Adamax, on {_device()} "
        f"({torch.get_num_threads()} threads); memory: {kind}; load average before {load_before}, after {_load()}"
    )
    return "\n".join([header, "", *_table(sides, times, memory)])
