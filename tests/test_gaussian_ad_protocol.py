"""The 5-fold protocol, working points, synthetic MVTec data, feature extraction, and the cells:
their ids, one cell with its prerequisites, the end-to-end smoke run and a resumed run."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

import main
from common.datasets.mvtec import read_mvtec
from common.errors import MissingDataError, UsageError
from gaussian_ad import data, experiments
from gaussian_ad.backbones import IMAGENET_MEAN, IMAGENET_STD
from gaussian_ad.config import CONFIGS
from gaussian_ad.engine import cpu_forward_size, extract_features, pooled_levels
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
from tests.helpers.tensorboard import summaries


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


def test_bad_inputs(tmp_path) -> None:
    model = torch.nn.Identity()
    with pytest.raises(ValueError, match="uint8 RGB"):
        extract_features(model, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.device("cpu"))
    (tmp_path / "mvtec" / "carpet").mkdir(parents=True)
    with pytest.raises(MissingDataError, match="train"):
        read_mvtec(tmp_path / "mvtec", "carpet", "train")


class _TwoLevels(torch.nn.Module):
    """A stand-in backbone with two "levels": the channel means and two channel maxima of its input."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))[:, :2]]


def test_extraction_collects_every_level_in_image_order() -> None:
    images = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    levels = extract_features(_TwoLevels(), images, torch.device("cpu"), batch_size=3, progress=False)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    expected = _TwoLevels()((images.float() / 255 - mean) / std)
    assert [level.shape for level in levels] == [(7, 3), (7, 2)]
    for got, want in zip(levels, expected, strict=True):
        torch.testing.assert_close(got, want)


class _RecordedBatches(_TwoLevels):
    """:class:`_TwoLevels` that records the batch size of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.sizes.append(len(x))
        return super().forward(x)


@pytest.mark.parametrize(("size", "images"), [(32, 4), (224, 4), (380, 4), (456, 2), (528, 2), (600, 1), (2000, 1)])
def test_cpu_forwards_hold_at_most_four_images_of_380_px(size: int, images: int) -> None:
    assert cpu_forward_size(size, size) == images  # 4 · 380² pixels, 1 to 4 images: 4·380²/456² = 2.8 → 2


def test_extraction_on_the_cpu_runs_forwards_of_a_few_images_and_joins_them_in_order() -> None:
    images = torch.randint(0, 256, (11, 3, 8, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    backbone = _RecordedBatches()
    levels = extract_features(backbone, images, torch.device("cpu"), batch_size=10, progress=False)
    assert backbone.sizes == [4, 4, 2, 1]  # batches of 10 and 1, each in forwards of at most 4
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    for got, want in zip(levels, _TwoLevels()((images.float() / 255 - mean) / std), strict=True):
        torch.testing.assert_close(got, want)


def test_off_the_cpu_a_batch_is_one_forward() -> None:
    backbone = _RecordedBatches()
    levels = pooled_levels(backbone, torch.zeros(10, 3, 8, 8, device="meta"))
    assert backbone.sizes == [10] and [level.shape for level in levels] == [(10, 3), (10, 2)]


TINY = {"categories": ("carpet", "bottle"), "n_train": 5, "n_test_good": 2, "n_test_defect": 1, "image_size": 64}


@pytest.fixture
def tiny_demo(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The demo scale on two tiny synthetic categories, one augmented pass, one PCA and one NPCA threshold."""
    tiny = dataclasses.replace(
        CONFIGS["demo"], **TINY, augment_passes=1, pca_thresholds=(0.99,), npca_thresholds=(0.99,)
    )
    monkeypatch.setitem(CONFIGS, "demo", tiny)
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    return tiny


def _cells(options: main.RunOptions | None = None) -> list[tuple[str, list[str]]]:
    return [
        (cell.id, list(cell.needs))
        for _, cells in main.listed_cells("gaussian_ad", options=options)
        for cell, _ in cells
    ]


def test_cell_ids_are_unique_stable_and_their_needs_are_cells() -> None:
    cells = _cells()
    assert cells == _cells()
    ids = [cell_id for cell_id, _ in cells]
    assert len(ids) == len(set(ids)) == 105  # 20 + 10 + 30 + 25 + 20: features and fit cells of tables I–V
    assert all(need in ids for _, needs in cells for need in needs)
    fit = dict(cells)["gaussian_ad/table5/bottle/efficientnet-lite0/npca-0.99"]
    assert fit == [
        "gaussian_ad/table5/features/efficientnet-lite0/bottle",
        "gaussian_ad/table5/augmented-2/efficientnet-lite0/bottle",
    ]
    paper = [cell_id for cell_id, _ in _cells(main.RunOptions(scale="paper"))]
    assert len(paper) == len(set(paper)) == 660 and "gaussian_ad/table2/screw/efficientnet-b7/mvg" in paper
    with pytest.raises(UsageError, match="--epochs does not apply"):
        main.list_paper_cells("gaussian_ad", options=main.RunOptions(epochs=1))


