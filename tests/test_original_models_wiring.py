"""The original codes' trained-model files evaluated through ``--checkpoints DIR``: per paper, files in the original
formats laid out as its readers look for them (``DIR/<experiment>/<cell folder>/<the original's file name>``) are
found, loaded with the configuration of their cell and evaluated without a trainer; a cell without one is listed as
missing, with the rule naming the file looked for."""

from __future__ import annotations

import dataclasses
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
from invglow import experiments as invglow_experiments
from invglow.config import LocalSemanticConfig, grey_config
from invglow.models import PatchGlow, build_model
from invglow.original_checkpoints import load_original as load_invglow
from mchad import experiments as mchad_experiments
from mchad.config import CONFIGS as MCHAD_CONFIGS
from memae import config as memae_config
from memae import experiments as memae_experiments
from memae.models import ARCHITECTURES
from tests.helpers import write_original_invglow as invglow_writer
from tests.helpers.write_original_mchad import lightning_checkpoint, pytorch_ood_wrn
from tests.helpers.write_original_memae import official_layers, official_state_dict
from tests.test_evaluation_from_checkpoints import _no_trainer, _values
from tests.test_invglow_experiments import TINY as INVGLOW_TINY
from tests.test_mchad_experiments import DIGITS, METHODS
from tests.test_mchad_experiments import TINY as MCHAD_TINY
from tests.test_memae_experiments import TINY as MEMAE_TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The runs root, in ``tmp_path``."""
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _evaluate(paper: str, experiment: str, originals: Path, run_name: str, cells: tuple[str, ...], *more: str) -> int:
    """``python main.py PAPER EXPERIMENT --scale demo --checkpoints ORIGINALS --run-name RUN_NAME --cells ...``."""
    selected = [argument for cell in cells for argument in ("--cells", cell)]
    options = ["--scale", "demo", "--checkpoints", str(originals), "--run-name", run_name, "--no-progress"]
    return main.main([paper, experiment, *options, "--device", "cpu", *selected, *more])


def _folder(originals: Path, cell_id: str) -> Path:
    """``originals/<experiment>/<cell folder>``, made."""
    folder = originals.joinpath(*cell_id.split("/")[1:])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _evaluated(run_dir: Path, cell_id: str, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The values of the cell, which ran from the file ``path`` without a training step, and the weights it left in
    its ``model.pt``."""
    values = _values(run_dir, cell_id)
    assert values[FROM_CHECKPOINT] == str(path) and values.get("steps", 0) == 0, values
    return values, torch.load(run_dir.joinpath(*cell_id.split("/")[2:], FINAL_MODEL))


def _assert_missing(error: str, cell_id: str, rule: str) -> None:
    """``cell_id`` is listed as the one missing cell, with its folder's ``model.pt`` and the readers' rule."""
    assert "missing trained models: 1 cell(s)" in error, error
    assert f"    {cell_id}: {'/'.join(cell_id.split('/')[2:])}/{FINAL_MODEL}" in error, error
    assert f"; then for {rule}" in error, error


# --- InvGlow -----------------------------------------------------------------------------------------------
def _original_glow(channels: int, seed: int) -> torch.nn.Module:
    """An original Glow of the test configuration's shape, with weights of ``seed``."""
    glow = INVGLOW_TINY.glow
    return invglow_writer.original_glow(
        channels, glow.image_size, glow.steps, glow.hidden, invglow_writer.random_tensors(seed)
    )


