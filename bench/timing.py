"""Timing helpers and the result row every benchmark returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class ReferenceUnavailable(RuntimeError):
    """The reference implementation a benchmark compares against is not on this machine (the message says how)."""


@dataclass(frozen=True)
class BenchRow:
    """One comparison: our time against the reference's, and how far apart the results are."""

    benchmark: str
    ours_s: float
    reference: str
    reference_s: float
    max_abs_diff: float | None = None
    note: str = ""

    @property
    def speedup(self) -> float:
        """How many times faster ours is than the reference (> 1 means faster)."""
        return self.reference_s / self.ours_s


def best_time(function: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Smallest wall time in seconds of ``repeat`` calls of ``function`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times_interleaved(functions: Sequence[Callable[[], object]], repeat: int = 5, warmup: int = 1) -> list[float]:
    """Smallest wall time of each function over ``repeat`` rounds that call every function once, in turn.

    For comparisons on a shared machine: a load that comes and goes hits every function of a round alike, where
    timing one function's calls after the other's would give the load to whichever ran during it.
    """
    for _ in range(warmup):
        for function in functions:
            function()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeat):
        for function, function_times in zip(functions, times, strict=True):
            start = time.perf_counter()
            function()
            function_times.append(time.perf_counter() - start)
    return [min(function_times) for function_times in times]


def markdown_table(rows: list[BenchRow]) -> str:
    """Render rows as a markdown table (times in ms, speed-up as ×)."""
    lines = [
        "| benchmark | ours (ms) | reference | reference (ms) | speed-up | max abs diff | note |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        diff = "" if row.max_abs_diff is None else f"{row.max_abs_diff:.1e}"
        lines.append(
            f"| {row.benchmark} | {row.ours_s * 1e3:.1f} | {row.reference} | {row.reference_s * 1e3:.1f} "
            f"| {row.speedup:.1f}× | {diff} | {row.note} |"
        )
    return "\n".join(lines)
