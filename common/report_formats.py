"""The manuscripts' tables from result rows, as markdown, CSV, LaTeX or JSON (:data:`FORMATS`).

A :class:`Table` holds the rows of one manuscript table in the order its experiment produced them, and the run
folder and date they come from. Its grid has a line per ``row`` and a column per ``column`` of its rows, each in
order of first appearance, as the manuscript prints them; a cell reads ``ours ±spread [paper ±paper's spread]``.
Under the title: the run folder and date, the distinct parts of the rows' notes (at the demo scale first which data
stood in for which) and a legend saying what the ± is.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

from common.results import NOTE_SEPARATOR, ResultRow, row_record

DIGITS = 2
"""Decimals of every number in a rendered table."""


@dataclass(frozen=True)
class Table:
    """The rows of one manuscript table of a run, and where they come from (``saved``: the run's date)."""

    paper: str
    title: str
    rows: tuple[ResultRow, ...]
    run_dir: str = ""
    saved: str = ""

    @property
    def row_labels(self) -> list[str]:
        """The grid's lines, in order of first appearance."""
        return list(dict.fromkeys(row.row for row in self.rows))

    @property
    def column_labels(self) -> list[str]:
        """The grid's columns, in order of first appearance."""
        return list(dict.fromkeys(row.column for row in self.rows))

    def grid(self) -> list[list[ResultRow | None]]:
        """Per line, per column, its result row (None where the table has no such cell).

        Raises:
            ValueError: two rows are the same cell.
        """
        cells: dict[tuple[str, str], ResultRow] = {}
        for row in self.rows:
            if (row.row, row.column) in cells:
                raise ValueError(f"{self.paper}: {self.title}: two results for {row.row!r} / {row.column!r}")
            cells[(row.row, row.column)] = row
        return [[cells.get((line, column)) for column in self.column_labels] for line in self.row_labels]

    @property
    def heading(self) -> str:
        """Paper, title and scale."""
        return f"{self.paper}: {self.title} (scale: {', '.join(dict.fromkeys(row.scale for row in self.rows))})"

    @property
    def source(self) -> str:
        """The line "run folder: DIR (saved DATE)"; empty when the run folder is not known."""
        if not self.run_dir:
            return ""
        return f"run folder: {self.run_dir}" + (f" (saved {self.saved})" if self.saved else "")

    @property
    def notes(self) -> list[str]:
        """The distinct parts of the rows' notes, in order of first appearance."""
        parts = (part for row in self.rows for part in row.note.split(NOTE_SEPARATOR))
        return [part for part in dict.fromkeys(parts) if part]

    @property
    def legend(self) -> str:
        """What a cell shows: our ± (its statistic) and how many values a mean is over, then the paper's."""
        kinds = "; ".join(dict.fromkeys(row.spread_kind for row in self.rows if row.spread_kind))
        counts = sorted({row.n for row in self.rows})
        n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        return f"cells: ours{f' ± {kinds}' if kinds else ''} (n = {n}) [paper ± its spread]; –: not available"

    @property
    def lines_above(self) -> list[str]:
        """The lines between the title and the grid: source, notes, legend."""
        return [line for line in (self.source, *self.notes, self.legend) if line]


def tables(rows: Iterable[ResultRow], run_dir: str = "", saved: str = "") -> list[Table]:
    """``rows`` as one :class:`Table` per (paper, table), in order of first appearance."""
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in rows:
        groups.setdefault((row.paper, row.table), []).append(row)
    return [Table(paper, title, tuple(group), run_dir, saved) for (paper, title), group in groups.items()]


@dataclass(frozen=True)
class CellStyle:
    """How a format writes ± and a missing number."""

    plus_minus: str
    missing: str


MARKDOWN_CELL = CellStyle(" ±", "–")
LATEX_CELL = CellStyle(r" $\pm$ ", "--")


def _number(value: float | None, spread: float | None, style: CellStyle) -> str:
    if value is None:
        return style.missing
    text = f"{value:.{DIGITS}f}"
    return text if spread is None else f"{text}{style.plus_minus}{spread:.{DIGITS}f}"


def cell_text(row: ResultRow | None, style: CellStyle = MARKDOWN_CELL) -> str:
    """``ours ±spread [paper ±paper spread]``; the brackets only where the paper has a value, "" for no cell."""
    if row is None:
        return ""
    ours = _number(row.ours, row.spread, style)
    if row.paper_value is None:
        return ours
    return f"{ours} [{_number(row.paper_value, row.paper_spread, style)}]"


# ----------------------------------------------------------------------------------------------- markdown
def _markdown_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    first, *others = cells
    padded = [first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(others, widths[1:], strict=True))]
    return f"| {' | '.join(padded)} |"


