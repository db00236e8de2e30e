"""Each paper evaluated from the models of a finished run (``--checkpoints``): no trainer is made, and the same
weights on the same data give the trained run's numbers; Gaussian AD trains nothing and refuses the option."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import invglow.engine
import main
import mchad.engine
import memae.engine
from common.trained_models import FINAL_MODEL, FROM_CHECKPOINT
from invglow import config as invglow_config
from mchad import experiments as mchad_experiments
from mchad.config import CONFIGS as MCHAD_CONFIGS
from memae import config as memae_config
from tests.test_invglow_experiments import PRETRAIN
from tests.test_invglow_experiments import TINY as INVGLOW_TINY
from tests.test_mchad_experiments import DIGITS, METHODS
from tests.test_mchad_experiments import TINY as MCHAD_TINY
from tests.test_memae_experiments import CONDITIONAL
from tests.test_memae_experiments import TINY as MEMAE_TINY

TRAINING_COUNTS = ("steps", "skipped_steps")


def _no_trainer(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a run from checkpoints made a trainer")


def _values(run_dir: Path, cell_id: str) -> dict[str, Any]:
    """The values of cell ``cell_id`` (``paper/experiment/...``) in ``run_dir``."""
    folder = run_dir.joinpath(*cell_id.split("/")[2:])
    return json.loads((folder / "result.json").read_text())["values"]


def _assert_evaluated_as_trained(trained: Path, evaluated: Path, cell_id: str) -> dict[str, Any]:
    """The cell's values in ``evaluated`` are those of ``trained`` (on their common keys), with no training step
    and the file of the model it was evaluated on, whose weights it left in its own folder; returns them."""
    before, after = _values(trained, cell_id), _values(evaluated, cell_id)
    folder = trained.joinpath(*cell_id.split("/")[2:])
    assert after[FROM_CHECKPOINT] == str(folder / FINAL_MODEL) and after["steps"] == 0 and before["steps"] > 0
    weights = [torch.load(run.joinpath(*cell_id.split("/")[2:], FINAL_MODEL)) for run in (trained, evaluated)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0]), cell_id
    common = (set(before) & set(after)) - {*TRAINING_COUNTS, FROM_CHECKPOINT}
    assert {key: after[key] for key in common} == {key: before[key] for key in common}, cell_id
    return after


def _options(tmp_path: Path, run_name: str, cells: tuple[str, ...], **more: Any) -> main.RunOptions:
    return main.RunOptions(
        output=tmp_path, run_name=run_name, cells=cells, smoke=True, progress=False, device="cpu", **more
    )


def test_invglow_rescores_a_finished_run_against_another_ood_set_without_training(monkeypatch, tmp_path):
    monkeypatch.setitem(invglow_config.CONFIGS, "demo", INVGLOW_TINY)
    finetune = "invglow/tables/finetune-shapes/plain/seed-0"
    trained_without_noise = ("data.ood=[shapes, digits-rgb]",)  # the OOD sets do not change the training
    main.run_paper("invglow", ["tables"], _options(tmp_path, "trained", (finetune,), overrides=trained_without_noise))
    trained = tmp_path / "invglow/tables/trained"
    monkeypatch.setattr(invglow.engine, "create_trainer", _no_trainer)
    main.run_paper("invglow", ["tables"], _options(tmp_path, "rescored", (finetune,), checkpoints=trained))
    rescored = tmp_path / "invglow/tables/rescored"
    _assert_evaluated_as_trained(trained, rescored, PRETRAIN)
    values = _assert_evaluated_as_trained(trained, rescored, finetune)
    assert {"AUROC-ratio/digits-rgb", "AUROC-final_scale/digits-rgb", "serra/S"} <= set(values)
    assert "AUROC-final_scale/uniform-noise" in values  # scored now, on the models trained without it


def test_mchad_evaluates_a_finished_run_and_its_table_says_so(monkeypatch, tmp_path):
    softmax = dataclasses.replace(MCHAD_TINY, methods={DIGITS.name: (METHODS["Softmax"],)})
    monkeypatch.setitem(MCHAD_CONFIGS, "demo", softmax)
    monkeypatch.setattr(mchad_experiments, "_images", {})
    cell = "mchad/main_table/digits-0-5/softmax/seed-0"
    main.run_paper("mchad", [], _options(tmp_path, "trained", ()))
    trained = tmp_path / "mchad/main_table/trained"
    monkeypatch.setattr(mchad.engine, "create_trainer", _no_trainer)
    rows = main.run_paper("mchad", [], _options(tmp_path, "evaluated", (), checkpoints=trained))
    _assert_evaluated_as_trained(trained, tmp_path / "mchad/main_table/evaluated", cell)
    assert rows and all(row.table.endswith(f"[evaluated from the trained models in {trained}]") for row in rows)


def test_memae_evaluates_few_shot_cells_and_the_model_they_start_from(monkeypatch, tmp_path):
    monkeypatch.setitem(memae_config.CONFIGS, "demo", MEMAE_TINY)
    transfer, freeze = (f"{CONDITIONAL}/few-shot/{name}/k-3/class-2/seed-0" for name in ("transfer", "freeze"))
    main.run_paper("memae", ["conditional"], _options(tmp_path, "trained", (transfer, freeze)))
    trained = tmp_path / "memae/conditional/trained"
    monkeypatch.setattr(memae.engine, "create_trainer", _no_trainer)
    main.run_paper("memae", ["conditional"], _options(tmp_path, "evaluated", (transfer, freeze), checkpoints=trained))
    evaluated = tmp_path / "memae/conditional/evaluated"
    for cell_id in (f"{CONDITIONAL}/MemAE/class-0/seed-0", transfer):
        _assert_evaluated_as_trained(trained, evaluated, cell_id)
    assert _values(evaluated, freeze) == _values(trained, freeze)  # trains nothing: evaluated as it always is


def test_gaussian_ad_trains_no_model_and_refuses_checkpoints(tmp_path, capsys):
    assert main.main(["gaussian_ad", "table1", "--checkpoints", str(tmp_path), "--output", str(tmp_path)]) == 2
    assert "no cell of gaussian_ad/table1 trains a model, so there is none to load" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("paper", ["invglow", "mchad", "memae"])
def test_every_training_paper_names_its_original_model_readers(paper):
    owner = main.get_paper(paper)
    module = importlib.import_module(f"{paper}.experiments")
    assert all(experiment.original_models is module.ORIGINAL_MODELS for experiment in owner.experiments)
