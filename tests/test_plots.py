"""The figures of a run (``common.plots``): the ROC curve's points, the PNG files and tensorboard images, and the
files each paper's cells write into their folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve as sklearn_roc_curve

import gaussian_ad.config
import invglow.config
import main
import mchad.config
import mchad.experiments
import memae.config
from common import plots
from common.cells import id_part
from common.datasets import load
from common.handlers import open_tensorboard
from common.loaders import TensorBatchLoader
from invglow.scores import NON_FINITE_SCORE
from memae.config import TrainConfig
from memae.data import normalisation, one_class_test_set
from memae.engine import Evaluation, create_evaluator, fit
from memae.models import build_model
from tests.helpers.tensorboard import summaries
from tests.test_gaussian_ad_protocol import TINY as GAUSSIAN_AD_TINY
from tests.test_invglow_local_semantic import MINUSCULE as INVGLOW_MINUSCULE
from tests.test_mchad_experiments import DIGITS
from tests.test_mchad_experiments import TINY as MCHAD_TINY
from tests.test_memae_experiments import TINY as MEMAE_TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def visible_png(path: Path, min_side: int = plots.MIN_SIDE) -> np.ndarray:
    """The pixels of the PNG file at ``path``, checked to be at least ``min_side`` a side and not blank."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} is not a readable PNG file"
    assert min(image.shape[:2]) >= min_side, f"{path.name}: {image.shape}"
    pixels = image.reshape(image.shape[0] * image.shape[1], -1)
    assert pixels.std() > 0 and len(np.unique(pixels, axis=0)) > 1, f"{path.name} is blank"
    return image


def assert_logged_images(folder: Path, tags: set[str], min_side: int = plots.MIN_SIDE) -> None:
    """Each of ``tags`` is a tensorboard image in ``folder`` of at least ``min_side`` pixels a side."""
    logged = summaries(folder)
    for tag in tags:
        assert tag in logged, tag
        image = next(iter(logged[tag].values())).image
        assert min(image.height, image.width) >= min_side, tag


# ---------------------------------------------------------------------------------------------------- figures
@pytest.mark.parametrize("seed", range(4))
def test_roc_curve_points_are_sklearns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    is_ood = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + is_ood, 1)  # many ties, between and within the classes
    fpr, tpr = plots.roc_curve(scores, is_ood)
    expected_fpr, expected_tpr, _ = sklearn_roc_curve(is_ood, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)


def test_roc_curve_needs_both_classes_and_finite_scores() -> None:
    with pytest.raises(ValueError, match="both classes"):
        plots.roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="non-finite"):
        plots.roc_curve([0.1, np.nan], [False, True])


def test_score_plots_are_png_files_and_tensorboard_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    set_ids = np.repeat([0, 1, 3], 200)  # set 2 was not evaluated
    scores = {"raw": rng.normal(size=600) + (set_ids > 0), "ratio": torch.from_numpy(rng.normal(size=600))}
    names = ("in-distribution", "Held-out digits 6-9", "missing", "noise")
    tb_logger = open_tensorboard(tmp_path)
    written = plots.write_score_plots(tmp_path, scores, torch.from_numpy(set_ids), names, tb_logger, step=3)
    tb_logger.close()
    files = ["roc-Held-out-digits-6-9.png", "hist-Held-out-digits-6-9.png", "roc-noise.png", "hist-noise.png"]
    assert written == [tmp_path / name for name in files]
    for path in written:
        visible_png(path)
    assert not list(tmp_path.glob("*missing*")) and not list(tmp_path.glob(".*.tmp"))
    assert_logged_images(tmp_path, {f"{kind}/{name}" for kind in ("roc", "score_histogram") for name in names[1::2]})


def test_histograms_take_constant_and_stand_in_scores(tmp_path: Path) -> None:
    """All scores equal, and InvGlow's largest-float stand-in for non-finite likelihoods among ordinary ones."""
    extreme = np.r_[np.linspace(0, 1, 50), np.full(50, NON_FINITE_SCORE)]
    pairs = {"constant": plots.ScorePair(np.zeros(20), np.zeros(10)), "stand-in": plots.ScorePair(extreme, -extreme)}
    figure = plots.score_histogram_figure(pairs, "extremes", "in", "out")
    visible_png(plots.write_figure(tmp_path / "hist.png", figure))


def test_bar_figure(tmp_path: Path) -> None:
    figure = plots.bar_figure(["L1", "L2", "sum"], [71.5, 93.25, 95.0], "AUROC per level", "AUROC (%)")
    visible_png(plots.write_figure(tmp_path / "levels.png", figure))


def test_upscale_grid_repeats_each_pixel_by_one_integer_factor() -> None:
    grid = torch.arange(15, dtype=torch.uint8).reshape(1, 3, 5)
    large = plots.upscale_grid(grid)
    assert large.shape == (1, 3 * 86, 5 * 86)  # ⌈256 / 3⌉ = 86
    assert torch.equal(large[:, ::86, ::86], grid) and torch.equal(large[:, 85::86, 85::86], grid)
    assert torch.equal(plots.upscale_grid(grid, min_side=2), grid)


