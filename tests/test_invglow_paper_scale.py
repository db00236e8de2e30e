"""``python main.py invglow tables --scale paper`` end to end on small files in the real formats.

The data root holds CIFAR-10/100 pickles, SVHN .mat files, the LSUN validation LMDBs, TinyImageNet-200's folders,
aligned CelebA with its partition list and MNIST / Fashion-MNIST IDX files (tests/helpers); Tiny Images is a
binary in the real format, under its own root, cut by ``invglow/create_tiny.py``. The paper configuration keeps
its protocol (32×32 images, 3 scales, sets and their roles, augmentation, outlier loss, seed); only the Glow
(K = 1, 8 hidden channels), the epochs and the batches are shrunk.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import main
from common.cells import CELL_RESULT
from common.datasets.lsun_lmdb import LSUN_CATEGORIES
from common.datasets.tiny_images import BINARY_NAME
from common.handlers import CHECKPOINT_DIR
from common.results import RESULTS_FILE
from invglow import config, create_tiny, data, paper
from invglow.data import CHUNK_SIZE, tiny_images, to_size
from invglow.engine import FINAL_MODEL
from tests.helpers.tensorboard import summaries
from tests.helpers.write_cifar import save_cifar10, write_cifar100
from tests.helpers.write_idx import write_idx_dataset
from tests.helpers.write_images import smooth_images, write_celeba
from tests.helpers.write_lsun import write_lsun_category
from tests.helpers.write_svhn import write_svhn
from tests.helpers.write_tiny import decode_tiny_index, write_index_file, write_tiny_binary
from tests.helpers.write_tinyimagenet import write_tinyimagenet

N_TRAIN, N_TEST, N_ODIN = 80, 24, 12  # 80 training images in batches of 8: 10 steps, one tensorboard log
CELEBA_PARTITIONS = [0] * 4 + [1] * 2 + [2] * N_ODIN  # train, valid, test codes of list_eval_partition.txt
TINY_BINARY_CHUNKS, TINY_KEPT_CHUNKS = 10, 5  # 640 images in the binary, 320 in the subset (256 train, 64 test)

_SMALL_TRAIN = {"epochs": 1, "batch_size": 8, "eval_batch_size": 128, "init_batches": 2}
SMALL_PAPER = dataclasses.replace(
    config.PAPER,
    glow=dataclasses.replace(config.PAPER.glow, steps=1, hidden=8),
    pretrain=dataclasses.replace(config.PAPER.pretrain, **_SMALL_TRAIN),
    finetune=dataclasses.replace(config.PAPER.finetune, **_SMALL_TRAIN),
)
"""The paper configuration with only the model, epochs and batches shrunk."""

SEED = config.PAPER.seeds[0]
RGB_SETS = ("cifar10", "cifar100", "svhn")
RGB_OOD = (*RGB_SETS, "lsun", "celeba", "tinyimagenet")
GREY_SETS = ("fashion-mnist", "mnist")
RUN = ["--scale", "paper", "--device", "cpu", "--no-progress"]


@pytest.fixture
def paper_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every file the paper scale reads, small, under ``tmp_path / "data"``; Tiny under its own root."""
    root = tmp_path / "data"
    # CIFAR-10 smooth (PNG-compressible), SVHN white noise (incompressible): Serra's PNG score must separate them
    cifar10 = {split: (np.ascontiguousarray(smooth_images(n, 32, 32, seed=1).transpose(0, 3, 1, 2)), np.arange(n) % 10)
               for split, n in (("train", N_TRAIN), ("test", N_TEST))}  # fmt: skip
    save_cifar10(root / "cifar10", cifar10)
    write_cifar100(root / "cifar100", N_TRAIN, N_TEST, seed=2)
    write_svhn(root / "svhn", N_TRAIN, N_TEST, seed=3)
    for index, category in enumerate(LSUN_CATEGORIES):  # the original's LSUN: validation LMDBs, webp images
        write_lsun_category(root, category, list(smooth_images(2, 48, 40 + 4 * index, seed=40 + index)))
    write_tinyimagenet(root, test=N_ODIN, seed=5)  # TinyImageNet-200's folders, 64×64 JPEGs
    write_celeba(root, list(smooth_images(len(CELEBA_PARTITIONS), 218, 178, seed=6)), CELEBA_PARTITIONS)
    for offset, name in enumerate(GREY_SETS):
        write_idx_dataset(root / name, N_TRAIN, N_TEST, seed=7 + offset)
    tiny_root = tmp_path / "tiny"
    tiny_root.mkdir()
    binary = write_tiny_binary(tiny_root / BINARY_NAME, TINY_BINARY_CHUNKS * CHUNK_SIZE)
    cut = ["--out-dir", str(tiny_root), "--n-chunks", str(TINY_KEPT_CHUNKS), "--expected-images", "0"]
    create_tiny.main(["--binary", str(binary), *cut, "--no-progress"])
    monkeypatch.setenv("OOD_REPRO_DATA", str(root))
    monkeypatch.setenv("OOD_REPRO_TINY_IMAGES", str(tiny_root))
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setitem(config.CONFIGS, "paper", SMALL_PAPER)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead, badly so on shared cores
    yield root
    torch.set_num_threads(threads)