def test_invglow_original_glow_files_are_evaluated_by_their_cells(monkeypatch, runs, tmp_path, capsys):
    monkeypatch.setitem(invglow_config.CONFIGS, "demo", INVGLOW_TINY)
    pretrain, plain, outlier = (
        "invglow/tables/tiny-pretrain/seed-0",
        "invglow/tables/finetune-shapes/plain/seed-0",
        "invglow/tables/finetune-shapes/outlier-loss/seed-0",
    )
    originals = tmp_path / "originals"
    tiny = invglow_writer.save_original(_original_glow(3, 0), _folder(originals, pretrain) / "tiny_model.th")
    finetuned = {epoch: _original_glow(3, epoch) for epoch in (9, 10)}  # exp.run_exp saves every n_epochs // 5
    for epoch, written in finetuned.items():
        invglow_writer.save_original(written, _folder(originals, plain) / f"{epoch}_model.th")
    monkeypatch.setattr(invglow.engine, "create_trainer", _no_trainer)

    assert _evaluate("invglow", "tables", originals, "evaluated", (plain, outlier)) == 0  # and the pretraining
    _assert_missing(capsys.readouterr().err, outlier, invglow_experiments.ORIGINAL_MODELS[0].what)
    run_dir = runs / "invglow/tables/evaluated"
    _evaluated(run_dir, pretrain, tiny)
    newest = originals / "tables/finetune-shapes/plain/seed-0/10_model.th"
    values, weights = _evaluated(run_dir, plain, newest)
    assert "AUROC-ratio/digits-rgb" in values
    expected = load_invglow(newest, INVGLOW_TINY).state_dict()
    assert weights.keys() == expected.keys() and all(torch.equal(weights[key], expected[key]) for key in weights)
    prior_actnorm = finetuned[10].prev[2].prev[0].module.sequential[1]  # m0-act-2's ActNorm
    assert torch.equal(weights["priors.2.norm.bias"].flatten(), prior_actnorm.loc.flatten())


def test_invglow_original_files_are_found_by_name_and_shaped_by_their_cell(tmp_path):
    config = dataclasses.replace(
        INVGLOW_TINY, local_semantic=LocalSemanticConfig(patch_size=8, patch_steps=2, dense_steps=2, dense_hidden=8)
    )
    grey, grey_finetune = "invglow/tables/tiny-pretrain-grey/seed-0", "invglow/tables/finetune-grey-shapes/plain/seed-0"
    local = "invglow/local_vs_semantic/local-glow-shapes/seed-0"
    grey_tiny = invglow_writer.save_original(_original_glow(1, 0), _folder(tmp_path, grey) / "tiny_model.th")
    (grey_tiny.parent / "20_model.th").touch()  # a Tiny pretraining reads tiny_model.th only
    folder = _folder(tmp_path, local)
    patch_glow = invglow_writer.original_patch_glow(3, 2, config.glow.hidden, invglow_writer.random_tensors())
    for name in ("2_model.th", "100_model.th"):
        invglow_writer.save_original(patch_glow, folder / name)
    for name in (FINAL_MODEL, "999_model.th.part", "model_999.th"):
        (folder / name).touch()  # not the original's names

    original = invglow_experiments.ORIGINAL_MODELS[0]
    assert original.find(grey, tmp_path) == grey_tiny and original.find(grey_finetune, tmp_path) is None
    assert original.find(local, tmp_path) == folder / "100_model.th"
    grey_model = build_model(grey_config(config))  # the grey cells' model: one channel
    grey_model.load_state_dict(original.load(grey_tiny, grey, config).state_dict())
    local_model = build_model(config, "local")
    assert isinstance(local_model, PatchGlow)
    local_model.load_state_dict(original.load(folder / "100_model.th", local, config).state_dict())
    assert invglow_experiments.cell_config(config, grey_finetune).glow.channels == 1
    assert invglow_experiments.cell_config(config, local) is config


# --- MCHAD -------------------------------------------------------------------------------------------------
def test_mchad_lightning_and_pytorch_ood_files_are_evaluated_by_their_cells(monkeypatch, runs, tmp_path, capsys):
    methods = tuple(METHODS[name] for name in ("MCHAD", "Softmax", "CAC"))
    monkeypatch.setitem(MCHAD_CONFIGS, "demo", dataclasses.replace(MCHAD_TINY, methods={DIGITS.name: methods}))
    monkeypatch.setattr(mchad_experiments, "_images", {})
    mchad_cell, softmax, cac = (f"mchad/main_table/digits-0-5/{name}/seed-0" for name in ("mchad", "softmax", "cac"))
    originals = tmp_path / "originals"
    backbone, centers = pytorch_ood_wrn(16), torch.randn(6, 16)
    state = {f"model.{k}": v for k, v in backbone.items()} | {"soft_margin_loss._centers._params": centers}
    last = lightning_checkpoint(state, _folder(originals, mchad_cell) / "last.ckpt")
    lightning_checkpoint(state | {"soft_margin_loss._centers._params": -centers}, last.parent / "epoch=07.ckpt")
    wrn = pytorch_ood_wrn(6)
    torch.save({"not": torch.zeros(1)}, _folder(originals, softmax) / FINAL_MODEL)  # ours, not the original's
    torch.save(wrn, originals / "main_table/digits-0-5/softmax/seed-0/wrn.pt")
    monkeypatch.setattr(mchad.engine, "create_trainer", _no_trainer)

    assert _evaluate("mchad", "main_table", originals, "evaluated", ()) == 0
    _assert_missing(capsys.readouterr().err, cac, mchad_experiments.ORIGINAL_MODELS[0].what)
    run_dir = runs / "mchad/main_table/evaluated"
    values, weights = _evaluated(run_dir, mchad_cell, last)
    assert "accuracy" in values and torch.equal(weights["centers.centers"], centers)
    assert all(torch.equal(weights[f"backbone.{key}"], value) for key, value in backbone.items())
    _, weights = _evaluated(run_dir, softmax, originals / "main_table/digits-0-5/softmax/seed-0/wrn.pt")
    assert torch.equal(weights["backbone.fc.weight"], wrn["fc.weight"])


