"""Result rows: results.json round trip, spreads and the published values beside ours."""

from __future__ import annotations

import json
import math

import pytest

from common.results import (
    Published,
    ResultRow,
    RunRecord,
    Spread,
    read_results,
    summary_row,
    write_results,
)


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


@pytest.mark.parametrize(("statistic", "ddof"), [("SEM", 1), ("std", 1), ("std", 0), ("SEM", 0)])
def test_spread_equals_numpy_and_scipy_and_is_none_for_one_value(statistic, ddof):
    import numpy as np
    from scipy.stats import sem

    values = [0.9, 0.8, 0.95, 0.7, 0.81]
    mean, spread = Spread(statistic=statistic, ddof=ddof, over="seeds").of(values)
    expected = sem(values, ddof=ddof) if statistic == "SEM" else np.std(values, ddof=ddof)
    assert mean == pytest.approx(np.mean(values), abs=1e-15) and spread == pytest.approx(expected, abs=1e-15)
    assert Spread(statistic=statistic, ddof=ddof, over="seeds").of([0.5]) == (0.5, None)
    with pytest.raises(ValueError, match="statistic"):
        Spread(statistic="MAD", ddof=1, over="seeds")


def test_summary_row_carries_the_spread_its_kind_and_the_published_value():
    spread = Spread(statistic="SEM", ddof=1, over="seeds × OOD sets")
    row = summary_row([1.0, 3.0], spread, Published(2.5, 0.1), paper="p", table="t", row="r", column="c")
    assert (row.ours, row.spread, row.n) == (2.0, 1.0, 2)
    assert row.spread_kind == "SEM (ddof 1) over seeds × OOD sets"
    assert (row.paper_value, row.paper_spread, row.difference) == (2.5, 0.1, -0.5)


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
