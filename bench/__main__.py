"""Run every ``bench/bench_*.py`` (each exposes ``run() -> list[BenchRow]``) and print one markdown table.

``python -m bench`` runs all; ``python -m bench metrics pipeline`` runs the named ones. ``python -m bench steps``
(:mod:`bench.bench_steps`, minutes: seconds per training step of each paper's paper-size model) prints its own
table and runs only when named, as do ``python -m bench invglow_memory`` (:mod:`bench.bench_invglow_memory`, the
peak memory of a paper-size InvGlow step) and ``python -m bench equivalence`` (:mod:`bench.bench_equivalence`, the
same trained weights scored by each paper's original code and by ours). A benchmark with both ``run()`` and
``report()`` adds its report after the table when named: ``python -m bench pipeline`` (minutes) also prints each
paper-scale training's batch pipeline beside its model step and the margin over an H100's consumption
(:func:`bench.bench_pipeline.report`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bench.timing import ReferenceUnavailable, markdown_table

SEPARATE = ("steps", "invglow_memory", "equivalence")
"""Benchmarks that print their own table (``report() -> str``) and run only when named."""


def main(names: list[str]) -> None:
    available = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    rows, skipped, reports = [], [], []
    for name in names or [name for name in available if name not in SEPARATE]:
        if name in SEPARATE:
            print(importlib.import_module(f"bench.bench_{name}").report())
            continue
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            rows.extend(module.run())
        except ReferenceUnavailable as reason:
            skipped.append(f"- {name}: skipped, {reason}")
            continue
        if name in names and hasattr(module, "report"):
            reports.append(module.report)
    if rows or skipped:
        print(markdown_table(rows))
        print("\n".join(skipped))
    for report in reports:
        print(f"\n{report()}")


if __name__ == "__main__":
    main(sys.argv[1:])
