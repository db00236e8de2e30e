"""Tiny Images readers (raw binary, built subset, 300K file) and the subset builder behind invglow/create_tiny.py."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import folder_locations
from common import datasets, tiny_builder
from common.datasets.tiny_images import column_major_to_nchw, read_tiny_300k, read_tiny_images, read_tiny_subset
from common.errors import DataError, MissingDataError
from invglow import create_tiny
from tests.helpers.write_tiny import (
    decode_tiny_index,
    synthetic_tiny_images,
    write_index_file,
    write_tiny_300k,
    write_tiny_binary,
)

N_IMAGES = 64 * 150 + 17  # 151 chunk starts, the last (incomplete) one dropped
N_CHUNKS = 40
BATCH_CHUNKS = 8
SEED = 20191203


def original_selection(n_images: int, n_chunks: int, seed: int = SEED, excluded: set[int] = frozenset()) -> list:
    """The selection of the original create_tiny.py, written out literally (0-based excluded indices)."""
    batch_starts = np.arange(0, n_images, 64)[:-1]
    shuffled = np.random.RandomState(seed).choice(batch_starts, len(batch_starts), replace=False)
    if not excluded:
        return shuffled[:n_chunks].tolist()
    kept = [start for start in shuffled if not any(i in excluded for i in range(start, start + 64))]
    return kept[:n_chunks]


def expected_subset(starts: list) -> tuple[np.ndarray, np.ndarray]:
    """Indices and NCHW images of the chunks ``starts``, stored by ascending start."""
    indices = np.concatenate([np.arange(start, start + 64) for start in sorted(starts)])
    return indices, synthetic_tiny_images(indices).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "tiny-images"
    folder.mkdir()
    return write_tiny_binary(folder / "tiny_images.bin", N_IMAGES)


@pytest.fixture(scope="module")
def cifar_files(binary: Path) -> tuple[list[Path], set[int]]:
    """Both CIFAR index files next to the binary, hitting 3 of the first chunks; and the 0-based indices."""
    hit_chunks = [int(start) + 5 for start in original_selection(N_IMAGES, 3)]
    random_images = np.random.default_rng(0).integers(0, N_IMAGES, 20).tolist()
    cifar10 = write_index_file(binary.parent / "80mn_cifar_idxs.txt", [i + 1 for i in [*hit_chunks, *random_images]])
    cifar100 = write_index_file(binary.parent / "cifar_indexes", [0, N_IMAGES, 0, hit_chunks[0] + 1])
    return [cifar10, cifar100], {*hit_chunks, *random_images, N_IMAGES - 1}


def build(binary: Path, out_dir: Path, **options) -> Path:
    options = {
        "n_chunks": N_CHUNKS,
        "expected_images": N_IMAGES,
        "batch_chunks": BATCH_CHUNKS,
        "progress": False,
    } | options
    return tiny_builder.build_tiny_subset(binary, out_dir, **options)


def test_binary_reader_turns_column_major_records_into_nchw(binary: Path) -> None:
    images, labels = datasets.load("tiny-images", "all", root=binary.parent.parent, expected_count=None)
    hwc = synthetic_tiny_images(range(N_IMAGES))
    assert images.shape == (N_IMAGES, 3, 32, 32) and images.dtype == torch.uint8
    assert np.array_equal(images.numpy(), hwc.transpose(0, 3, 1, 2))
    assert decode_tiny_index(images[1234].permute(1, 2, 0).numpy()) == 1234
    assert labels.shape == (N_IMAGES,) and labels.dtype == torch.int64 and bool((labels == -1).all())


def test_binary_reader_maps_the_file_without_reading_it(binary: Path) -> None:
    images, labels = read_tiny_images(binary.parent, "all", expected_count=N_IMAGES)
    file_bytes = binary.stat().st_size
    assert images.untyped_storage().nbytes() == file_bytes and images.stride() == (3072, 1024, 1, 32)
    mappings = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
    file_ranges = [
        [int(address, 16) for address in fields[0].split("-")]
        for fields in mappings
        if fields[-1] == str(binary.resolve())
    ]
    start = images.data_ptr()
    assert any(low <= start and start + file_bytes <= high for low, high in file_ranges)
    assert labels.untyped_storage().nbytes() == 8  # one int64 for all labels


def test_binary_reader_rejects_wrong_sizes(binary: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"{re.escape(str(binary))}.*expected {10 * 3072:,} bytes"):
        read_tiny_images(binary.parent, "all", expected_count=10)
    (tmp_path / "tiny_images.bin").write_bytes(bytes(3 * 3072 - 100))
    with pytest.raises(DataError, match="not a whole, non-zero number of 3072-byte images"):
        read_tiny_images(tmp_path, "all", expected_count=None)
    with pytest.raises(MissingDataError, match=r"absent/tiny_images\.bin"):
        read_tiny_images(tmp_path / "absent", "all")


@pytest.mark.parametrize("n_images", [64 * 150, 64 * 150 + 17])
@pytest.mark.parametrize("exclude", [False, True])
def test_chunk_selection_matches_the_original(n_images: int, exclude: bool) -> None:
    excluded = {int(start) + 63 for start in original_selection(n_images, 5)[::2]} if exclude else set()
    expected = original_selection(n_images, N_CHUNKS, excluded=excluded)
    assert len(set(expected) & set(original_selection(n_images, N_CHUNKS))) == N_CHUNKS - 3 * exclude
    selected = tiny_builder.chunk_starts(n_images, n_chunks=N_CHUNKS, excluded=np.array(sorted(excluded)))
    assert selected.tolist() == expected


def test_chunk_selection_at_full_scale_matches_the_original() -> None:
    selected = tiny_builder.chunk_starts(79_302_017)
    assert len(selected) == 24_415
    assert selected.tolist() == original_selection(79_302_017, 24_415)


def test_excluded_indices_are_one_based_with_zero_missing(tmp_path: Path) -> None:
    first = write_index_file(tmp_path / "a", [5, 1, 0, 5, 100])
    second = write_index_file(tmp_path / "b", [0, 2])
    assert tiny_builder.read_excluded_indices([first, second], 100).tolist() == [0, 1, 4, 99]
    with pytest.raises(DataError, match=r"/a: holds indices outside 0\.\.99"):
        tiny_builder.read_excluded_indices([first, second], 99)
    (tmp_path / "c").write_text("12\nabc\n")
    with pytest.raises(DataError, match="one integer image index per line"):
        tiny_builder.read_excluded_indices([tmp_path / "c"], 100)


@pytest.mark.parametrize("exclude", [False, True])
def test_built_subset_holds_the_original_selection(binary: Path, cifar_files, tmp_path: Path, exclude: bool) -> None:
    files, excluded = cifar_files if exclude else ([], set())
    images_path = build(binary, tmp_path, exclude_files=files)
    indices, images = expected_subset(original_selection(N_IMAGES, N_CHUNKS, excluded=excluded))
    assert np.array_equal(np.load(tmp_path / "tiny_subset_indices.npy"), indices)
    assert np.array_equal(column_major_to_nchw(np.load(images_path)), images)
    subset = read_tiny_subset(tmp_path, "train")
    assert np.array_equal(subset.images.numpy(), images) and bool((subset.labels == -1).all())
    manifest = json.loads((tmp_path / "tiny_subset.json").read_text())
    assert (manifest["count"], manifest["seed"], manifest["excluded_images"]) == (N_CHUNKS * 64, SEED, len(excluded))
    assert sorted(os.listdir(tmp_path)) == ["tiny_subset.json", "tiny_subset.npy", "tiny_subset_indices.npy"]


@pytest.mark.parametrize("n_chunks", [150, 113])
def test_adjacent_chunks_are_read_together_and_land_in_place(
    binary: Path, tmp_path: Path, monkeypatch, n_chunks: int
) -> None:
    """Every chunk kept (one run per batch) or most kept (runs of mixed lengths): same bytes as chunk by chunk."""
    read_into, reads = tiny_builder._read_into, []

    def recording_read(source, path, first, records):
        reads.append(records.nbytes // (64 * 3072))
        return read_into(source, path, first, records)

    monkeypatch.setattr(tiny_builder, "_read_into", recording_read)
    images_path = build(binary, tmp_path, n_chunks=n_chunks)
    indices, images = expected_subset(original_selection(N_IMAGES, n_chunks))
    assert np.array_equal(np.load(tmp_path / "tiny_subset_indices.npy"), indices)
    assert np.array_equal(column_major_to_nchw(np.load(images_path)), images)
    assert sum(reads) == n_chunks and max(reads) == BATCH_CHUNKS
    if n_chunks == 150:
        assert reads == [BATCH_CHUNKS] * (150 // BATCH_CHUNKS) + [150 % BATCH_CHUNKS]


def test_builder_rejects_truncated_or_small_binaries(binary: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(binary.read_bytes()[:-100])
    with pytest.raises(DataError, match=rf"{re.escape(str(truncated))}.*expected {N_IMAGES * 3072:,} bytes"):
        build(truncated, tmp_path / "out")
    with pytest.raises(DataError, match=rf"{re.escape(str(binary))}.*at least {200 * 64 + 1:,} images"):
        build(binary, tmp_path / "out", n_chunks=200)
    assert not (tmp_path / "out").exists()


def test_interrupted_build_resumes_to_the_uninterrupted_result(
    binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted(Exception):
        pass

    write_json = tiny_builder.write_json_atomically
    progress_records = []

    def interrupt_after_two_batches(path: Path, content: dict) -> None:
        write_json(path, content)
        if path.name == "tiny_subset.progress.json":
            progress_records.append(content["images_done"])
            if len(progress_records) == 3:  # the initial record, then two batches
                raise Interrupted

    monkeypatch.setattr(tiny_builder, "write_json_atomically", interrupt_after_two_batches)
    with pytest.raises(Interrupted):
        build(binary, tmp_path / "resumed")
    assert progress_records == [0, 64 * BATCH_CHUNKS, 2 * 64 * BATCH_CHUNKS]
    assert not (tmp_path / "resumed" / "tiny_subset.npy").exists()
    monkeypatch.setattr(tiny_builder, "write_json_atomically", write_json)

    read_into = tiny_builder._read_into
    images_read = []

    def counting_read(source, path, first, records):
        images_read.extend(range(first, first + records.nbytes // 3072))
        return read_into(source, path, first, records)

    monkeypatch.setattr(tiny_builder, "_read_into", counting_read)
    build(binary, tmp_path / "resumed")
    assert len(images_read) == len(set(images_read)) == 64 * (N_CHUNKS - 2 * BATCH_CHUNKS)
    build(binary, tmp_path / "whole")
    for name in ["tiny_subset.npy", "tiny_subset_indices.npy"]:
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert sorted(os.listdir(tmp_path / "resumed")) == sorted(os.listdir(tmp_path / "whole"))
    assert len(os.listdir(tmp_path / "resumed")) == 3

    images_read.clear()
    assert build(binary, tmp_path / "resumed") == tmp_path / "resumed" / "tiny_subset.npy"
    assert images_read == []  # complete: recognised, not rebuilt
    with pytest.raises(DataError, match=r"tiny_subset\.json: describes a different subset"):
        build(binary, tmp_path / "resumed", n_chunks=N_CHUNKS - 1)


def test_partial_build_of_another_selection_starts_over(binary: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tiny_builder, "_finalize", lambda *args: None)
    build(binary, tmp_path, n_chunks=N_CHUNKS - 1)
    assert (tmp_path / "tiny_subset.progress.json").exists()
    monkeypatch.undo()
    build(binary, tmp_path, seed=SEED + 1)
    indices, images = expected_subset(original_selection(N_IMAGES, N_CHUNKS, seed=SEED + 1))
    assert np.array_equal(column_major_to_nchw(np.load(tmp_path / "tiny_subset.npy")), images)
    assert np.array_equal(np.load(tmp_path / "tiny_subset_indices.npy"), indices)


def run_script(*arguments: str, tiny_root: Path) -> subprocess.CompletedProcess:
    environment = os.environ | {"OOD_REPRO_TINY_IMAGES": str(tiny_root), "COLUMNS": "1000"}  # unwrapped help
    return subprocess.run(
        [sys.executable, "invglow/create_tiny.py", *arguments],
        cwd=folder_locations.REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )


def test_create_tiny_script(binary: Path, cifar_files, tmp_path: Path) -> None:
    help_text = run_script("--help", tiny_root=tmp_path).stdout
    assert "--exclude-cifar" in help_text and str(tmp_path / "tiny_images.bin") in help_text
    _, excluded = cifar_files
    run_script(
        *["--binary", str(binary), "--out-dir", str(tmp_path), "--exclude-cifar", "--n-chunks", "12"],
        *["--expected-images", str(N_IMAGES), "--no-progress"],
        tiny_root=tmp_path / "unused",
    )
    indices, images = expected_subset(original_selection(N_IMAGES, 12, excluded=excluded))
    subset = read_tiny_subset(tmp_path, "train", name="tiny_subset_exclude_cifar")
    assert np.array_equal(subset.images.numpy(), images)
    assert np.array_equal(np.load(tmp_path / "tiny_subset_exclude_cifar_indices.npy"), indices)


def test_create_tiny_script_reports_bad_binary_in_one_line(binary: Path, tmp_path: Path) -> None:
    arguments = ["--binary", str(binary), "--out-dir", str(tmp_path), "--no-progress"]
    with pytest.raises(SystemExit, match=rf"^create_tiny\.py: {re.escape(str(binary))}: holds {N_IMAGES:,} images"):
        create_tiny.main(arguments)
    assert os.listdir(tmp_path) == []


def test_300k_reader_turns_hwc_into_nchw(tmp_path: Path) -> None:
    hwc = synthetic_tiny_images(range(50, 80))
    folder = tmp_path / "tiny-images"
    folder.mkdir()
    write_tiny_300k(folder / "300K_random_images.npy", hwc)
    images, labels = datasets.load("tiny-images-300k", "train", root=tmp_path)
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, torch.from_numpy(hwc).permute(0, 3, 1, 2))
    assert torch.equal(labels, torch.full((30,), -1))
    write_tiny_300k(folder / "300K_random_images.npy", hwc.transpose(0, 3, 1, 2))
    with pytest.raises(DataError, match=r"300K_random_images.npy: holds uint8 \(30, 3, 32, 32\); expected uint8"):
        read_tiny_300k(folder, "train")
    with pytest.raises(MissingDataError, match=r"300K_random_images\.npy"):
        read_tiny_300k(tmp_path, "train")
    with pytest.raises(MissingDataError, match=r"tiny_subset\.json"):
        read_tiny_subset(tmp_path, "train")


def test_a_failing_write_names_the_output_and_closes_both_files(binary: Path, tmp_path: Path, monkeypatch) -> None:
    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    opened = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(tiny_builder.os, "pwrite", disk_full)
    with pytest.raises(DataError, match=r"tiny_subset\.npy\.partial: could not be written \(No space left"):
        build(binary, tmp_path)
    assert len(os.listdir("/proc/self/fd")) == opened
    assert not (tmp_path / "tiny_subset.npy").exists()
