"""Result rows: our number beside the paper's, written as ``results.json`` per run.

Every experiment returns a list of :class:`ResultRow`; :func:`write_results` stores them in the run folder and
:mod:`common.report_formats` renders them as the manuscript's tables (markdown, CSV, LaTeX, JSON). A row's ``note``
holds parts separated by :data:`NOTE_SEPARATOR` (:func:`join_notes`), each listed once under its table; at the demo
scale the first says which data stood in for the paper's (:func:`stand_in_note`).
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
class Published:
    """A number a manuscript prints, with its own ± where it gives one (None when it does not)."""

    value: float | None
    spread: float | None = None


NOT_PUBLISHED = Published(None)


@dataclass(frozen=True, kw_only=True)
class Spread:
    """Which ± a table shows: the statistic, its ddof and what it runs over (e.g. "seeds × OOD sets")."""

    statistic: str  # "SEM" or "std"
    ddof: int
    over: str

    def __post_init__(self) -> None:
        if self.statistic not in ("SEM", "std"):
            raise ValueError(f"statistic: expected 'SEM' or 'std', got {self.statistic!r}")

    def describe(self) -> str:
        """E.g. "SEM (ddof 1) over seeds × OOD sets"."""
        return f"{self.statistic} (ddof {self.ddof}) over {self.over}"

    def of(self, values: Sequence[float]) -> tuple[float, float | None]:
        """Mean of ``values`` and this spread of them (None for a single value)."""
        if len(values) == 0:
            raise ValueError("values: nothing to average")
        mean = math.fsum(values) / len(values)
        if len(values) < 2 or len(values) <= self.ddof:
            return mean, None
        variance = math.fsum((value - mean) ** 2 for value in values) / (len(values) - self.ddof)
        return mean, math.sqrt(variance / len(values) if self.statistic == "SEM" else variance)


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One cell of a manuscript table: where it is, our value and its spread, and the published value and its ±.

    Values are in the unit the paper prints (e.g. AUROC in percent when the paper prints percent). ``spread_kind``
    says what ``spread`` is (:meth:`Spread.describe`); ``n`` is how many values the mean is over. ``row`` and
    ``column`` name what ran (e.g. the demo's data); ``note`` holds :func:`join_notes` parts.
    """

    paper: str
    table: str
    row: str
    column: str
    ours: float | None
    spread: float | None = None
    spread_kind: str = ""
    n: int = 1
    paper_value: float | None = None
    paper_spread: float | None = None
    seeds: tuple[int, ...] = ()
    scale: str = "demo"
    note: str = ""

    @property
    def difference(self) -> float | None:
        """ours − paper, or None when either is missing."""
        if self.ours is None or self.paper_value is None:
            return None
        return self.ours - self.paper_value


def summary_row(
    values: Sequence[float], spread: Spread, published: Published = NOT_PUBLISHED, **where: Any
) -> ResultRow:
    """A row whose ``ours`` is the mean of ``values`` with ``spread`` of them, beside the published value.

    ``where`` holds the other :class:`ResultRow` fields (paper, table, row, column, seeds, scale, note).
    """
    mean, value_spread = spread.of(values)
    return ResultRow(
        ours=mean,
        spread=value_spread,
        spread_kind=spread.describe(),
        n=len(values),
        paper_value=published.value,
        paper_spread=published.spread,
        **where,
    )


NOTE_SEPARATOR = "; "
"""Between the parts of a :attr:`ResultRow.note`; each distinct part is listed once under the row's table."""


def join_notes(*parts: str) -> str:
    """The non-empty ``parts`` as one note, in order."""
    return NOTE_SEPARATOR.join(part for part in parts if part)


STAND_INS = "stand-ins: "
"""How a :func:`stand_in_note` starts."""


def stand_in_note(pairs: Iterable[tuple[str, str]]) -> str:
    """Which data (or backbone) stood in for the paper's: "stand-ins: digits for MNIST, shapes for CIFAR-10".

    ``pairs`` are (what ran, what the paper used); pairs that name the same thing are left out, so the note is empty
    when the paper's own data ran (the paper scale).
    """
    differing = [f"{ran} for {published}" for ran, published in dict.fromkeys(pairs) if ran != published]
    return STAND_INS + ", ".join(differing) if differing else ""


@dataclass
class RunRecord:
    """What ``results.json`` holds: the rows plus where and how they were produced."""

    paper: str
    experiment: str
    rows: list[ResultRow]
    config: dict[str, Any] = field(default_factory=dict)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def row_record(row: ResultRow) -> dict[str, Any]:
    """``row`` as JSON values: every field, ``seeds`` as a list, a non-finite ``ours`` as None."""
    return {**asdict(row), "ours": _finite_or_none(row.ours), "seeds": list(row.seeds)}


def row_from_record(record: dict[str, Any]) -> ResultRow:
    """The :class:`ResultRow` of a :func:`row_record`."""
    return ResultRow(**{**record, "seeds": tuple(record.get("seeds", ()))})


def write_results(run_dir: str | Path, record: RunRecord) -> Path:
    """Atomically write ``record`` as ``<run_dir>/results.json`` and return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "paper": record.paper,
        "experiment": record.experiment,
        "config": record.config,
        "rows": [row_record(row) for row in record.rows],
    }
    return write_json_atomically(run_dir / RESULTS_FILE, payload)


def read_results(path: str | Path) -> RunRecord:
    """Read a ``results.json`` written by :func:`write_results`."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        rows = [row_from_record(row) for row in payload["rows"]]
        return RunRecord(payload["paper"], payload["experiment"], rows, payload.get("config", {}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a results file written by this suite ({error})") from error