def test_paper_tiny_images_are_the_subset_split_by_chunk(paper_files: Path, tmp_path: Path) -> None:
    subset_indices = np.load(tmp_path / "tiny" / "tiny_subset_indices.npy")
    train, test = (tiny_images(SMALL_PAPER, tmp_path / "unused", SEED, split) for split in ("train", "test"))
    assert train.shape == (4 * CHUNK_SIZE, 3, 32, 32) and test.shape == (CHUNK_SIZE, 3, 32, 32)
    assert train.is_contiguous() and test.is_contiguous()
    indices = [decode_tiny_index(image.permute(1, 2, 0).numpy()) for image in torch.cat([train, test])]
    assert sorted(indices) == sorted(subset_indices.tolist())  # every subset image once, the right way round
    chunks = [{index // CHUNK_SIZE for index in part} for part in (indices[: len(train)], indices[len(train) :])]
    assert not chunks[0] & chunks[1] and len(chunks[1]) == 1  # 80/20 by whole chunks of the binary
    grey = config.grey_config(SMALL_PAPER)
    grey_train, grey_test = (tiny_images(grey, tmp_path / "unused", SEED, split) for split in ("train", "test"))
    luma = (train.double() * torch.tensor([0.2989, 0.5870, 0.1140])[None, :, None, None]).sum(1, keepdim=True)
    assert grey_train.shape == (len(train), 1, 32, 32) and len(grey_test) == len(test)
    assert (grey_train.double() - luma).abs().max() <= 0.5 + 1e-6


def test_cifar_free_tiny_subset_is_read_with_the_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_root = tmp_path / "tiny"
    tiny_root.mkdir()
    monkeypatch.setenv("OOD_REPRO_TINY_IMAGES", str(tiny_root))
    binary = write_tiny_binary(tiny_root / BINARY_NAME, TINY_BINARY_CHUNKS * CHUNK_SIZE)
    cut = ["--binary", str(binary), "--out-dir", str(tiny_root), "--n-chunks", str(TINY_KEPT_CHUNKS)]
    create_tiny.main([*cut, "--expected-images", "0", "--no-progress"])  # the manuscript's subset, with CIFAR
    # two chunks of that subset hold a "CIFAR" image: one listed as CIFAR-10's, one as CIFAR-100's (1-based, 0 = none)
    cifar_chunks = sorted({int(index) // CHUNK_SIZE for index in np.load(tiny_root / "tiny_subset_indices.npy")})[:2]
    write_index_file(tiny_root / "80mn_cifar_idxs.txt", [cifar_chunks[0] * CHUNK_SIZE + 5 + 1])
    write_index_file(tiny_root / "cifar_indexes", [0, cifar_chunks[1] * CHUNK_SIZE + 63 + 1])
    cifar_free = dataclasses.replace(config.PAPER, exclude_cifar_from_tiny=True)
    with pytest.raises(FileNotFoundError, match=r"tiny_subset_exclude_cifar\.json"):  # never the other subset
        tiny_images(cifar_free, tmp_path / "unused", SEED, "train")
    create_tiny.main([*cut, "--expected-images", "0", "--no-progress", "--exclude-cifar"])

    for exclude, subset in ((False, "tiny_subset"), (True, "tiny_subset_exclude_cifar")):
        chosen = dataclasses.replace(config.PAPER, exclude_cifar_from_tiny=exclude)
        assert config.grey_config(chosen).exclude_cifar_from_tiny == exclude  # the grey Tiny model's subset too
        images = torch.cat([tiny_images(chosen, tmp_path / "unused", SEED, split) for split in ("train", "test")])
        indices = sorted(decode_tiny_index(image.permute(1, 2, 0).numpy()) for image in images)
        assert indices == sorted(np.load(tiny_root / f"{subset}_indices.npy").tolist())
        assert len(indices) == TINY_KEPT_CHUNKS * CHUNK_SIZE
        assert bool({index // CHUNK_SIZE for index in indices} & set(cifar_chunks)) != exclude


def test_to_size_in_batches_equals_converting_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.randint(0, 256, (10, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([7, 2, 9, 0, 4, 5, 1])
    at_once = to_size(images, 32, 1, rows)
    monkeypatch.setattr(data, "CONVERT_BATCH", 3)
    grey = to_size(images, 32, 1, rows)
    assert grey.dtype == torch.uint8 and grey.is_contiguous() and torch.equal(grey, at_once)
    luma = (images[rows].double() * torch.tensor([0.2989, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
    expected = F.interpolate(luma.round(), size=32, mode="bilinear", align_corners=False, antialias=True)
    # float32 luma may round a .5 the other way (one grey level before resizing), then the output is rounded again
    assert (grey.double() - expected).abs().max() <= 1.5
    assert torch.equal(to_size(images[:, :1], 28, 3), images[:, :1].expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="channels"):
        to_size(images[:, :2], 32, 3)


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("tiny/tiny_subset.json", r"(?s)create_tiny\.py.*/tiny/tiny_subset\.json"),  # how to get it, then the file
        ("data/svhn/train_32x32.mat", r"train_32x32\.mat"),  # read after two finetuned sets if read lazily
        ("data/mnist/train-images-idx3-ubyte.gz", r"train-images-idx3-ubyte"),  # grey: the RGB pretraining reads it
    ],
)
def test_missing_data_is_named_before_any_training(
    paper_files: Path, tmp_path: Path, missing: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / missing).unlink()
    assert main.main(["invglow", "tables", *RUN]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not list((tmp_path / "runs").rglob(FINAL_MODEL))


def test_paper_scale_tables_end_to_end_and_resume(paper_files: Path, tmp_path: Path) -> None:
    assert main.main(["invglow", "tables", *RUN]) == 0
    (run_dir,) = (tmp_path / "runs" / "invglow" / "tables").iterdir()
    rows = json.loads((run_dir / RESULTS_FILE).read_text())["rows"]
    assert all(row["scale"] == "paper" and row["seeds"] == [SEED] for row in rows)
    assert all(math.isfinite(row["ours"]) and 0.0 <= row["ours"] <= 100.0 for row in rows)

    # every cell of every table of the paper scale, once
    cells = {(row["table"], row["row"], row["column"]): row for row in rows}
    rgb_columns = [f"{in_name} → {ood}" for in_name in RGB_SETS for ood in RGB_OOD if ood != in_name]
    grey_columns = ["fashion-mnist → mnist", "mnist → fashion-mnist"]
    expected = {(paper.UNSUPERVISED_TABLE, row, column) for row in paper.UNSUPERVISED_ROWS for column in rgb_columns}
    expected |= {(paper.SUPERVISED_TABLE, row, column) for row in paper.SUPERVISED_ROWS for column in rgb_columns}
    expected |= {(paper.GREY_TABLE, row, column) for row in paper.GREY_ROWS for column in grey_columns}
    expected |= {(paper.SERRA_TABLE, row, column) for row, column in paper.SERRA_VALUES}
    assert set(cells) == expected and len(rows) == len(expected)
    for (table, row, column), cell in cells.items():
        if table == paper.SERRA_TABLE:
            assert cell["paper_value"] == paper.SERRA_VALUES[(row, column)].value
        else:  # the manuscript's tables were not retrieved: missing, never guessed; no demo stand-in note
            assert cell["paper_value"] is None and cell["note"] == ""
    # Serra is CIFAR-10 (in-distribution, smooth) vs SVHN (noise): every SVHN image has the larger PNG
    assert cells[(paper.SERRA_TABLE, paper.SERRA_PNG, paper.ORIGINAL_CODE)]["ours"] == 100.0

    # each cell: its own folder with tensorboard logs (README "Tensorboard"), checkpoints and the final model
    variants = ("plain", "outlier-loss", "margin-loss", "supervised")
    cells = {f"tiny-pretrain/seed-{SEED}": ("tiny", RGB_OOD), f"tiny-pretrain-grey/seed-{SEED}": ("tiny", GREY_SETS)}
    for sets, prefix, cell_variants in ((RGB_SETS, "", variants), (GREY_SETS, "grey-", variants[:2])):
        for name in sets:
            others = tuple(ood for ood in (RGB_OOD if sets == RGB_SETS else GREY_SETS) if ood != name)
            cells |= {f"finetune-{prefix}{name}/{variant}/seed-{SEED}": (name, others) for variant in cell_variants}
    finished = {str(path.parent.relative_to(run_dir)) for path in run_dir.rglob(CELL_RESULT)}
    assert finished == set(cells)
    for cell, (in_name, ood_names) in cells.items():
        folder = run_dir / cell
        assert list((folder / CHECKPOINT_DIR).glob("checkpoint_*.pt")) and (folder / FINAL_MODEL).is_file(), cell
        tags = set(summaries(folder))
        scores = {"raw", "ratio", "final_scale"} - {"ratio" if in_name == "tiny" else ""}
        scores -= {"final_scale" if "/supervised/" in cell else ""}  # one class-marginal lp, no scales
        logged = {"train/loss", "train/bpd", "train/skipped_steps", "lr/group_0", "eval/non_finite", "samples/T=1.0"}
        logged |= {f"eval/{kind}/{name}" for kind in ("bpd", "score-raw") for name in (in_name, *ood_names)}
        logged |= {f"eval/AUROC-{kind}/{ood}" for kind in scores for ood in ood_names}
        assert logged <= tags, (cell, logged - tags)
        assert not {tag for tag in tags if tag.startswith("eval/AUROC-")} - logged, cell  # no other OOD set
        assert not {tag for tag in tags if tag.startswith("eval/likelihoods")}, cell  # per-image values: no scalars
        assert ("train/outlier_loss" in tags) == (cell.split("/")[1] in variants[1:]), cell
        assert ("train/wrong_class_loss" in tags) == ("/supervised/" in cell), cell

    # resuming the finished run (the README's command) runs no cell: only the table is written again
    written = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*") if path.is_file()}
    assert main.main(["invglow", "--resume", str(run_dir), *RUN]) == 0
    rewritten = {path for path in run_dir.rglob("*") if path.is_file() and path.stat().st_mtime_ns != written.get(path)}
    assert rewritten == {run_dir / RESULTS_FILE}
    resumed = json.loads((run_dir / RESULTS_FILE).read_text())["rows"]
    assert resumed == rows
