"""The overall progress of a run: one bar over the cells with an ETA, or ``[i/N] <cell id>`` lines without bars."""

from __future__ import annotations

import re
import warnings

import pytest

import main
from common.progress import CellProgress
from tests.helpers import toy_paper

TOY_CELLS = 6  # toy/table1: a pretraining per seed and two methods per seed


@pytest.fixture()
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(main.PAPER_MODULES, "toy", main.PaperModule("tests.helpers.toy_paper", "Toy et al."))
    toy_paper.CALLS.clear()
    return ["toy", "--output", str(tmp_path / "runs"), "--device", "cpu"]


def test_one_bar_counts_the_cells_of_a_run(toy, capsys):
    assert main.main(toy) == 0
    captured = capsys.readouterr()
    final = captured.err.split("\r")[-1]
    assert re.match(rf"toy/table1: 100%\|.*\| {TOY_CELLS}/{TOY_CELLS} \[.*cell.*, beta/seed-1\]", final), final
    assert not [line for line in captured.out.splitlines() if re.match(r"\[\d+/\d+\] ", line)]


def test_without_progress_each_cell_starts_with_its_line(toy, capsys):
    assert main.main([*toy, "--no-progress"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("[")]
    assert lines[0] == "[1/6] toy/table1/pretrain/seed-0" and len(lines) == TOY_CELLS
    assert lines[-1].startswith(f"[{TOY_CELLS}/{TOY_CELLS}] toy/table1/")
    assert "cell/s" not in captured.err and "%|" not in captured.err


def test_messages_and_warnings_go_above_the_bar(monkeypatch, capsys):
    lines: list[str] = []
    shown: list[tuple[str, str]] = []  # (warning, what stderr held when it was shown)

    def record(message: Warning, *_: object) -> None:
        shown.append((str(message), capsys.readouterr().err))

    monkeypatch.setattr(warnings, "showwarning", record)  # in place of pytest's own recording
    with CellProgress("p/e", 2, bar=True, log=lines.append) as progress:
        progress.start("p/e/a/seed-0")
        warnings.warn("a cell's warning", UserWarning, stacklevel=1)
        progress.say("p/e/b/seed-0: running in another process; left to it")
        progress.finish()
    assert lines == ["p/e/b/seed-0: running in another process; left to it"]
    [(warning, before)] = shown
    assert warning == "a cell's warning" and "a/seed-0]" in before
    assert not before.rstrip("\r").split("\r")[-1].strip(), "the bar was blanked out before the warning"
    final = capsys.readouterr().err.split("\r")[-1]
    assert final.startswith("p/e:  50%|") and "1/2 [" in final and final.rstrip().endswith("a/seed-0]")
    assert warnings.showwarning is record, "warnings are given back when the bar closes"