# --- MemAE -------------------------------------------------------------------------------------------------
def _official_file(folder: Path, memory: torch.Tensor | None, epoch: int, final: str = "") -> Path:
    """An official ``<setting>_epoch_NNNN[_final].pt`` of the digits networks, in ``folder`` (made)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"MemAE_Conv2DSpar_digits_MemDim10_Seed1_epoch_{epoch:04d}{final}.pt"
    torch.save(official_state_dict(*official_layers("digits"), memory), path)
    return path


def test_memae_official_state_dicts_are_evaluated_with_the_official_addressing(monkeypatch, runs, tmp_path, capsys):
    monkeypatch.setitem(memae_config.CONFIGS, "demo", MEMAE_TINY)
    memae_cell, non_spar, ae, missing = (
        f"memae/image_table/MNIST/{row}/class-{c}/seed-0"
        for row, c in (("MemAE", 0), ("MemAE-nonSpar", 0), ("AE", 0), ("MemAE", 1))
    )
    conditional = "memae/conditional/MNIST/MemAE/class-0/seed-0"
    originals = tmp_path / "originals"
    setting = MEMAE_TINY.image_table[0]
    memory = torch.randn(setting.memory.num_slots, ARCHITECTURES["digits"].latent_shape[0])
    _official_file(_folder(originals, memae_cell), -memory, 0)
    final = _official_file(_folder(originals, memae_cell), memory, 1, "_final")
    non_spar_file = _official_file(_folder(originals, non_spar), memory, 1)
    ae_file = _official_file(_folder(originals, ae), None, 1)
    _official_file(_folder(originals, conditional), memory, 1)
    monkeypatch.setattr(memae.engine, "create_trainer", _no_trainer)

    assert _evaluate("memae", "image_table", originals, "cosine", (memae_cell,)) == 2  # as configured: refused
    assert (
        f"{final}: the official MemAE addresses its memory by the dot product, cell {memae_cell} by cosine: to "
        "evaluate it as the official code does, add --set image_table.0.memory.similarity=dot"
    ) in capsys.readouterr().err

    dot = ("--set", "image_table.0.memory.similarity=dot")
    assert _evaluate("memae", "image_table", originals, "dot", (memae_cell, non_spar, ae, missing), *dot) == 0
    _assert_missing(capsys.readouterr().err, missing, memae_experiments.ORIGINAL_MODELS[0].what)
    run_dir = runs / "memae/image_table/dot"
    weights = {}
    for cell_id, path in ((memae_cell, final), (non_spar, non_spar_file), (ae, ae_file)):
        values, weights[cell_id] = _evaluated(run_dir, cell_id, path)
        assert 0 <= values["AUROC"] <= 1
    assert torch.equal(weights[memae_cell]["bottleneck.memory"], memory)
    shrink = {cell_id: float(weights[cell_id]["bottleneck.shrink_threshold"]) for cell_id in (memae_cell, non_spar)}
    assert shrink == {memae_cell: pytest.approx(setting.memory.shrink_threshold), non_spar: 0.0}  # nonSpar: λ = 0
    assert memae_experiments.ORIGINAL_MODELS[0].find(conditional, originals) is None  # no official C-MemAE nets