def test_one_cell_runs_with_exactly_its_prerequisites(tmp_path, tiny_demo) -> None:
    wanted = "gaussian_ad/table5/bottle/efficientnet-lite0/npca-0.99"
    options = main.RunOptions(output=tmp_path / "runs", run_name="r", cells=(wanted,), progress=False, device="cpu")
    assert main.run_paper("gaussian_ad", ["table5"], options) == []  # the table is not complete
    run = tmp_path / "runs" / "gaussian_ad" / "table5" / "r"
    finished = {str(path.parent.relative_to(run)) for path in run.rglob("result.json")}
    assert finished == {
        "features/efficientnet-lite0/bottle",
        "augmented-1/efficientnet-lite0/bottle",
        "bottle/efficientnet-lite0/npca-0.99",
    }
    values = json.loads((run / "bottle/efficientnet-lite0/npca-0.99/result.json").read_text())["values"]
    assert list(values["auroc"]) == [*(f"L{i}" for i in range(1, 10)), "sum"]
    logged = summaries(run / "bottle/efficientnet-lite0/npca-0.99")
    assert logged["auroc/sum"][0].simple_value == pytest.approx(100 * values["auroc"]["sum"])  # percent, as the tables
    assert {"scores/good", "scores/defective"} <= set(logged)
    augmented = torch.load(run / "augmented-1/efficientnet-lite0/bottle/features.pt", weights_only=True)
    assert augmented["augmented"][8].shape == (1, 5, 1280)


def test_demo_end_to_end_smoke(tmp_path, tiny_demo) -> None:
    options = main.RunOptions(output=tmp_path / "runs", run_name="r", progress=False, device="cpu")
    rows = main.run_paper("gaussian_ad", options=options)
    titles = {key: title for key, title in experiments.TABLE_TITLES.items() if key != "table7"}
    assert {row.table for row in rows} == set(titles.values()), "table7 is paper-scale only"
    table = {title: key for key, title in titles.items()}
    rows = [dataclasses.replace(r, table=table[r.table]) for r in rows]
    sum_mvg = next(r for r in rows if (r.table, r.row, r.column) == ("table1", "sum", "MVG"))
    assert (sum_mvg.paper_value, sum_mvg.paper_spread, sum_mvg.n) == (94.8, 1.6, 2)
    assert 0 <= sum_mvg.ours <= 100 and sum_mvg.spread is not None
    assert sum_mvg.spread_kind == "SEM (ddof 1) over categories"
    carpet = next(r for r in rows if (r.table, r.row, r.column) == ("table5", "carpet", "NPCA 0.99"))
    assert (carpet.paper_value, carpet.n, carpet.spread) == (100.0, 1, None)
    assert sum(r.table == "table4" for r in rows) == 3 * (2 * 5 + 1)  # Lite0 PCA, none, NPCA; 5 σ × FPR, TPR + AUROC
    for experiment in ("table1", "table5"):
        run = tmp_path / "runs" / "gaussian_ad" / experiment / "r"
        assert json.loads((run / "results.json").read_text())["rows"]
        assert list((run / "carpet" / "efficientnet-lite0" / "mvg").glob("events.out.tfevents.*"))
    points = summaries(tmp_path / "runs/gaussian_ad/table4/r/carpet/efficientnet-lite0/mvg")
    assert set(points["working_points/fpr"]) == {1, 2, 3, 4, 5}


@pytest.mark.slow
def test_demo_scale_reproduces_the_papers_ordering(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole demo scale (≈ 1.5–3 min on CPU): the MVG beats the L2 baseline and detects the drawn defects."""
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    rows = main.run_paper("gaussian_ad", options=main.RunOptions(output=tmp_path, progress=False, device="cpu"))
    key = {title: key for key, title in experiments.TABLE_TITLES.items()}
    cell = {(key[r.table], r.row, r.column): r.ours for r in rows}
    assert cell[("table1", "sum", "MVG")] > 80
    assert cell[("table1", "sum", "MVG")] > cell[("table1", "sum", "L2")]
    assert cell[("table5", "mean", "MVG")] > 80


def test_resume_continues_from_the_features_files(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = dataclasses.replace(CONFIGS["demo"], **{**TINY, "categories": ("grid",)})
    monkeypatch.setitem(CONFIGS, "demo", tiny)
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    options = main.RunOptions(output=tmp_path / "runs", progress=False, device="cpu")
    whole = main.run_paper("gaussian_ad", ["table2"], dataclasses.replace(options, run_name="whole"))
    features = "gaussian_ad/table2/features/efficientnet-lite0/grid"
    main.run_paper("gaussian_ad", ["table2"], dataclasses.replace(options, run_name="r", cells=(features,)))
    run = tmp_path / "runs" / "gaussian_ad" / "table2" / "r"
    fit_result = run / "grid" / "efficientnet-lite0" / "mvg" / "result.json"
    assert (run / "features/efficientnet-lite0/grid/features.pt").is_file() and not fit_result.exists()
    monkeypatch.setattr(data, "_FEATURES", OrderedDict())  # a new process: nothing in memory

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were extracted or read again")

    monkeypatch.setattr(data, "extract_features", no_extraction)
    resumed = main.run_paper("gaussian_ad", options=main.RunOptions(resume=run, progress=False, device="cpu"))
    assert [(r.row, r.ours, r.spread) for r in resumed] == [(r.row, r.ours, r.spread) for r in whole]
    monkeypatch.setattr(experiments, "stored_features", no_extraction)  # a finished run: no cell runs again
    again = main.run_paper("gaussian_ad", options=main.RunOptions(resume=run / "grid", progress=False, device="cpu"))
    assert again == resumed


def test_feature_sets_are_kept_in_memory_up_to_a_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_FEATURES", OrderedDict())
    monkeypatch.setattr(data, "FEATURES_MEMORY", 3 * 400)  # three sets of 100 float32
    for index in range(5):
        data._keep(("set", index), {"train": [torch.zeros(100)], "test_labels": torch.zeros(0)})
    assert list(data._FEATURES) == [("set", 2), ("set", 3), ("set", 4)]
