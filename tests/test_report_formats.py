"""The manuscripts' tables: grid layout and order, stand-in lines, and the markdown, CSV, LaTeX and JSON exports."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import defaultdict
from dataclasses import replace

import pytest

from common.cells import Settings
from common.report_formats import FORMATS, Table, cell_text, latex_escape, tables, to_csv, to_json, to_latex
from common.results import NOTE_SEPARATOR, STAND_INS, ResultRow, join_notes, row_from_record, stand_in_note

RUN, SAVED = "runs/toy/table1/r", "2025-01-06T14:03:11"


def _row(row: str, column: str, table: str = "Table 2: AUROC (%)", **fields: object) -> ResultRow:
    values = {"paper": "toy", "table": table, "row": row, "column": column, "ours": 90.0, "n": 3}
    return ResultRow(**{**values, **fields})


def _markdown_grid(table: Table) -> list[list[str]]:
    """The grid lines of a markdown table as cells (heading, list and rule left out)."""
    lines = [line for line in FORMATS["md"]([table]).splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_grid_has_the_rows_and_columns_in_the_order_the_experiment_made_them():
    # produced column by column, as Rippel et al.'s level tables: L2 before L1 in both columns, "sum" last
    cells = itertools.product(("SED", "MVG"), ("L2", "L1", "sum"))
    made = [_row(level, column, ours=float(i)) for i, (column, level) in enumerate(cells)]
    other = _row("x", "y", table="Table 1: first in no alphabet")
    found = tables([other, *made, replace(other, row="z")], RUN, SAVED)
    assert [table.title for table in found] == ["Table 1: first in no alphabet", "Table 2: AUROC (%)"]
    assert found[0].row_labels == ["x", "z"]
    grid = _markdown_grid(found[1])
    assert grid == [
        ["", "SED", "MVG"],
        ["L2", "0.00", "3.00"],
        ["L1", "1.00", "4.00"],
        ["sum", "2.00", "5.00"],
    ]


def test_a_missing_cell_is_empty_and_a_repeated_cell_is_an_error():
    (table,) = tables([_row("full", "a → b"), _row("local", "a → b"), _row("local", "ρ")])
    assert _markdown_grid(table)[1] == ["full", "90.00", ""]
    (repeated,) = tables([_row("full", "a"), _row("full", "a")])
    with pytest.raises(ValueError, match="two results for 'full' / 'a'"):
        repeated.grid()


def test_cell_shows_ours_and_the_paper_with_their_spreads():
    assert cell_text(_row("r", "c", ours=97.0, spread=0.5, paper_value=97.51, paper_spread=0.2)) == (
        "97.00 ±0.50 [97.51 ±0.20]"
    )
    assert cell_text(_row("r", "c", ours=None, paper_value=50.0)) == "– [50.00]"
    assert cell_text(_row("r", "c", ours=88.123)) == "88.12"
    assert cell_text(None) == ""


def test_lines_above_the_grid_name_the_run_the_distinct_notes_and_the_spread():
    note = join_notes(stand_in_note([("digits", "MNIST"), ("shapes", "shapes")]), "16×16 input")
    rows = [
        _row("AE", "digits", note=note, spread_kind="std (ddof 1) over seeds"),
        _row("MemAE", "digits", note=join_notes(note, "extra row"), n=1),
    ]
    (table,) = tables(rows, RUN, SAVED)
    assert table.lines_above == [
        f"run folder: {RUN} (saved {SAVED})",
        "stand-ins: digits for MNIST",
        "16×16 input",
        "extra row",
        "cells: ours ± std (ddof 1) over seeds (n = 1–3) [paper ± its spread]; –: not available",
    ]
    text = FORMATS["md"]([table])
    assert text.startswith("### toy: Table 2: AUROC (%) (scale: demo)\n\n- run folder:")
    assert tables(rows)[0].lines_above[0] == "stand-ins: digits for MNIST"  # no run folder known: no line


def test_stand_in_note_lists_only_what_differs():
    assert stand_in_note([("digits", "MNIST"), ("shapes", "CIFAR-10"), ("digits", "MNIST")]) == (
        "stand-ins: digits for MNIST, shapes for CIFAR-10"
    )
    assert stand_in_note([("cifar10", "cifar10")]) == ""
    assert join_notes("", "a", "", "b") == f"a{NOTE_SEPARATOR}b"


def _stand_in_lines(rows: list[ResultRow]) -> list[str]:
    return [note for table in tables(rows) for note in table.notes if note.startswith(STAND_INS)]


def _memae_rows(scale: str) -> list[ResultRow]:
    from memae import experiments
    from memae.config import configure

    metrics = {"AUROC": 0.9, "AUPR-IN": 0.8, "AUPR-OUT": 0.7, "FPR95TPR": 0.2}
    return experiments.image_table(configure(Settings(scale)), defaultdict(lambda: metrics))


def _mchad_rows(scale: str) -> list[ResultRow]:
    from mchad import experiments
    from mchad.config import configure

    config = configure(Settings(scale))
    per_set = {name: dict.fromkeys(experiments.COLUMN_KEYS, 50.0) for name, _ in config.datasets[0].ood_sets}
    return experiments.table(config, defaultdict(lambda: {"accuracy": 90.0, "scores": defaultdict(lambda: per_set)}))


def _gaussian_ad_rows(scale: str) -> list[ResultRow]:
    from gaussian_ad import experiments
    from gaussian_ad.config import configure
    from gaussian_ad.paper import LEVELS, SUM

    aurocs = {"auroc": dict.fromkeys((*LEVELS, SUM), 0.9)}
    return experiments.level_table("table1", configure(Settings(scale)), defaultdict(lambda: aurocs))


@pytest.mark.parametrize(
    ("rows_of", "demo_line"),
    [
        (_memae_rows, "stand-ins: digits for MNIST"),
        (
            _mchad_rows,
            "stand-ins: Digits 0-5 for SVHN, Held-out digits 6-9 for Texture/Tiny Crop/Tiny Resize/LSUN Crop/"
            "LSUN Resize, shapes outliers for tiny-images-300k outliers",
        ),
        (
            _gaussian_ad_rows,
            "stand-ins: synthetic MVTec-layout data for MVTec AD, efficientnet-lite0 for efficientnet-b4",
        ),
    ],
    ids=["memae", "mchad", "gaussian_ad"],
)
def test_every_demo_table_says_what_stood_in_and_no_paper_table_does(rows_of, demo_line):
    demo = rows_of("demo")
    assert set(_stand_in_lines(demo)) == {demo_line} and all(table.notes[0] == demo_line for table in tables(demo))
    assert _stand_in_lines(rows_of("paper")) == []


def test_memae_columns_name_the_data_that_ran_and_keep_the_papers_value():
    demo, paper = _memae_rows("demo"), _memae_rows("paper")
    table1 = {(row.row, row.column): row.paper_value for row in demo if row.table.startswith("Table 1")}
    expected = {("AE", "digits"): 96.19, ("MemAE-nonSpar", "digits"): 97.25, ("MemAE", "digits"): 97.51}
    assert table1 == pytest.approx(expected)
    assert {row.column for row in paper if row.table.startswith("Table 1")} == {"MNIST", "CIFAR-10"}


def _parsed(row: dict[str, str]) -> ResultRow:
    """A :func:`to_csv` line back as a result row (numbers from text, empty = None)."""

    def number(name: str) -> float | None:
        return float(row[name]) if row[name] else None

    numbers = {name: number(name) for name in ("ours", "spread", "paper_value", "paper_spread")}
    seeds = tuple(int(seed) for seed in row["seeds"].split())
    text = {name: row[name] for name in ("paper", "table", "row", "column", "spread_kind", "scale", "note")}
    return ResultRow(**text, **numbers, n=int(row["n"]), seeds=seeds)


ROWS = [
    _row("a_b", "100% & #1", ours=1 / 3, spread=0.125, paper_value=2.5, seeds=(0, 7), note="x; y", spread_kind="SEM"),
    _row("c", "d", table="T {2} $", ours=None, paper_spread=0.1),
]


def test_csv_has_one_line_per_row_with_every_field_the_run_and_its_date():
    lines = list(csv.DictReader(io.StringIO(to_csv(tables(ROWS, RUN, SAVED)))))
    assert [_parsed(line) for line in lines] == ROWS
    assert [(line["run_dir"], line["saved"]) for line in lines] == [(RUN, SAVED)] * 2
    assert [line["difference"] for line in lines] == [str(1 / 3 - 2.5), ""]


def test_json_round_trips_the_rows_of_each_table():
    found = json.loads(to_json(tables(ROWS, RUN, SAVED)))
    assert [(table["table"], table["run_dir"], table["saved"]) for table in found] == [
        ("Table 2: AUROC (%)", RUN, SAVED),
        ("T {2} $", RUN, SAVED),
    ]
    assert [row_from_record(row) for table in found for row in table["rows"]] == ROWS
    assert found[0]["notes"] == ["x", "y"]


def test_latex_has_one_escaped_tabular_per_table():
    text = to_latex(tables(ROWS, RUN, SAVED))
    assert text.count(r"\begin{tabular}{lr}") == 2 and text.count(r"\end{tabular}") == 2
    assert r"a\_b & 0.33 $\pm$ 0.12 [2.50] \\" in text
    assert r" & 100\% \& \#1 \\" in text
    assert r"\caption{toy: T \{2\} \$ (scale: demo). run folder: runs/toy/table1/r" in text
    escaped = r"$\rho$ $\rightarrow$ $\sigma$ \textasciitilde{} \textasciicircum{} \textbackslash{} --"
    assert latex_escape(r"ρ → σ ~ ^ \ –") == escaped
