"""Run every ``bench/bench_*.py`` (each exposes ``run() -> list[BenchRow]``) and print one markdown table.

``python -m bench`` runs all; ``python -m bench metrics pipeline`` runs the named ones. ``python -m bench steps``
(:mod:`bench.bench_steps`, minutes: seconds per training step of each paper's paper-size model) prints its own
table and runs only when named, as does ``python -m bench invglow_memory`` (:mod:`bench.bench_invglow_memory`, the
peak memory of a paper-size InvGlow step).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bench.timing import ReferenceUnavailable, markdown_table

SEPARATE = ("steps", "invglow_memory")
"""Benchmarks that print their own table (``report() -> str``) and run only when named."""


def main(names: list[str]) -> None:
    available = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    rows, skipped = [], []
    for name in names or [name for name in available if name not in SEPARATE]:
        if name in SEPARATE:
            print(importlib.import_module(f"bench.bench_{name}").report())
            continue
        try:
            rows.extend(importlib.import_module(f"bench.bench_{name}").run())
        except ReferenceUnavailable as reason:
            skipped.append(f"- {name}: skipped, {reason}")
    if rows or skipped:
        print(markdown_table(rows))
        print("\n".join(skipped))


if __name__ == "__main__":
    main(sys.argv[1:])
