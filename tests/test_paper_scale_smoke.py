"""The paper scale end to end: every experiment of each paper, at the paper's configuration with its paper-size
models, on the miniature real-format data of ``common.fixtures``, in a smoke run (2 steps per training, ≤ 2 batches
per evaluated set), down to ``results.json`` with every table row. Slow: minutes per paper on a CPU, the time of
the paper-size networks' steps (``make test-all``)."""

from __future__ import annotations

import json
import math

import pytest

import main
from common.fixtures.build import write_fixtures
from common.results import RESULTS_FILE
from common.run import CONFIG_FILE
from common.smoke import TABLE_MARK

PAPERS = ("memae", "mchad", "gaussian_ad", "invglow")
OPTIONS = {"memae": ["--seeds", "0"], "mchad": ["--seeds", "0"]}
"""One seed where a paper has several: every table row still has its cells, a third of them (MCHAD, MemAE)."""


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_fixtures(tmp_path_factory.mktemp("fixtures"), PAPERS)


@pytest.mark.slow
@pytest.mark.parametrize("paper", PAPERS)
def test_every_experiment_of_the_paper_scale_runs_to_its_table(paper, fixtures, monkeypatch, tmp_path, capsys):
    for variable, path in fixtures.items():
        monkeypatch.setenv(variable, str(path))
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path))
    assert main.main([paper, "--scale", "paper", "--smoke", "--no-progress", *OPTIONS.get(paper, [])]) == 0
    experiments = main.experiment_names(main.get_paper(paper), "paper")
    for experiment in experiments:
        (run,) = (tmp_path / paper / experiment).iterdir()
        settings = json.loads((run / CONFIG_FILE).read_text())["settings"]
        assert settings["smoke"] is True and settings["scale"] == "paper"
        rows = json.loads((run / RESULTS_FILE).read_text())["rows"]
        assert rows, f"{paper}/{experiment}: an empty table"
        for row in rows:
            assert row["table"].endswith(TABLE_MARK)
            assert row["ours"] is None or math.isfinite(row["ours"]), row
    assert capsys.readouterr().out.count(TABLE_MARK) >= len(experiments)
