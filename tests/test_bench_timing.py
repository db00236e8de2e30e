"""The benchmarks' steady-state timer: its turns and calls, the call it keeps, the page faults it counts."""

from __future__ import annotations

import time

import pytest
import torch

from bench.timing import steady_times_interleaved


def test_each_function_gets_a_settling_call_and_its_timed_calls_per_round() -> None:
    calls = {"a": 0, "b": 0}
    order: list[str] = []

    def counted(name: str):
        def call() -> None:
            calls[name] += 1
            order.append(name)

        return call

    times = steady_times_interleaved([counted("a"), counted("b")], calls=3, rounds=2)
    assert calls == {"a": 8, "b": 8}  # (1 settling + 3 timed) × 2 rounds
    assert order == ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4  # a turn is consecutive calls; turns alternate
    assert all(measured.seconds >= 0 and measured.page_faults >= 0 for measured in times)


def test_page_faults_count_the_memory_a_call_touches_first() -> None:
    size = 64 * 2**20  # above glibc's largest dynamic mmap threshold (32 MiB): every call maps a new block

    def touch_new_block() -> None:
        torch.ones(size // 8, dtype=torch.float64)

    def reuse_everything() -> None:
        sum(range(1000))

    touching, idle = steady_times_interleaved([touch_new_block, reuse_everything], calls=3, rounds=1)
    assert touching.page_faults >= size // (2 * 2**20)  # one per 2 MiB huge page at least, one per 4 KiB page here
    assert idle.page_faults < touching.page_faults / 10


def test_the_median_call_of_the_fastest_round_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    durations = iter([9.0, 3.0, 1.0, 2.0, 9.0, 0.4, 0.2, 0.3])  # settling call, then 3 timed; medians 2.0 and 0.3
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def advance_clock() -> None:
        clock[0] += next(durations)

    (measured,) = steady_times_interleaved([advance_clock], calls=3, rounds=2)
    assert measured.seconds == pytest.approx(0.3)
