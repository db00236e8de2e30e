"""Result rows: results.json round trip, newest-run selection and markdown rendering."""

from __future__ import annotations

import json
import math
import os

import pytest

from common.results import ResultRow, RunRecord, latest_results, read_results, render_markdown, write_results


def _row(**overrides: object) -> ResultRow:
    values = {"paper": "memae", "table": "Table 2", "row": "MemAE", "column": "MNIST", "ours": 97.0}
    return ResultRow(**{**values, **overrides})


def test_round_trip_keeps_every_field(tmp_path):
    rows = [_row(paper_value=97.51, spread=0.3, seeds=(0, 1, 2), note="demo"), _row(column="CIFAR-10", ours=None)]
    path = write_results(tmp_path / "run", RunRecord("memae", "table2", rows, {"scale": "demo"}))
    record = read_results(path)
    assert record.rows == rows
    assert record.config == {"scale": "demo"}
    assert not list((tmp_path / "run").glob("*.tmp")), "temporary file left behind"


def test_non_finite_values_are_stored_as_missing(tmp_path):
    path = write_results(tmp_path, RunRecord("p", "e", [_row(ours=math.nan)]))
    assert json.loads(path.read_text())["rows"][0]["ours"] is None


def test_difference_is_ours_minus_paper():
    assert _row(ours=95.0, paper_value=97.5).difference == pytest.approx(-2.5)
    assert _row(paper_value=None).difference is None


def test_latest_results_takes_newest_run_per_experiment(tmp_path):
    old = write_results(tmp_path / "memae/table2/run-a", RunRecord("memae", "table2", [_row(ours=1.0)]))
    new = write_results(tmp_path / "memae/table2/run-b", RunRecord("memae", "table2", [_row(ours=2.0)]))
    write_results(tmp_path / "mchad/main/run-a", RunRecord("mchad", "main", [_row(paper="mchad", ours=3.0)]))
    os.utime(old, (1, 1))
    os.utime(new, (2, 2))
    records = latest_results(tmp_path)
    assert [(r.paper, r.rows[0].ours) for r in records] == [("mchad", 3.0), ("memae", 2.0)]
    assert [r.paper for r in latest_results(tmp_path, "memae")] == ["memae"]


def test_markdown_has_one_table_per_paper_table_with_difference():
    text = render_markdown([_row(paper_value=97.51), _row(table="Table 3", ours=None, paper_value=50.0)])
    assert text.count("### memae:") == 2
    assert "| MemAE | MNIST | 97.51 | 97.00 | – | -0.51 |" in text
    assert "| MemAE | MNIST | 50.00 | – | – | – |" in text


def test_reading_a_foreign_file_names_it(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"results\.json"):
        read_results(path)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    from common import files

    target = files.write_json_atomically(tmp_path / "state.json", {"step": 1})

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        files.write_json_atomically(target, {"step": 2})
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_mean_and_sem_equals_scipy_and_handles_one_value():
    from scipy.stats import sem

    from common.results import mean_and_sem

    values = [0.9, 0.8, 0.95, 0.7]
    mean, spread = mean_and_sem(values)
    assert mean == pytest.approx(sum(values) / 4) and spread == pytest.approx(sem(values, ddof=1))
    assert mean_and_sem([0.5]) == (0.5, None)
    with pytest.raises(ValueError, match="nothing to average"):
        mean_and_sem([])
