"""The command line: list, report, running a registered paper and clear errors."""

from __future__ import annotations

import json

import pytest

import main
from common import papers
from common.papers import Experiment, Paper, RunOptions
from common.results import ResultRow


@pytest.fixture()
def no_papers(monkeypatch):
    monkeypatch.setattr(papers, "PAPERS", {})
    monkeypatch.setattr(papers, "PAPER_PACKAGES", ())


@pytest.fixture()
def toy_paper(no_papers):
    calls = []

    def table1(options: RunOptions, run_dir):
        calls.append((options, run_dir))
        (run_dir / "marker.txt").write_text("written by the experiment")
        return [ResultRow("toy", "Table 1", "method", "AUROC", 91.0, paper_value=90.0, scale=options.scale)]

    paper_only = Experiment("table9", table1, "needs the real data", scales=("paper",))
    papers.register_paper(
        Paper("toy", "Toy et al. 2024", (Experiment("table1", table1, "the toy table"), paper_only))
    )
    return calls


def test_list_and_report_say_when_nothing_is_registered(no_papers, tmp_path, capsys):
    assert main.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "no paper registered yet" in out
    assert "cifar10 [train, test]" in out
    assert main.main(["report", "--runs", str(tmp_path)]) == 0
    assert "No paper is registered yet" in capsys.readouterr().out
    assert main.main([]) == 0
    assert "nothing to run" in capsys.readouterr().out


def test_running_a_paper_writes_results_and_prints_the_table(toy_paper, tmp_path, capsys):
    assert main.main(["toy", "table1", "--output", str(tmp_path), "--epochs", "2", "--seeds", "0", "1"]) == 0
    (options, run_dir), = toy_paper
    assert options.epochs == 2 and options.seeds == (0, 1) and options.scale == "demo"
    assert run_dir.parent == tmp_path / "toy" / "table1"
    assert (run_dir / "marker.txt").exists()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["rows"][0]["ours"] == 91.0
    assert "| method | AUROC | 90.00 | 91.00 | – | 1.00 |" in capsys.readouterr().out
    assert main.main(["report", "--runs", str(tmp_path)]) == 0
    assert "| method | AUROC | 90.00 | 91.00 |" in capsys.readouterr().out


def test_default_command_runs_every_paper_at_the_demo_scale(toy_paper, tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path))
    assert main.main([]) == 0
    assert len(toy_paper) == 1, "the paper-only experiment is left out at the demo scale"
    assert list(tmp_path.glob("toy/table1/*/results.json"))
    with pytest.raises(ValueError, match="toy/table9 has no 'demo' scale"):
        main.main(["toy", "table9"])


def test_unknown_names_give_clear_errors(toy_paper, capsys):
    with pytest.raises(KeyError, match="no experiment 'table7'; experiments: table1, table9"):
        main.run_paper("toy", ["table7"])
    with pytest.raises(KeyError, match="unknown paper 'nope'; registered papers: toy"):
        main.run_paper("nope")
    with pytest.raises(SystemExit):
        main.main(["toy", "--scale", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        RunOptions(epochs=0)


def test_download_reports_manual_datasets_and_unknown_names(no_papers, tmp_path, capsys):
    assert main.main(["download", "mvtec", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "mvtec" in err and str(tmp_path / "mvtec") in err
    assert main.main(["download", "imagenet-42"]) == 2
    assert "unknown dataset(s) imagenet-42" in capsys.readouterr().err
    assert main.main(["download", "digits", "--root", str(tmp_path)]) == 0


def test_resume_continues_in_the_named_run_folder(toy_paper, tmp_path):
    run = tmp_path / "toy" / "table1" / "old-run"  # the experiment is read from the folder
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint_10.pt").write_bytes(b"")
    for resume in (run, run / "checkpoints" / "checkpoint_10.pt"):
        assert main.main(["toy", "--resume", str(resume)]) == 0
        assert toy_paper[-1][1] == run
    assert (run / "results.json").exists()
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        main.main(["toy", "--resume", str(tmp_path / "missing")])
    (tmp_path / "elsewhere" / "run").mkdir(parents=True)
    with pytest.raises(KeyError, match="no experiment 'elsewhere'"):
        main.main(["toy", "--resume", str(tmp_path / "elsewhere" / "run")])


def test_resume_takes_the_run_scale_and_refuses_another(toy_paper, tmp_path):
    run = tmp_path / "toy" / "table9" / "paper-run"
    checkpoint = run / "stage" / "seed0" / "checkpoints" / "checkpoint_3.pt"  # a training stage's checkpoint
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"config": {"options": {"scale": "paper"}}}))
    for resume in (run, checkpoint, checkpoint.parent.parent):  # the run, a stage's checkpoint, a stage's folder
        assert main.main(["toy", "--resume", str(resume)]) == 0  # no --scale: the run's own
        options, run_dir = toy_paper[-1]
        assert (options.scale, run_dir) == ("paper", run)
    with pytest.raises(ValueError, match=r"started at the 'paper' scale, not 'demo'.*--scale paper"):
        main.main(["toy", "--resume", str(run), "--scale", "demo"])
    with pytest.raises(ValueError, match="'paper' scale, not 'demo'"):
        main.run_paper("toy", (), RunOptions(resume=run))  # the Python API's default scale is demo
