"""InvGlow's local-vs-semantic experiment at a minuscule size: full, local (patch) and dense Glow from scratch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import main
from common.handlers import CHECKPOINT_DIR
from invglow import config, paper
from invglow.config import DEMO, PAPER, DataConfig, GlowConfig, InvGlowConfig, LocalSemanticConfig, TrainConfig
from invglow.data import image_set
from invglow.engine import FINAL_MODEL
from invglow.experiments import FULL_LIKELIHOODS, rank_correlation, row_label
from invglow.flows import FixedOrthogonal, InvConv1x1
from invglow.models import Glow, PatchGlow, build_model

IN_SETS = ("shapes", "digits-rgb")
OOD_SETS = ("shapes", "digits-rgb", "uniform-noise")
MINUSCULE = InvGlowConfig(
    scale="demo",
    glow=GlowConfig(image_size=8, steps=1, hidden=8),
    data=DataConfig(in_distribution=IN_SETS, ood=OOD_SETS, no_flip=("digits-rgb",), demo_train=48, demo_test=24),
    grey=None,
    local_semantic=LocalSemanticConfig(
        patch_size=2,  # 16 patches of an 8×8 image, as 8×8 patches of a 32×32 one
        patch_steps=1,
        dense_steps=1,
        dense_hidden=8,
        train=TrainConfig(epochs=1, batch_size=16, eval_batch_size=64, init_batches=1, translate_pixels=1),
    ),
    seeds=(0,),
)
KINDS = {"full": paper.FULL_GLOW, "local": row_label(MINUSCULE, paper.LOCAL_GLOW), "dense": paper.DENSE_GLOW}


@pytest.fixture
def minuscule_config(monkeypatch: pytest.MonkeyPatch) -> InvGlowConfig:
    monkeypatch.setitem(config.CONFIGS, "demo", MINUSCULE)
    return MINUSCULE


def _log_likelihoods(kind: str, folder: Path, images: torch.Tensor) -> np.ndarray:
    """log p(x) of uint8 ``images`` at their bin centres under the final model saved in ``folder``."""
    model = build_model(MINUSCULE, kind)
    model.load_state_dict(torch.load(folder / FINAL_MODEL, weights_only=True))
    model.eval()
    with torch.no_grad():
        return model(images.float() / 256 - 0.5 + 1 / 512)[1].sum(1).double().numpy()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the ranks (no ties among continuous likelihoods)."""
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def test_experiment_end_to_end_matches_an_independent_evaluation_and_resumes(
    minuscule_config: InvGlowConfig, tmp_path: Path
) -> None:
    options = main.RunOptions(output=tmp_path, device="cpu", progress=False)
    rows = main.run_paper("invglow", ["local_vs_semantic"], options)
    (run_dir,) = (tmp_path / "invglow" / "local_vs_semantic").iterdir()
    assert len(json.loads((run_dir / "results.json").read_text())["rows"]) == len(rows)

    # one table; per model: AUROC per (in → OOD) pair, Spearman ρ with the full Glow (variants only), bits/dim
    assert {row.table for row in rows} == {paper.LOCAL_SEMANTIC_TABLE}
    expected = set()
    for in_name in IN_SETS:
        others = [f"{in_name} → {ood}" for ood in OOD_SETS if ood != in_name]
        for kind, row in KINDS.items():
            expected |= {(row, column) for column in others} | {(row, f"{in_name}: test bits/dim")}
            if kind != "full":
                expected.add((row, f"{in_name}: Spearman ρ with full Glow"))
    cells = {(row.row, row.column): row.ours for row in rows}
    assert set(cells) == expected and len(rows) == len(expected)
    assert all(row.paper_value is None and row.seeds == (0,) and row.scale == "demo" for row in rows)
    assert all(math.isfinite(value) for value in cells.values())

    for in_name in IN_SETS:
        names = [in_name, *(ood for ood in OOD_SETS if ood != in_name)]
        images = [image_set(name, "test", MINUSCULE, 0).images for name in names]
        is_ood = np.concatenate([np.full(len(part), index > 0) for index, part in enumerate(images)])
        set_ids = np.concatenate([np.full(len(part), index) for index, part in enumerate(images)])
        likelihoods = {}
        for kind, row in KINDS.items():
            folder = run_dir / f"{kind}-glow-{in_name}" / "seed-0"
            assert list(folder.glob("events.out.tfevents.*")), folder
            assert list((folder / CHECKPOINT_DIR).glob("checkpoint_*.pt")), folder
            lp = likelihoods[kind] = _log_likelihoods(kind, folder, torch.cat(images))
            n_dims = 3 * 8 * 8
            bpd = (-lp[: len(images[0])] + n_dims * math.log(256)) / (n_dims * math.log(2))
            assert cells[(row, f"{in_name}: test bits/dim")] == pytest.approx(bpd.mean(), rel=1e-5)
            for index, ood_name in enumerate(names[1:], start=1):
                chosen = (set_ids == 0) | (set_ids == index)
                auroc = 100 * roc_auc_score(is_ood[chosen], -lp[chosen])  # lower likelihood = more anomalous
                assert cells[(row, f"{in_name} → {ood_name}")] == pytest.approx(auroc, abs=1e-6)
        saved = torch.load(run_dir / f"full-glow-{in_name}" / "seed-0" / FULL_LIKELIHOODS, weights_only=True)
        np.testing.assert_allclose(saved.sum(1).double().numpy(), likelihoods["full"], rtol=1e-6)
        for kind in ("local", "dense"):
            rho = _spearman(likelihoods["full"], likelihoods[kind])
            assert cells[(KINDS[kind], f"{in_name}: Spearman ρ with full Glow")] == pytest.approx(rho, abs=1e-9)
    # the obvious case: uniform noise shrunk from 32×32 to 8×8 (antialiased) is nearly flat grey, the simplest image
    # there is, and every model ranks it as more likely than the data (the paper's point, in its purest form)
    assert all(cells[(row, f"{in_name} → uniform-noise")] < 10.0 for row in KINDS.values() for in_name in IN_SETS)

    # resuming the finished run runs no cell (no training, no tensorboard event) and gives the same table
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    resumed = main.run_paper("invglow", [], main.RunOptions(resume=run_dir, device="cpu", progress=False))
    assert [(row.row, row.column, row.ours) for row in resumed] == [(row.row, row.column, row.ours) for row in rows]
    assert sorted(run_dir.rglob("events.out.tfevents.*")) == events


