"""The 5-fold protocol, aggregation, working points, synthetic MVTec data, augmentation and the end-to-end smoke run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

import main
from common.datasets.mvtec import read_mvtec
from common.errors import MissingDataError
from common.papers import RunOptions
from gaussian_ad import experiments
from gaussian_ad.augment import Switches, augment
from gaussian_ad.config import CONFIGS
from gaussian_ad.engine import extract_features
from gaussian_ad.protocol import (
    CategoryFeatures,
    Variant,
    auroc,
    evaluate_fold,
    fold_train_indices,
    fold_training_features,
    working_points,
)
from gaussian_ad.synthetic_mvtec import DEFECTS, write_synthetic_mvtec


def test_folds_are_sklearn_kfold_over_sorted_indices() -> None:
    folds = fold_train_indices(23)
    expected = [train for train, _ in KFold(5, shuffle=True, random_state=0).split(np.arange(23))]
    assert len(folds) == 5
    for ours, theirs in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    held_out = np.concatenate([np.setdiff1d(np.arange(23), f) for f in folds])
    np.testing.assert_array_equal(np.sort(held_out), np.arange(23))  # every image held out exactly once
    assert {len(f) for f in folds} == {18, 19}
    with pytest.raises(ValueError, match="4 training images are too few for 5 folds"):
        fold_train_indices(4)


def test_working_points_hand_case() -> None:
    distances = torch.tensor([0.5, 1.5, 2.5, 0.2, 3.0], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1])
    points = working_points(distances, labels, dof=1, sigmas=(1, 2))  # k = 1: t_1 = 1, t_2 = 2
    assert points[1] == pytest.approx((2 / 3, 1 / 2))
    assert points[2] == pytest.approx((1 / 3, 1 / 2))


def test_fold_evaluation_and_augmented_training_features() -> None:
    generator = torch.Generator().manual_seed(0)
    train = [torch.randn(20, 4, generator=generator), torch.randn(20, 6, generator=generator)]
    test = [torch.randn(8, 4, generator=generator) + 3 * torch.arange(8).ge(4)[:, None], torch.randn(8, 6)]
    labels = torch.arange(8).ge(4).long()
    augmented = [torch.stack([level, level + 0.01]) for level in train]
    features = CategoryFeatures(train, test, labels, augmented)
    indices = fold_train_indices(20)[0]
    assert fold_training_features(features, indices, 1, augmented=True).shape == (2 * len(indices), 6)
    result = evaluate_fold(features, indices, Variant("mvg"), (0, 1))
    assert result.distances.shape == (2, 8) and result.dofs == [4, 6]
    assert auroc(result.distances[0], labels) == pytest.approx(roc_auc_score(labels, result.distances[0]))
    assert auroc(result.distances[0], labels) > 0.9  # shifted test samples score higher
    with pytest.raises(ValueError, match="no augmented"):
        fold_training_features(features._replace(augmented=None), indices, 0, augmented=True)


def test_synthetic_mvtec_layout_masks_and_determinism(tmp_path) -> None:
    root = write_synthetic_mvtec(
        tmp_path / "a", ("carpet", "bottle"), n_train=3, n_test_good=2, n_test_defect=1, size=64
    )
    test = read_mvtec(root, "bottle", "test")
    assert test.defect_types == ["good", "good", *sorted(DEFECTS)]
    assert test.labels.tolist() == [0, 0, 1, 1, 1]
    assert test.masks[:2].sum() == 0 and all(m.sum() > 0 for m in test.masks[2:])
    assert read_mvtec(root, "carpet", "train").images.shape == (3, 3, 64, 64)
    again = write_synthetic_mvtec(tmp_path / "b", ("bottle",), n_train=3, n_test_good=2, n_test_defect=1, size=64)
    assert torch.equal(read_mvtec(again, "bottle", "test").images, test.images)
    with pytest.raises(ValueError, match="unknown"):
        write_synthetic_mvtec(tmp_path / "c", ("screw",))


def test_augmentation_pass() -> None:
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = augment(images, Switches.for_category("carpet"), torch.Generator().manual_seed(2))
    again = augment(images, Switches.for_category("carpet"), torch.Generator().manual_seed(2))
    assert out.dtype == torch.uint8 and out.shape == images.shape and torch.equal(out, again)
    unchanged = (out == images).flatten(1).all(dim=1).float().mean()
    assert 0.25 < unchanged < 0.85  # half are left untouched, a few touched ones draw no op
    assert Switches.for_category("screw").flip is False and Switches.for_category("grid").background_edge is False
    with pytest.raises(ValueError, match="uint8"):
        augment(images.float(), Switches(), torch.Generator())


def test_bad_inputs(tmp_path) -> None:
    model = torch.nn.Identity()
    with pytest.raises(ValueError, match="uint8 RGB"):
        extract_features(model, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.device("cpu"))
    (tmp_path / "mvtec" / "carpet").mkdir(parents=True)
    with pytest.raises(MissingDataError, match="train"):
        read_mvtec(tmp_path / "mvtec", "carpet", "train")


def test_demo_end_to_end_smoke(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = dataclasses.replace(
        CONFIGS["demo"],
        categories=("carpet", "bottle"),
        n_train=5,
        n_test_good=2,
        n_test_defect=1,
        image_size=64,
        augment_passes=1,
        pca_thresholds=(0.99,),
        npca_thresholds=(0.99,),
    )
    monkeypatch.setitem(CONFIGS, "demo", tiny)
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    main.discover_papers()
    rows = main.run_paper("gaussian_ad", options=RunOptions(output=tmp_path / "runs", progress=False, device="cpu"))
    titles = {key: title for key, title in experiments.TABLE_TITLES.items() if key != "table7"}
    assert {row.table for row in rows} == set(titles.values()), "table7 is paper-scale only"
    table = {title: key for key, title in titles.items()}
    rows = [dataclasses.replace(r, table=table[r.table]) for r in rows]
    sum_mvg = next(r for r in rows if (r.table, r.row, r.column) == ("table1", "sum", "MVG"))
    assert sum_mvg.paper_value == 94.8 and 0 <= sum_mvg.ours <= 100 and sum_mvg.spread is not None
    assert next(r for r in rows if (r.table, r.row) == ("table5", "carpet")).paper_value in (100.0,)
    assert sum(r.table == "table4" for r in rows) == 3 * (2 * 5 + 1)  # Lite0 PCA, none, NPCA; 5 σ × FPR, TPR + AUROC
    for experiment in ("table1", "table5"):
        run = next((tmp_path / "runs" / "gaussian_ad" / experiment).iterdir())
        assert json.loads((run / "results.json").read_text())["rows"]
        assert list(run.glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_demo_scale_reproduces_the_papers_ordering(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole demo scale (≈ 1–3 min on CPU): the MVG beats the L2 baseline and detects the drawn defects."""
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    main.discover_papers()
    rows = main.run_paper("gaussian_ad", options=RunOptions(output=tmp_path / "runs", progress=False, device="cpu"))
    key = {title: key for key, title in experiments.TABLE_TITLES.items()}
    cell = {(key[r.table], r.row, r.column): r.ours for r in rows}
    assert cell[("table1", "sum", "MVG")] > 80
    assert cell[("table1", "sum", "MVG")] > cell[("table1", "sum", "L2")]
    assert cell[("table5", "mean", "MVG")] > 80


def test_resume_reuses_the_run_folders_features(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = dataclasses.replace(
        CONFIGS["demo"], categories=("grid",), n_train=5, n_test_good=2, n_test_defect=1, image_size=64
    )
    monkeypatch.setitem(CONFIGS, "demo", tiny)
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    main.discover_papers()
    options = RunOptions(output=tmp_path / "runs", progress=False, device="cpu")
    first = main.run_paper("gaussian_ad", ["table2"], options)
    run_dir = next((tmp_path / "runs" / "gaussian_ad" / "table2").iterdir())
    assert len(list((run_dir / "features").glob("*.pt"))) == 1
    monkeypatch.setattr(experiments, "_FEATURES", {})  # a new process: nothing in memory

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(experiments, "extract_features", no_extraction)
    resumed = main.run_paper("gaussian_ad", ["table2"], dataclasses.replace(options, resume=run_dir))
    assert [r.ours for r in resumed] == [r.ours for r in first]