def test_stacked_grid_starts_each_group_on_a_new_row() -> None:
    first, second = torch.full((3, 1, 2, 2), 0.5), torch.ones(2, 1, 2, 2)
    grid = plots.stacked_grid([first, second], nrow=4)
    assert grid.dtype == torch.uint8 and grid.shape == (1, 2 * 4 + 2, 4 * 4 + 2)  # 2 rows of 4 tiles, padding 2
    tiles = grid[0, 2::4, 2::4]  # the top left pixel of each tile
    assert tiles.tolist() == [[128, 128, 128, 0], [255, 255, 0, 0]]  # each group's last row filled with black


def test_save_png_writes_the_image_exactly(tmp_path: Path) -> None:
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = plots.save_png(image, tmp_path / "new folder" / "image.png")
    stored = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(stored, image.permute(1, 2, 0).numpy())
    assert [p.name for p in path.parent.iterdir()] == ["image.png"]  # no temporary file left


# ---------------------------------------------------------------------------------------------------- papers
def _smoke_run(tmp_path: Path, paper: str, experiment: str, cell: str) -> Path:
    """Run ``cell`` (and what it needs) as a smoke run; its folder."""
    options = main.RunOptions(output=tmp_path, run_name="r", cells=(cell,), smoke=True, progress=False, device="cpu")
    main.run_paper(paper, [experiment], options)
    return tmp_path / paper / experiment / "r" / Path(*cell.split("/")[2:])


def test_invglow_cell_writes_score_plots_and_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(invglow.config.CONFIGS, "demo", INVGLOW_MINUSCULE)
    folder = _smoke_run(tmp_path, "invglow", "local_vs_semantic", "invglow/local_vs_semantic/full-glow-shapes/seed-0")
    for name in ("roc-digits-rgb", "hist-digits-rgb", "roc-uniform-noise", "hist-uniform-noise", "samples"):
        visible_png(folder / f"{name}.png")
    assert_logged_images(folder, {"roc/digits-rgb", "score_histogram/uniform-noise", "samples/T=1.0"})


def test_mchad_cell_writes_score_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    softmax = tuple(method for method in MCHAD_TINY.methods[DIGITS.name] if method.name == "Softmax")  # two scores
    monkeypatch.setitem(mchad.config.CONFIGS, "demo", dataclasses.replace(MCHAD_TINY, methods={DIGITS.name: softmax}))
    monkeypatch.setattr(mchad.experiments, "_images", {})
    folder = _smoke_run(tmp_path, "mchad", "main_table", "mchad/main_table/digits-0-5/softmax/seed-0")
    for name, _ in DIGITS.ood_sets:
        visible_png(folder / f"roc-{id_part(name)}.png")
        visible_png(folder / f"hist-{id_part(name)}.png")
    assert_logged_images(
        folder, {f"{kind}/{name}" for kind in ("roc", "score_histogram") for name, _ in DIGITS.ood_sets}
    )


def test_gaussian_ad_cell_writes_score_plots_and_level_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = dataclasses.replace(gaussian_ad.config.CONFIGS["demo"], **GAUSSIAN_AD_TINY)
    monkeypatch.setitem(gaussian_ad.config.CONFIGS, "demo", tiny)
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    folder = _smoke_run(tmp_path, "gaussian_ad", "table1", "gaussian_ad/table1/bottle/efficientnet-lite0/mvg")
    for name in ("roc-defective", "hist-defective", "levels"):
        visible_png(folder / f"{name}.png")
    assert_logged_images(folder, {"roc/defective", "score_histogram/defective", "auroc/levels"})


def test_memae_cell_writes_score_plots_and_image_grids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(memae.config.CONFIGS, "demo", MEMAE_TINY)
    folder = _smoke_run(tmp_path, "memae", "image_table", "memae/image_table/MNIST/MemAE/class-0/seed-0")
    for name in ("roc-test", "hist-test", "reconstructions", "memory-slots"):
        visible_png(folder / f"{name}.png")
    assert_logged_images(folder, {"roc/test", "test/input", "test/reconstruction", "test/memory_0_slots"})


def test_memae_evaluation_without_training_writes_its_plots(tmp_path: Path) -> None:
    """The few-shot "freeze" path: no training, no tensorboard; a C-MemAE's memories one block of rows each."""
    test = one_class_test_set(load("digits", "test", size=16), 1, np.random.default_rng(0))
    torch.manual_seed(0)
    model = build_model("digits", "cmemae", num_slots=4, shrink_threshold=0.1, num_conditions=2)
    loader = TensorBatchLoader(test.images[:100], test.labels[:100], 100, transform=normalisation(1))
    evaluation = Evaluation("known_1", create_evaluator(model, 1, (0, 1)), loader)
    fit(model, None, [evaluation], TrainConfig(epochs=1, batch_size=8), 2e-4, tmp_path, seed=0, progress=False)
    for name in ("roc-known_1", "hist-known_1", "reconstructions"):
        visible_png(tmp_path / f"{name}.png")
    slots = visible_png(tmp_path / "memory-slots.png")
    # two memories of 4 slots: two rows of 8 tiles of 16 + 2 pixels (one row would be 4 tiles), enlarged 7 times
    assert slots.shape[:2] == (7 * (2 * 18 + 2), 7 * (8 * 18 + 2))
    assert not list(tmp_path.glob("events.out.tfevents.*"))