def markdown_table(table: Table) -> str:
    """One table: its heading, the lines above its grid as a list, and the grid with padded columns."""
    lines = [["", *table.column_labels]]
    lines += [[label, *map(cell_text, cells)] for label, cells in zip(table.row_labels, table.grid(), strict=True)]
    lines = [[text.replace("|", r"\|") for text in line] for line in lines]
    widths = [max(3, *(len(line[index]) for line in lines)) for index in range(len(lines[0]))]
    rule = "|" + "|".join([f":{'-' * (widths[0] + 1)}", *(f"{'-' * (width + 1)}:" for width in widths[1:])]) + "|"
    grid = [_markdown_line(lines[0], widths), rule, *(_markdown_line(line, widths) for line in lines[1:])]
    return "\n".join([f"### {table.heading}", "", *(f"- {line}" for line in table.lines_above), "", *grid])


def to_markdown(found: Sequence[Table]) -> str:
    """Every table as :func:`markdown_table`, a blank line between them."""
    return "\n\n".join(markdown_table(table) for table in found)


# ----------------------------------------------------------------------------------------------- CSV and JSON
CSV_FIELDS = (*(item.name for item in fields(ResultRow)), "difference", "run_dir", "saved")
"""The columns of :func:`to_csv`: every :class:`ResultRow` field, ours − paper, the run folder and its date."""


def to_csv(found: Sequence[Table]) -> str:
    """One line per result row with :data:`CSV_FIELDS` (seeds space-separated, a missing number empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for table in found:
        for row in table.rows:
            seeds = " ".join(map(str, row.seeds))
            extra = {"difference": row.difference, "run_dir": table.run_dir, "saved": table.saved}
            writer.writerow({**row_record(row), "seeds": seeds, **extra})
    return buffer.getvalue()


def to_json(found: Sequence[Table]) -> str:
    """A list of tables: paper, title, run folder, date, notes and rows (:func:`~common.results.row_record`)."""
    records = [
        {
            "paper": table.paper,
            "table": table.title,
            "run_dir": table.run_dir,
            "saved": table.saved,
            "notes": table.notes,
            "rows": [row_record(row) for row in table.rows],
        }
        for table in found
    ]
    return json.dumps(records, indent=2, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------- LaTeX
_LATEX_REPLACEMENTS = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "→": r"$\rightarrow$",
    "↔": r"$\leftrightarrow$",
    "×": r"$\times$",
    "±": r"$\pm$",
    "−": "$-$",
    "–": "--",
    "σ": r"$\sigma$",
    "ρ": r"$\rho$",
    "≈": r"$\approx$",
}
_LATEX_SPECIAL = re.compile("|".join(map(re.escape, _LATEX_REPLACEMENTS)))


def latex_escape(text: str) -> str:
    """``text`` for LaTeX: its special characters escaped, the symbols of the tables' labels in math mode."""
    return _LATEX_SPECIAL.sub(lambda match: _LATEX_REPLACEMENTS[match.group()], text)


def latex_table(table: Table) -> str:
    """One ``table`` float: a caption with the title and the lines above the grid, and the grid as a ``tabular``."""
    caption = ". ".join(latex_escape(line) for line in [table.heading, *table.lines_above])
    lines = [" & ".join(["", *map(latex_escape, table.column_labels)]) + r" \\", r"\hline"]
    for label, cells in zip(table.row_labels, table.grid(), strict=True):
        lines.append(" & ".join([latex_escape(label), *(cell_text(cell, LATEX_CELL) for cell in cells)]) + r" \\")
    return "\n".join(
        [
            r"\begin{table}[htbp]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\begin{{tabular}}{{l{'r' * len(table.column_labels)}}}",
            r"\hline",
            *lines,
            r"\hline",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def to_latex(found: Sequence[Table]) -> str:
    """Every table as :func:`latex_table`, a blank line between them."""
    return "\n\n".join(latex_table(table) for table in found)


FORMATS: dict[str, Callable[[Sequence[Table]], str]] = {
    "md": to_markdown,
    "csv": to_csv,
    "latex": to_latex,
    "json": to_json,
}
"""``report --format`` → its renderer."""
