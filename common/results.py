"""Result rows: our number beside the paper's, written as ``results.json`` per run and rendered as markdown.

Every experiment returns a list of :class:`ResultRow`; :func:`write_results` stores them in the run folder and
:func:`render_markdown` prints one table per (paper, table) with the paper's value, ours and the difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.files import write_json_atomically

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class ResultRow:
    """One cell of a manuscript table: where it is, our value, the published value and the spread over seeds.

    Values are in the unit the paper prints (e.g. AUROC in percent when the paper prints percent).
    """

    paper: str
    table: str
    row: str
    column: str
    ours: float | None
    paper_value: float | None = None
    spread: float | None = None
    seeds: tuple[int, ...] = ()
    scale: str = "demo"
    note: str = ""

    @property
    def difference(self) -> float | None:
        """ours − paper, or None when either is missing."""
        if self.ours is None or self.paper_value is None:
            return None
        return self.ours - self.paper_value


@dataclass
class RunRecord:
    """What ``results.json`` holds: the rows plus where and how they were produced."""

    paper: str
    experiment: str
    rows: list[ResultRow]
    config: dict[str, Any] = field(default_factory=dict)


def mean_and_sem(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (ddof 1, as pandas' ``sem``); the SEM is None for a single value."""
    if len(values) == 0:
        raise ValueError("values: nothing to average")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, None
    variance = math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def write_results(run_dir: str | Path, record: RunRecord) -> Path:
    """Atomically write ``record`` as ``<run_dir>/results.json`` and return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "paper": record.paper,
        "experiment": record.experiment,
        "config": record.config,
        "rows": [
            {**asdict(row), "ours": _finite_or_none(row.ours), "seeds": list(row.seeds)} for row in record.rows
        ],
    }
    return write_json_atomically(run_dir / RESULTS_FILE, payload)


def read_results(path: str | Path) -> RunRecord:
    """Read a ``results.json`` written by :func:`write_results`."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        rows = [ResultRow(**{**row, "seeds": tuple(row.get("seeds", ()))}) for row in payload["rows"]]
        return RunRecord(payload["paper"], payload["experiment"], rows, payload.get("config", {}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a results file written by this suite ({error})") from error


def latest_results(runs_root: str | Path, paper: str | None = None) -> list[RunRecord]:
    """The newest ``results.json`` of every (paper, experiment) under ``runs_root``.

    Runs are laid out as ``<runs_root>/<paper>/<experiment>/<run>/results.json``; the newest is the one most
    recently written.
    """
    newest: dict[tuple[str, str], tuple[float, Path]] = {}
    for path in Path(runs_root).glob(f"{paper or '*'}/*/*/{RESULTS_FILE}"):
        key = (path.parts[-4], path.parts[-3])
        modified = path.stat().st_mtime
        if key not in newest or modified > newest[key][0]:
            newest[key] = (modified, path)
    return [read_results(path) for _, path in (newest[key] for key in sorted(newest))]


def _format(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(rows: Iterable[ResultRow], digits: int = 2) -> str:
    """Markdown tables, one per (paper, table): row, column, paper value, ours ± spread, difference."""
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in rows:
        groups.setdefault((row.paper, row.table), []).append(row)
    blocks = []
    for (paper, table), table_rows in groups.items():
        scales = sorted({row.scale for row in table_rows})
        lines = [
            f"### {paper}: {table} (scale: {', '.join(scales)})",
            "",
            "| row | column | paper | ours | ± | ours − paper | seeds |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in table_rows:
            lines.append(
                f"| {row.row} | {row.column} | {_format(row.paper_value, digits)} | {_format(row.ours, digits)} "
                f"| {_format(row.spread, digits)} | {_format(row.difference, digits)} | {len(row.seeds) or ''} |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def rows_of(records: Sequence[RunRecord]) -> list[ResultRow]:
    """All rows of several run records, in order."""
    return [row for record in records for row in record.rows]
