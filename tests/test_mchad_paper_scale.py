"""The paper-scale path on tiny stand-ins of the real files: SVHN, DTD, the four ODIN sets, TinyImages300k and a
pretrained WRN file, written in their original formats (tests/helpers). Only the sizes are shrunk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from mchad import experiments, paper
from mchad.config import CONFIGS, PAPER_DATASETS, PAPER_METHODS, PAPER_TRAIN, MainTableConfig
from mchad.data import build_run_data
from mchad.models import WideResNet
from mchad.pretrained import PRETRAINED_FILE
from tests.helpers.write_images import smooth_images, write_odin_set, write_textures
from tests.helpers.write_svhn import write_svhn
from tests.helpers.write_tiny import write_tiny_300k

SVHN = dataclasses.replace(PAPER_DATASETS[0], epochs=1)
TRAIN = dataclasses.replace(
    PAPER_TRAIN,
    batch_size=16,
    outlier_batch_size=32,
    eval_batch_size=64,
    depth=10,
    widen_factor=1,
    noise_count=10,
    checkpoint_every_iterations=None,
    cpu_threads=1,
)
N_TRAIN, N_TEST, N_ODIN, N_TINY = 48, 20, 6, 100


@pytest.fixture
def paper_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    write_svhn(data / "svhn", N_TRAIN, N_TEST)
    write_textures(data, {"banded": list(smooth_images(3, 40, 50)), "woven": list(smooth_images(2, 48, 48, seed=1))})
    for name in ("tinyimagenet-crop", "tinyimagenet-resize", "lsun-crop", "lsun-resize"):
        write_odin_set(data, name, list(smooth_images(N_ODIN, 32, 32, seed=2)))
    (data / "tiny-images").mkdir()
    write_tiny_300k(data / "tiny-images" / "300K_random_images.npy", smooth_images(N_TINY, 32, 32, seed=3))
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save({f"module.{k}": v for k, v in WideResNet(1000, 10, 1).state_dict().items()}, weights / PRETRAINED_FILE)
    monkeypatch.setenv("OOD_REPRO_DATA", str(data))
    monkeypatch.setenv("OOD_REPRO_WEIGHTS", str(weights))
    return data


def test_paper_data_has_every_test_case_in_the_label_convention(paper_files: Path) -> None:
    data = build_run_data(SVHN, TRAIN, outliers=True, seed=1, device=torch.device("cpu"))
    assert data.ood_names == ("Texture", "Uniform", "Gaussian", "Tiny Crop", "Tiny Resize", "LSUN Crop", "LSUN Resize")
    batches = list(data.evaluation)
    labels = torch.cat([labels for _, labels in batches])
    counts = {k: int((labels == -(k + 1)).sum()) for k in range(7)}
    assert int((labels >= 0).sum()) == N_TEST
    assert counts == {0: 5, 1: 10, 2: 10, 3: N_ODIN, 4: N_ODIN, 5: N_ODIN, 6: N_ODIN}
    assert all(images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32 for images, _ in batches)
    (images, ids), (outliers, outlier_labels) = next(iter(data.train))
    assert images.shape == (16, 3, 32, 32) and outliers.shape == (32, 3, 32, 32)
    assert (ids >= 0).all() and (outlier_labels == -1).all()
    # ToTensor + SVHN normalisation (mchad.md §2.2) on the test sets
    grey = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    normalised = data.evaluation.loaders[0].transform(grey)[0, :, 0, 0].numpy()
    np.testing.assert_allclose(normalised, (128 / 255 - np.array(SVHN.mean)) / np.array(SVHN.std), rtol=1e-5)


def test_paper_scale_table_runs_on_stand_in_files(
    paper_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = MainTableConfig(TRAIN, (SVHN,), {"SVHN": PAPER_METHODS["SVHN"]}, {"SVHN": "SVHN"}, seeds=(1,))
    monkeypatch.setitem(CONFIGS, "paper", config)
    monkeypatch.setattr(experiments, "_images", {})
    options = main.RunOptions(scale="paper", output=tmp_path / "runs", progress=False, device="cpu")
    assert (
        main.list_paper_cells("mchad", options=options).splitlines()[0].split()[0]
        == "mchad/main_table/svhn/mchad/seed-1"
    )
    rows = main.run_paper("mchad", ["main_table"], options)
    auroc = {row.row: row for row in rows if row.column == "AUROC" and row.table == paper.TABLE_NAME}
    assert set(auroc) == {f"SVHN {method.name}" for method in PAPER_METHODS["SVHN"]}
    assert (auroc["SVHN G-MCHAD"].paper_value, auroc["SVHN G-MCHAD"].paper_spread) == (99.38, 0.05)
    assert auroc["SVHN G-MCHAD"].note == "" and auroc["SVHN G-MCHAD"].seeds == (1,)
    assert auroc["SVHN G-MCHAD"].n == 7  # 1 seed × 7 OOD sets
    per_set = [row for row in rows if row.row == "SVHN MCHAD" and row.table == paper.PER_SET_TABLE_NAME]
    assert [row.paper_value for row in per_set] == [99, None, None, 99, 99, 99, 99]
