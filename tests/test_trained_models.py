"""Evaluation only, from trained models (``--checkpoints DIR``), on a toy paper whose cells train 1×1 linear models:
where a cell's model is found, the missing-models block, what the run records and ``report`` shows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import main
from common.trained_models import FINAL_MODEL, FROM_CHECKPOINT, OriginalModels
from tests.helpers import toy_models_paper

TRAINED = ["--run-name", "trained"]


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Only the toy paper exists; runs go under the returned runs root."""
    module = main.PaperModule("tests.helpers.toy_models_paper", "Toy et al.")
    monkeypatch.setattr(main, "PAPER_MODULES", {"toymodels": module})
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path / "runs"))
    toy_models_paper.TRAININGS.clear()
    return tmp_path / "runs"


def _run(*arguments: str, experiment: str = "table") -> int:
    return main.main(["toymodels", experiment, "--no-progress", *arguments])


def _values(run_dir: Path, cell: str) -> dict:
    return json.loads((run_dir / cell / "result.json").read_text())["values"]


def _rows(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["rows"]


def _set_saved(run_dir: Path, saved: str) -> None:
    """Make ``run_dir`` look recorded at ``saved`` (runs made within a second tie)."""
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "saved": saved}))


def _set_weight(path: Path, weight: float) -> None:
    torch.save(_linear(weight).state_dict(), path)


