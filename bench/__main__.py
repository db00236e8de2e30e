"""Run every ``bench/bench_*.py`` (each exposes ``run() -> list[BenchRow]``) and print one markdown table.

``python -m bench`` runs all; ``python -m bench metrics pipeline`` runs the named ones.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bench.timing import ReferenceUnavailable, markdown_table


def main(names: list[str]) -> None:
    available = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    rows, skipped = [], []
    for name in names or available:
        try:
            rows.extend(importlib.import_module(f"bench.bench_{name}").run())
        except ReferenceUnavailable as reason:
            skipped.append(f"- {name}: skipped, {reason}")
    print(markdown_table(rows))
    print("\n".join(skipped))


if __name__ == "__main__":
    main(sys.argv[1:])