def test_rank_correlation_is_spearman_of_the_summed_log_likelihoods() -> None:
    reference = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 0.0], [2.0, 2.0], [5.0, 0.0]])  # sums 1, 2, 3, 4, 5
    other = torch.tensor([[2.0], [1.0], [4.0], [3.0], [5.0]])
    # rank differences 1, −1, 1, −1, 0: ρ = 1 − 6 Σd² / (n (n² − 1)) = 1 − 24 / 120
    assert rank_correlation(reference, other) == pytest.approx(0.8)
    assert rank_correlation(reference, -other) == pytest.approx(-0.8)
    # a non-finite likelihood ranks as the least likely image
    with pytest.warns(UserWarning, match="not finite"):
        rho = rank_correlation(reference.sum(1, keepdim=True), torch.tensor([[-math.inf], *other[1:]]))
    assert rho == pytest.approx(_spearman(np.array([1, 2, 3, 4, 5.0]), np.array([-1e300, 1, 4, 3, 5.0])))
    with pytest.raises(ValueError, match="same images"):
        rank_correlation(reference, other[:4])


def test_variants_are_the_local_patch_and_dense_models() -> None:
    full = build_model(MINUSCULE, "full")
    local = build_model(MINUSCULE, "local")
    dense = build_model(MINUSCULE, "dense")
    assert isinstance(local, PatchGlow) and local.patch == 2 and local.n_patches == 16
    assert len(local.glow.scales) == 1 and len(local.glow.scales[0]) == MINUSCULE.local_semantic.patch_steps
    assert isinstance(dense, Glow) and all(step.dense_shape is not None for scale in dense.scales for step in scale)
    assert any(isinstance(module, FixedOrthogonal) for module in dense.modules())
    assert not any(isinstance(module, InvConv1x1) for module in dense.modules())
    assert any(isinstance(module, InvConv1x1) for module in full.modules()) and full.n_dims == local.n_dims == 192
    with pytest.raises(ValueError, match="kind: expected one of full, local, dense"):
        build_model(MINUSCULE, "semantic")  # type: ignore[arg-type]
    # the paper's models (reference note §2.1): 16 patches of 8×8, K = 32; dense K = 8, 512 units; 250 epochs
    published = PAPER.local_semantic
    assert (published.patch_size, published.patch_steps, published.dense_steps, published.dense_hidden) == (
        8,
        32,
        8,
        512,
    )
    assert published.train.epochs == 250 and (PAPER.glow.image_size // published.patch_size) ** 2 == 16
    assert (DEMO.glow.image_size // DEMO.local_semantic.patch_size) ** 2 == 16


def test_patch_glow_samples_independent_patches_at_the_temperature() -> None:
    torch.manual_seed(0)
    model = PatchGlow((3, 8, 8), patch=4, steps=2, hidden=8)
    model(torch.rand(8, 3, 8, 8) - 0.5)  # ActNorm data init
    samples = model.sample(3, temperature=0.7, generator=torch.Generator().manual_seed(5))
    assert samples.shape == (3, 3, 8, 8)
    normals = torch.randn((3 * 4, *model.glow.latent_shapes[0]), generator=torch.Generator().manual_seed(5))
    latents, _ = model(samples)  # the sample's patches map back to the drawn normals × T, in to_patches order
    torch.testing.assert_close(latents[0], 0.7 * normals, atol=1e-4, rtol=1e-4)
    mean = model.sample(2, temperature=0.0)
    patches = model.to_patches(mean)
    assert torch.equal(patches, patches[:1].expand_as(patches))  # T = 0: every patch is the prior's mode


def test_experiment_is_part_of_the_paper() -> None:
    names = [experiment.name for experiment in main.get_paper("invglow").experiments]
    assert names == ["tables", "local_vs_semantic"]


@pytest.mark.slow
def test_demo_scale_shows_the_local_model_tracking_the_full_glow(tmp_path: Path) -> None:
    options = main.RunOptions(output=tmp_path, device="cpu", progress=False)
    rows = main.run_paper("invglow", ["local_vs_semantic"], options)
    cells = {(row.row, row.column): row.ours for row in rows}
    # the CIFAR-10 → SVHN failure (shapes → digits) of the full Glow, shared by the model of 16 independent patches
    assert cells[(paper.FULL_GLOW, "shapes → digits-rgb")] < 50.0
    local = row_label(DEMO, paper.LOCAL_GLOW)
    assert cells[(local, "shapes → digits-rgb")] < 50.0
    assert all(cells[(local, f"{name}: Spearman ρ with full Glow")] > 0.9 for name in IN_SETS)
