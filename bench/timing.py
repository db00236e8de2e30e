"""Timing helpers and the result row every benchmark returns."""

from __future__ import annotations

import resource
import statistics
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


@dataclass(frozen=True)
class SteadyTime:
    """A function's time per call and its minor page faults per call: memory the allocator got fresh from the
    kernel and the call touched first (one fault per 4 KiB page, or per 2 MiB where transparent huge pages apply)."""

    seconds: float
    page_faults: int


def steady_times_interleaved(
    functions: Sequence[Callable[[], object]], calls: int = 3, rounds: int = 3
) -> list[SteadyTime]:
    """Each function's time per call in its own steady state, the functions taking turns in each round.

    A turn is one untimed call, which lets the memory allocator settle after the previous function, then ``calls``
    consecutive timed calls: what a loop over batches sees. The turn's median call is kept, with its page faults;
    the round whose median is the smallest is returned. The allocator's state still carries over from turn to turn
    (glibc raises its thresholds after large frees), so functions whose page faults matter are best timed one per
    process (``bench.bench_gaussian_ad.bench_extraction``).
    """
    turns: list[list[SteadyTime]] = [[] for _ in functions]
    for _ in range(rounds):
        for function, function_turns in zip(functions, turns, strict=True):
            function()
            samples = []
            for _ in range(calls):
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                function()
                seconds = time.perf_counter() - start
                samples.append(SteadyTime(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
            median = statistics.median_low(sample.seconds for sample in samples)
            function_turns.append(next(sample for sample in samples if sample.seconds == median))
    return [min(function_turns, key=lambda sample: sample.seconds) for function_turns in turns]


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