def _linear(weight: float) -> nn.Linear:
    """The toy's model with ``weight``."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(weight)
    return model


def test_a_run_from_checkpoints_evaluates_the_trained_models_and_trains_none(toy, capsys):
    assert _run(*TRAINED) == 0
    trained = toy / "toymodels/table/trained"
    toy_models_paper.TRAININGS.clear()
    assert _run("--run-name", "evaluated", "--checkpoints", str(trained)) == 0
    evaluated = toy / "toymodels/table/evaluated"
    assert toy_models_paper.TRAININGS == []
    assert _values(evaluated, "fit/seed-1") == {"weight": 2.0, FROM_CHECKPOINT: str(trained / "fit/seed-1/model.pt")}
    assert _values(evaluated, "score/seed-1") == _values(trained, "score/seed-1")  # trains nothing: ran as always
    assert [row["ours"] for row in _rows(evaluated)] == [row["ours"] for row in _rows(trained)] == [15.0]
    assert json.loads((evaluated / "config.json").read_text())["settings"]["checkpoints"] == str(trained)
    mark = f"[evaluated from the trained models in {trained}]"
    assert mark in capsys.readouterr().out
    report = main.report(toy)  # the trained run and its re-evaluation, each its own table
    assert report.count("Toy table: scores") == 2 and report.count(mark) == 1


def test_models_are_found_under_a_runs_root_in_the_newest_run_of_the_same_scale_and_smoke(toy):
    for name, saved, weight in (("old", "2020-01-01", 5.0), ("new", "2021-01-01", 7.0)):
        assert _run("--run-name", name, "--seeds", "0") == 0
        _set_saved(toy / "toymodels/table" / name, saved)
        _set_weight(toy / "toymodels/table" / name / "fit/seed-0" / FINAL_MODEL, weight)
    assert _run("--run-name", "smoke", "--seeds", "0", "--smoke") == 0  # newest, but a smoke run
    _set_saved(toy / "toymodels/table/smoke", "2022-01-01")
    (toy / "toymodels/table/new/fit/seed-0/result.json").unlink()  # an unfinished cell's model is not final: passed
    assert _run("--run-name", "evaluated", "--seeds", "0", "--checkpoints", str(toy)) == 0
    values = _values(toy / "toymodels/table/evaluated", "fit/seed-0")
    assert values == {"weight": 5.0, FROM_CHECKPOINT: str(toy / "toymodels/table/old/fit/seed-0" / FINAL_MODEL)}


def test_a_finished_cell_without_model_pt_gives_its_newest_checkpoint(toy):
    assert _run(*TRAINED, "--seeds", "0") == 0
    folder = toy / "toymodels/table/trained/fit/seed-0"
    (folder / FINAL_MODEL).unlink()  # a run from before every training cell left its model.pt
    (folder / "checkpoints").mkdir()
    for iteration, weight in ((3, 4.0), (12, 6.0)):
        torch.save({"model": {"weight": torch.tensor([[weight]])}}, folder / f"checkpoints/checkpoint_{iteration}.pt")
    assert _run("--run-name", "evaluated", "--seeds", "0", "--checkpoints", str(toy)) == 0
    values = _values(toy / "toymodels/table/evaluated", "fit/seed-0")
    assert values == {"weight": 6.0, FROM_CHECKPOINT: str(folder / "checkpoints/checkpoint_12.pt")}


def test_without_any_model_every_missing_cell_is_listed_and_nothing_is_written(toy, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run("--checkpoints", str(empty)) == 2
    error = capsys.readouterr().err
    assert "missing trained models: 2 cell(s) that train a model have none under" in error
    assert f"in its runs at or under {empty}: none" in error
    for seed in (0, 1):
        assert f"toymodels/table/fit/seed-{seed}: fit/seed-{seed}/{FINAL_MODEL}" in error
    assert "not run either, they need a cell above: toymodels/table/score/seed-0, toymodels/table/score/seed-1" in error
    assert "nothing was written" in error and not toy.exists()


def test_the_found_models_are_evaluated_and_the_missing_listed_and_a_resume_keeps_the_folder(toy, tmp_path, capsys):
    assert _run(*TRAINED, "--seeds", "0") == 0
    trained = toy / "toymodels/table/trained"
    capsys.readouterr()
    assert _run("--run-name", "evaluated", "--checkpoints", str(trained)) == 0
    evaluated = toy / "toymodels/table/evaluated"
    captured = capsys.readouterr()
    assert "toymodels/table/fit/seed-1: fit/seed-1/model.pt" in captured.err
    assert f"in its runs at or under {trained}: {trained}" in captured.err
    assert (evaluated / "score/seed-0/result.json").is_file() and not (evaluated / "fit/seed-1").exists()
    assert "2 of 4 cells not finished" in main.report(evaluated)

    assert _run("--resume", str(evaluated)) == 0  # the recorded folder is searched again: still missing
    assert "toymodels/table/fit/seed-1: fit/seed-1/model.pt" in capsys.readouterr().err
    assert _run("--resume", str(evaluated), "--checkpoints", str(tmp_path)) == 2
    conflict = f"--checkpoints {tmp_path} conflicts with the run's recorded checkpoints {trained}"
    assert conflict in capsys.readouterr().err


def test_original_files_are_read_by_the_experiments_readers(toy, tmp_path, monkeypatch, capsys):
    originals = tmp_path / "original"
    originals.mkdir()
    (originals / "seed-0.txt").write_text("8.5")
    reader = OriginalModels(
        "the toy's original weights, seed-<s>.txt",
        find=lambda cell_id, root: next(iter(root.glob(f"{cell_id.rsplit('/', 1)[1]}.txt")), None),
        load=lambda path, cell_id, config: _linear(float(path.read_text())),
    )
    table = dataclasses.replace(toy_models_paper.PAPER.experiments[0], original_models=(reader,))
    monkeypatch.setattr(toy_models_paper, "ORIGINAL_MODELS", (reader,))
    monkeypatch.setattr(toy_models_paper, "PAPER", dataclasses.replace(toy_models_paper.PAPER, experiments=(table,)))
    assert _run("--run-name", "original", "--checkpoints", str(originals)) == 0
    values = _values(toy / "toymodels/table/original", "fit/seed-0")
    assert values == {"weight": 8.5, FROM_CHECKPOINT: str(originals / "seed-0.txt")}
    assert "; then for the toy's original weights, seed-<s>.txt" in capsys.readouterr().err  # seed 1 has none

    (originals / "seed-1.txt").write_text("not a number")
    assert _run("--resume", str(toy / "toymodels/table/original")) == 2
    assert "could not convert string to float" in capsys.readouterr().err


def test_a_model_that_does_not_fit_names_its_file(toy, capsys):
    assert _run(*TRAINED, "--seeds", "0") == 0
    weights = toy / "toymodels/table/trained/fit/seed-0" / FINAL_MODEL
    torch.save({"weight": torch.ones(2, 2)}, weights)
    assert _run("--run-name", "evaluated", "--seeds", "0", "--checkpoints", str(toy)) == 2
    error = capsys.readouterr().err
    assert f"{weights}: is not a model of cell toymodels/table/fit/seed-0 as configured here" in error


def test_checkpoints_must_be_a_folder_and_an_experiment_must_train_something(toy, tmp_path, capsys):
    assert _run("--checkpoints", str(tmp_path / "nowhere")) == 2
    assert f"--checkpoints {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    assert _run("--checkpoints", str(tmp_path), experiment="fitted") == 2
    assert "no cell of toymodels/fitted trains a model, so there is none to load" in capsys.readouterr().err
    assert not toy.exists()
