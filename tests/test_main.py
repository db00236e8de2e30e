"""The command line: running cells, listing them, shards, report, resume rules and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import folder_locations
import main
from common.errors import UsageError
from common.report_formats import CSV_FIELDS
from common.smoke import TABLE_MARK as SMOKE_MARK
from tests.helpers import toy_paper


@pytest.fixture()
def toy(monkeypatch, tmp_path):
    """Only the toy paper exists; runs go under tmp_path/runs."""
    monkeypatch.setattr(main, "PAPER_MODULES", {"toy": main.PaperModule("tests.helpers.toy_paper", "Toy et al.")})
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path / "runs"))
    toy_paper.CALLS.clear()
    return tmp_path / "runs"


PRETRAIN_SEED_1_EPOCHS_2 = ["--run-name", "r", "--epochs", "2", "--seeds", "1", "--cells", "toy/table1/pretrain/*"]


def _rows(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["rows"]


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_running_a_paper_writes_cells_results_and_prints_the_table(toy, capsys):
    assert main.main(["toy", "table1", "--epochs", "2", "--seeds", "0", "1"]) == 0
    (run_dir,) = (toy / "toy" / "table1").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["paper"], config["experiment"]) == ("toy", "table1")
    assert config["settings"] == {
        "scale": "demo", "seeds": [0, 1], "epochs": 2, "smoke": False, "overrides": [], "checkpoints": None
    }  # fmt: skip
    assert config["config"] == {"seeds": [0, 1], "epochs": 2}
    assert (run_dir / "alpha" / "seed-1" / "result.json").is_file()
    assert [row["ours"] for row in _rows(run_dir)] == [57.0, 67.0]
    out = capsys.readouterr().out
    assert "- cells: ours ± std (ddof 1) over seeds (n = 2) [paper ± its spread]" in out
    assert "| alpha | 57.00 ±7.07 [90.00 ±1.50] |" in out and "| beta  |               67.00 ±7.07 |" in out
    saved = json.loads((run_dir / "config.json").read_text())["saved"]
    assert f"- run folder: {run_dir} (saved {saved})" in out
    assert main.main(["report"]) == 0
    report = capsys.readouterr().out
    assert "| alpha | 57.00 ±7.07 [90.00 ±1.50] |" in report and f"- run folder: {run_dir} (saved {saved})" in report


def test_list_cells_shows_ids_states_and_needs_and_creates_nothing(toy, capsys):
    assert main.main(["toy", "--list-cells"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "toy/table1/pretrain/seed-0  pending  30 steps, 120 images"
    assert "toy/table1/beta/seed-1  pending  50 images  needs toy/table1/pretrain/seed-1" in lines
    assert lines[-1] == "toy/table1: 6 cells, 60 steps, 440 images"  # 2 pretrainings of 3 epochs, 4 evaluations
    assert not toy.exists()
    assert main.main(["toy", "--run-name", "r", "--cells", "toy/table1/alpha/seed-0"]) == 0
    capsys.readouterr()
    assert main.main(["toy", "--run-name", "r", "--list-cells"]) == 0
    states = dict(line.split("  ")[:2] for line in capsys.readouterr().out.splitlines()[:-1])
    assert [cell for cell, state in states.items() if state == "done"] == [
        "toy/table1/pretrain/seed-0",
        "toy/table1/alpha/seed-0",
    ]


def test_cells_runs_the_matching_cells_and_their_prerequisites_only(toy, capsys):
    assert main.main(["toy", "--run-name", "r", "--cells", "toy/table1/beta/*"]) == 0
    assert toy_paper.CALLS == [
        "toy/table1/pretrain/seed-0",
        "toy/table1/pretrain/seed-1",
        "toy/table1/beta/seed-0",
        "toy/table1/beta/seed-1",
    ]
    out = capsys.readouterr().out
    assert "toy/table1: 4 of 6 cells finished" in out and "report --runs" in out
    assert not (toy / "toy/table1/r/results.json").exists()
    assert main.main(["toy", "--run-name", "r", "--cells", "toy/table1/nothing"]) == 2
    assert "--cells toy/table1/nothing: matches no cell of toy/table1" in capsys.readouterr().err


def test_two_shards_into_one_folder_give_the_table_of_one_unsharded_run(toy, capsys):
    assert main.main(["toy", "--run-name", "whole"]) == 0
    for shard in ("1/2", "2/2"):
        assert main.main(["toy", "--run-name", "sharded", "--shard", shard]) == 0
    sharded = toy / "toy/table1/sharded"
    (sharded / "results.json").unlink()  # assembled by the second shard; report must assemble it again
    assert main.main(["report", "--runs", str(sharded)]) == 0
    assert _rows(sharded) == _rows(toy / "toy/table1/whole")
    assert main.main(["toy", "--shard", "1/2"]) == 2
    assert "--shard needs --run-name" in capsys.readouterr().err


def test_report_takes_the_newest_run_and_says_which_runs_are_unfinished(toy, capsys):
    assert main.main(["toy", "--run-name", "a"]) == 0
    assert main.main(["toy", "--run-name", "b", "--cells", "toy/table1/alpha/seed-0"]) == 0
    capsys.readouterr()
    assert main.main(["report"]) == 0
    out = capsys.readouterr().out
    assert "toy/table1 (" in out and "4 of 6 cells not finished" in out and "--resume" in out
    assert main.main(["report", "--runs", str(toy / "toy/table1/a")]) == 0
    assert "| alpha | " in capsys.readouterr().out


def test_report_exports_csv_latex_and_json_and_names_unfinished_runs_on_stderr(toy, capsys):
    assert main.main(["toy", "--run-name", "a"]) == 0
    assert main.main(["toy", "--run-name", "b", "--cells", "toy/table1/alpha/seed-0"]) == 0  # newer, unfinished
    run_dir = toy / "toy/table1/a"
    saved = json.loads((run_dir / "config.json").read_text())["saved"]
    capsys.readouterr()
    assert main.main(["report", "--runs", str(run_dir), "--format", "csv"]) == 0
    lines = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = [(row["row"], row["column"], row["ours"], str(run_dir), saved) for row in _rows(run_dir)]
    assert [(line["row"], line["column"], float(line["ours"]), line["run_dir"], line["saved"]) for line in lines] == (
        expected
    )
    assert main.main(["report", "--runs", str(run_dir), "--format", "json"]) == 0
    (table,) = json.loads(capsys.readouterr().out)
    assert table["rows"] == _rows(run_dir) and (table["run_dir"], table["saved"]) == (str(run_dir), saved)
    assert main.main(["report", "--runs", str(run_dir), "--format", "latex"]) == 0
    latex = capsys.readouterr().out
    assert latex.count(r"\begin{tabular}{lr}") == 1 and r"alpha & 58.00 $\pm$ 7.07 [90.00 $\pm$ 1.50] \\" in latex
    assert main.main(["report", "--format", "csv"]) == 0  # the newest run is b, unfinished
    out, err = capsys.readouterr()
    assert out.strip() == ",".join(CSV_FIELDS) and "toy/table1 (" in err and "4 of 6 cells not finished" in err


def test_report_refuses_an_unknown_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main(["report", "--format", "xml"])
    assert exit_.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err
    with pytest.raises(UsageError, match="format 'xml': expected one of md, csv, latex, json"):
        main.report(tmp_path, format="xml")


def test_report_takes_papers_and_experiments_in_run_order(tmp_path):
    recorded = [("memae", "image_table"), ("invglow", "local_vs_semantic"), ("mchad", "main_table")]
    for paper, experiment in [*recorded, ("invglow", "tables")]:
        folder = tmp_path / paper / experiment / "r"
        folder.mkdir(parents=True)
        record = {"paper": paper, "experiment": experiment, "settings": {}, "saved": "2025-01-06T14:03:11"}
        (folder / "config.json").write_text(json.dumps(record))
    runs, skipped = main._newest_runs(tmp_path, None)
    assert [(run.paper, run.experiment) for run in runs] == [
        ("invglow", "tables"),
        ("invglow", "local_vs_semantic"),
        ("mchad", "main_table"),
        ("memae", "image_table"),
    ]
    assert skipped == [] and {run.saved for run in runs} == {"2025-01-06T14:03:11"}


def test_resume_restores_the_recorded_options(toy, capsys):
    assert main.main(["toy", *PRETRAIN_SEED_1_EPOCHS_2]) == 0
    run_dir = toy / "toy/table1/r"
    assert main.main(["toy", "--resume", str(run_dir / "pretrain" / "seed-1")]) == 0  # a folder inside the run
    assert [row["ours"] for row in _rows(run_dir)] == [62.0, 72.0]  # seed 1, 2 epochs: 0.5 + 0.01·12 (+ 0.1)
    assert json.loads((run_dir / "config.json").read_text())["settings"]["epochs"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "3"], "--epochs 3 conflicts with the run's recorded epochs 2"),
        (["--seeds", "0", "1"], "--seeds 0 1 conflicts with the run's recorded seeds 1"),
        (["--scale", "paper"], "--scale paper conflicts with the run's recorded scale demo"),
        (["--smoke"], "--smoke conflicts with the run's recorded smoke False"),
        (["table9"], "is a run of toy/table1, not toy/table9; nothing in it was touched"),
    ],
)
def test_resume_refuses_conflicting_options_and_touches_nothing(toy, capsys, args, message):
    assert main.main(["toy", *PRETRAIN_SEED_1_EPOCHS_2]) == 0
    run_dir = toy / "toy/table1/r"
    before = _files(run_dir)
    capsys.readouterr()
    assert main.main(["toy", *args, "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert _files(run_dir) == before


def test_resume_refuses_a_foreign_or_missing_folder(toy, tmp_path, capsys):
    foreign = tmp_path / "runs/mchad/main_table/x"
    foreign.mkdir(parents=True)
    (foreign / "config.json").write_text(json.dumps({"paper": "mchad", "experiment": "main_table", "settings": {}}))
    (foreign / "results.json").write_text('{"rows": [1, 2, 3]}')
    before = _files(foreign)
    assert main.main(["toy", "--resume", str(foreign)]) == 2
    assert "is a run of mchad/main_table, not toy; nothing in it was touched" in capsys.readouterr().err
    assert _files(foreign) == before
    assert main.main(["toy", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main.main(["toy", "--resume", str(tmp_path / "runs")]) == 2  # the runs root is not a run
    assert "not inside a run folder" in capsys.readouterr().err


def test_default_command_runs_every_paper_at_the_demo_scale_and_says_how_long_each_took(toy, capsys):
    assert main.main([]) == 0
    assert list(toy.glob("toy/table1/*/results.json"))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"wall time: toy \d+ s; all \d+ s", last), last
    assert not (toy / "toy" / "table9").exists(), "the paper-only experiment is left out at the demo scale"


def test_unknown_names_and_scales_give_one_line(toy, capsys):
    assert main.main(["toy", "table7"]) == 2
    assert "paper 'toy' has no experiment 'table7'; experiments: table1, table9" in capsys.readouterr().err
    assert main.main(["toy", "table9"]) == 2
    assert "toy/table9 has no 'demo' scale; scales: paper" in capsys.readouterr().err
    assert main.main(["toy", "--epochs", "0"]) == 2
    assert "epochs must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main.main(["toy", "--scale", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_python_api_takes_run_options_as_keywords(toy):
    rows = main.run_paper("toy", ["table1"], main.RunOptions(seeds=[0], output=str(toy), progress=False))
    assert [row.row for row in rows] == ["alpha", "beta"] and rows[0].seeds == (0,)


def test_download_reports_manual_datasets_and_unknown_names(tmp_path, capsys):
    assert main.main(["download", "mvtec", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "mvtec" in err and str(tmp_path / "mvtec") in err
    assert main.main(["download", "imagenet-42"]) == 2
    assert "unknown dataset(s) imagenet-42" in capsys.readouterr().err
    assert main.main(["download", "digits", "--root", str(tmp_path)]) == 0


def test_all_checks_every_paper_before_running_any(toy, monkeypatch, capsys):
    strict = main.PaperModule("tests.helpers.strict_paper", "Strict et al.")
    monkeypatch.setitem(main.PAPER_MODULES, "strict", strict)
    assert main.main(["all", "--epochs", "2"]) == 2
    assert "strict trains nothing: --epochs does not apply" in capsys.readouterr().err
    assert not toy.exists(), "the toy paper, first in line, must not have run"


def test_list_cells_honours_cells_and_shard_and_checks_a_named_run(toy, capsys):
    assert main.main(["toy", "--list-cells", "--cells", "toy/table1/beta/*", "--run-name", "r", "--shard", "2/2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "toy/table1/beta/seed-1  pending  50 images  needs toy/table1/pretrain/seed-1",
        "toy/table1: 1 cell, 50 images",
    ]
    assert main.main(["toy", "--run-name", "r", "--epochs", "2", "--cells", "toy/table1/pretrain/seed-0"]) == 0
    capsys.readouterr()
    assert main.main(["toy", "--run-name", "r", "--list-cells"]) == 2  # the run has 2 epochs, the listing 3
    assert "was started with" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0", "0"], "seeds must differ, got 0 0"),
        (["--resume", "x", "--run-name", "y"], "--resume and --run-name both name the run folder"),
    ],
)
def test_contradictory_options_give_one_line(toy, capsys, args, message):
    assert main.main(["toy", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_report_keeps_runs_of_each_scale_apart(toy, capsys):
    assert main.main(["toy", "table1", "--run-name", "demo-run"]) == 0
    assert main.main(["toy", "table1", "--scale", "paper", "--run-name", "paper-run"]) == 0  # newer, other scale
    capsys.readouterr()
    assert main.main(["report"]) == 0
    out = capsys.readouterr().out
    for run in ("demo-run", "paper-run"):
        assert f"- run folder: {toy / 'toy/table1' / run} (saved " in out


def test_a_smoke_run_is_marked_in_its_config_tables_and_report_and_kept_apart(toy, capsys):
    assert main.main(["toy", "table1", "--run-name", "full"]) == 0
    assert main.main(["toy", "table1", "--smoke", "--run-name", "smoke"]) == 0  # newer, but a smoke run
    smoke_run = toy / "toy/table1/smoke"
    assert json.loads((smoke_run / "config.json").read_text())["settings"]["smoke"] is True
    assert all(row["table"].endswith(SMOKE_MARK) for row in _rows(smoke_run))
    assert not any(row["table"].endswith(SMOKE_MARK) for row in _rows(toy / "toy/table1/full"))
    capsys.readouterr()
    assert main.main(["report"]) == 0
    out = capsys.readouterr().out
    assert f"- run folder: {toy / 'toy/table1/full'} (saved " in out and f"- run folder: {smoke_run} (saved " in out
    assert out.count(SMOKE_MARK) == 1
    assert main.main(["toy", "--resume", str(smoke_run), "--cells", "toy/table1/alpha/*"]) == 0  # stays a smoke run


def test_cell_ids_of_every_paper_are_the_same_in_another_process(tmp_path):
    """Ids must not depend on anything a process draws (hash seeds, dict order of sets): compare two processes."""

    def listing(hash_seed: str) -> str:
        code = "import main\nfor name in main.PAPER_MODULES: print(main.list_paper_cells(name))"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OOD_REPRO_DATA": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", code], cwd=folder_locations.REPOSITORY, env=env,
                              capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
        return done.stdout

    first = listing("1")
    assert first == listing("2")
    ids = [line.split()[0] for line in first.splitlines()]
    assert len(ids) == len(set(ids)) and {i.split("/")[0] for i in ids} == set(main.PAPER_MODULES)


def test_report_names_a_damaged_cell_result_and_goes_on_with_the_other_runs(toy, capsys):
    assert main.main(["toy", "table1", "--run-name", "good"]) == 0
    assert main.main(["toy", "table1", "--scale", "paper", "--run-name", "damaged"]) == 0
    (toy / "toy/table1/damaged/alpha/seed-1/result.json").write_text("{not json")
    capsys.readouterr()
    assert main.main(["report"]) == 0
    out = capsys.readouterr().out
    assert "toy/table1 (" in out and "alpha/seed-1/result.json: not a cell result written by this suite" in out
    assert f"- run folder: {toy / 'toy/table1/good'} (saved " in out


def test_ctrl_c_names_the_command_that_continues_the_run(toy, monkeypatch, capsys):
    def interrupted(context):
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_paper, "_method", lambda *args: interrupted(args[-1]))
    assert main.main(["toy", "--run-name", "r"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; continue with: python main.py toy --resume {toy / 'toy/table1/r'}" in err
    assert "Traceback" not in err


def test_engine_log_lines_are_hidden_unless_verbose(toy, monkeypatch):
    ignite_logger = logging.getLogger("ignite")
    monkeypatch.setattr(ignite_logger, "level", ignite_logger.level)  # restored after the test
    assert main.main(["toy", "--cells", "toy/table1/pretrain/seed-0"]) == 0
    assert logging.getLogger("ignite.engine.engine.Engine").getEffectiveLevel() == logging.WARNING
    assert main.main(["-v", "toy", "--cells", "toy/table1/pretrain/seed-0"]) == 0
    assert logging.getLogger("ignite.engine.engine.Engine").getEffectiveLevel() == logging.INFO


def test_an_output_that_is_a_file_is_one_line(toy, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main.main(["toy", "--output", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert f"--output {blocker}: cannot make a run folder there" in err and len(err.strip().splitlines()) == 1


def test_help_is_plain_text_and_loads_neither_torch_nor_a_paper():
    code = (
        "import contextlib, io, sys\n"
        "import main\n"
        "for argv in (['--help'], ['mchad', '--help']):\n"
        "    print('=' * 10)\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main.main(argv)\n"
        "    print(out.getvalue())\n"
        "print(sorted(name for name in ('torch', 'ignite', 'mchad') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *text, loaded = done.stdout.strip().splitlines()
    assert loaded == "[]", "--help must answer without importing torch, Ignite or a paper"
    help_text = "\n".join(text)
    top = help_text.split("=" * 10)[1]
    assert "python main.py PAPER --list-cells" in top
    for option in ("--smoke", "--set KEY=VALUE", "--resume", "--launcher", "--partition"):  # the paper commands'
        assert option in top, option
    assert "``" not in help_text and "::" not in help_text  # no reStructuredText markup
