"""Readers of MNIST / Fashion-MNIST (IDX), CIFAR-10/100 (python pickles) and SVHN (.mat), on files written in
the real formats: exact round trips through ``common.datasets.load``, pixel orientation checked against
hand-built bytes, and one clear error for every kind of bad file."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from common.datasets import load
from common.datasets.cifar import read_cifar10, read_cifar100
from common.datasets.idx import read_idx, read_idx_dataset
from common.datasets.svhn import read_svhn
from common.errors import DataError, MissingDataError
from tests.helpers.write_cifar import py2_pickle_bytes, write_cifar10, write_cifar100, write_py2_pickle
from tests.helpers.write_idx import idx_bytes, save_idx_dataset, write_idx, write_idx_dataset
from tests.helpers.write_svhn import save_svhn, write_svhn


def assert_image_set(loaded, images: np.ndarray, labels: np.ndarray) -> None:
    """``loaded`` holds exactly ``images`` (uint8) and ``labels`` (int64)."""
    assert loaded.images.dtype == torch.uint8
    assert loaded.labels.dtype == torch.int64
    np.testing.assert_array_equal(loaded.images.numpy(), images)
    np.testing.assert_array_equal(loaded.labels.numpy(), labels)


def error_names(path: Path) -> str:
    """A ``match`` pattern for an error message naming ``path``."""
    return re.escape(str(path))


# ---------------------------------------------------------------------------------------------------- IDX


def edit_idx(path: Path, edit: Callable[[bytes], bytes]) -> None:
    """Apply ``edit`` to the IDX bytes of ``path``, decompressing and recompressing ``.gz`` files."""
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()))))
    else:
        path.write_bytes(edit(path.read_bytes()))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("compressed", [True, False])
def test_idx_round_trip(tmp_path: Path, name: str, compressed: bool) -> None:
    written = write_idx_dataset(tmp_path / name, n_train=7, n_test=5, compressed=compressed)
    for split, (images, labels) in written.items():
        loaded = load(name, split, root=tmp_path)
        assert loaded.images.shape == (len(images), 1, 28, 28)
        assert_image_set(loaded, images, labels)


def test_idx_files_have_the_real_names_and_headers(tmp_path: Path) -> None:
    written = write_idx_dataset(tmp_path, n_train=3, n_test=2)
    expected = {f"{prefix}-{kind}-ubyte.gz" for prefix in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")}
    assert {path.name for path in tmp_path.iterdir()} == expected
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    assert raw[:16] == bytes([0, 0, 8, 3]) + struct.pack(">3i", 3, 28, 28)  # 0x00000803: ubyte, 3 dims
    assert raw[16:] == written["train"][0].tobytes()
    raw = gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert raw == bytes([0, 0, 8, 1]) + struct.pack(">i", 2) + bytes(written["test"][1].tolist())


def test_idx_pixels_are_row_major(tmp_path: Path) -> None:
    # Bytes built by hand from the format description: value k of an image is row k // 28, column k % 28.
    values = (np.arange(2 * 28 * 28) * 7 % 251).astype(np.uint8)
    header = bytes([0, 0, 8, 3]) + struct.pack(">3i", 2, 28, 28)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header + values.tobytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 2) + bytes([3, 9]))
    loaded = read_idx_dataset(tmp_path, "test")
    for image, row, column in [(0, 0, 1), (0, 1, 0), (0, 27, 5), (1, 3, 20)]:
        assert loaded.images[image, 0, row, column] == values[image * 784 + row * 28 + column]
    assert loaded.labels.tolist() == [3, 9]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_every_type(tmp_path: Path, dtype: type, suffix: str) -> None:
    array = (np.arange(60).reshape(3, 4, 5) * 37 - 900).astype(dtype)
    path = tmp_path / f"values{suffix}"
    write_idx(path, array)
    read = read_idx(path)
    assert read.shape == (3, 4, 5)
    np.testing.assert_array_equal(read, array)


def test_read_idx_header_by_hand(tmp_path: Path) -> None:
    # 0x0B = big-endian int16; values 1, -2, 258 laid out MSB first.
    path = tmp_path / "shorts"
    path.write_bytes(bytes([0, 0, 0x0B, 1]) + struct.pack(">i", 3) + bytes([0, 1, 0xFF, 0xFE, 1, 2]))
    assert read_idx(path).tolist() == [1, -2, 258]
    assert idx_bytes(np.array([1, -2, 258], dtype=np.int16)) == path.read_bytes()


def test_read_idx_maps_plain_files_copy_on_write(tmp_path: Path) -> None:
    path = tmp_path / "values"
    write_idx(path, np.zeros((4, 3), dtype=np.uint8))
    before = path.read_bytes()
    array = read_idx(path)
    assert isinstance(array, np.memmap)
    array[:] = 255
    del array
    assert path.read_bytes() == before


def test_idx_prefers_the_uncompressed_file(tmp_path: Path) -> None:
    plain = write_idx_dataset(tmp_path, n_train=2, n_test=2, seed=1, compressed=False)
    write_idx_dataset(tmp_path, n_train=2, n_test=2, seed=2, compressed=True)
    assert_image_set(read_idx_dataset(tmp_path, "train"), *plain["train"])


IDX_CORRUPTIONS = {
    "truncated": lambda data: data[:-1],
    "trailing bytes": lambda data: data + b"\0",
    "wrong magic": lambda data: b"\x08\x03\0\0" + data[4:],
    "unknown type code": lambda data: data[:2] + b"\x07" + data[3:],
    "truncated header": lambda data: data[:10],
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("corruption", list(IDX_CORRUPTIONS))
@pytest.mark.parametrize("compressed", [True, False])
def test_idx_corrupt_file_raises_data_error(tmp_path: Path, corruption: str, compressed: bool) -> None:
    write_idx_dataset(tmp_path / "mnist", n_train=3, n_test=2, compressed=compressed)
    path = tmp_path / "mnist" / f"train-images-idx3-ubyte{'.gz' if compressed else ''}"
    edit_idx(path, IDX_CORRUPTIONS[corruption])
    with pytest.raises(DataError, match=error_names(path)):
        load("mnist", "train", root=tmp_path)


def test_idx_corrupt_gzip_stream_raises_data_error(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=3, n_test=2)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match=error_names(path)):
        read_idx_dataset(tmp_path, "test")
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match=error_names(path)):
        read_idx_dataset(tmp_path, "test")


def test_idx_wrong_image_size_raises_data_error(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=3, n_test=2, compressed=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 27, 28), dtype=np.uint8))
    with pytest.raises(DataError, match=error_names(tmp_path / "train-images-idx3-ubyte")):
        read_idx_dataset(tmp_path, "train")


def test_idx_label_count_mismatch_names_the_labels_file(tmp_path: Path) -> None:
    images = np.zeros((3, 1, 28, 28), dtype=np.uint8)
    save_idx_dataset(tmp_path, {"train": (images, np.array([1, 2]))})
    with pytest.raises(DataError, match=error_names(tmp_path / "train-labels-idx1-ubyte.gz")):
        read_idx_dataset(tmp_path, "train")


def test_idx_missing_file_raises_missing_data_error(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "fashion-mnist", n_train=3, n_test=2)
    (tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingDataError, match="t10k-labels-idx1-ubyte") as caught:
        load("fashion-mnist", "test", root=tmp_path)
    assert isinstance(caught.value, FileNotFoundError)
    assert load("fashion-mnist", "train", root=tmp_path).images.shape == (3, 1, 28, 28)


# ---------------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_round_trip(tmp_path: Path, split: str) -> None:
    written = write_cifar10(tmp_path / "cifar10", n_train=12, n_test=4)  # train batches of 3, 3, 2, 2, 2
    loaded = load("cifar10", split, root=tmp_path)
    assert loaded.images.shape == (len(written[split][0]), 3, 32, 32)
    assert_image_set(loaded, *written[split])


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("label_kind", ["fine", "coarse"])
def test_cifar100_round_trip(tmp_path: Path, split: str, label_kind: str) -> None:
    written = write_cifar100(tmp_path / "cifar100", n_train=9, n_test=4)
    images, fine, coarse = written[split]
    loaded = load("cifar100", split, root=tmp_path, label_kind=label_kind)
    assert_image_set(loaded, images, fine if label_kind == "fine" else coarse)
    assert not np.array_equal(fine, coarse)


def test_cifar100_default_labels_are_fine(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path, n_train=5, n_test=3)
    np.testing.assert_array_equal(read_cifar100(tmp_path, "test").labels.numpy(), written["test"][1])


def test_cifar_files_load_with_the_published_python3_recipe(tmp_path: Path) -> None:
    # The CIFAR page's recipe: pickle.load(file, encoding="bytes"); keys and meta files as distributed.
    written = write_cifar10(tmp_path, n_train=5, n_test=2)
    write_cifar100(tmp_path, n_train=3, n_test=2)

    def unpickle(path: Path) -> dict:
        with path.open("rb") as file:
            return pickle.load(file, encoding="bytes")

    batch = unpickle(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"batch_label"] == b"testing batch 1 of 1"
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (2, 3072)
    assert batch[b"labels"] == written["test"][1].tolist()
    meta = unpickle(tmp_path / "cifar-10-batches-py" / "batches.meta")
    assert meta[b"label_names"][0] == b"airplane" and meta[b"num_vis"] == 3072
    train = unpickle(tmp_path / "cifar-100-python" / "train")
    assert set(train) == {b"batch_label", b"fine_labels", b"coarse_labels", b"data", b"filenames"}
    meta = unpickle(tmp_path / "cifar-100-python" / "meta")
    assert (len(meta[b"fine_label_names"]), len(meta[b"coarse_label_names"])) == (100, 20)


def test_cifar_pickles_are_python2_style(tmp_path: Path) -> None:
    # Python 2 byte strings (SHORT_BINSTRING 'U' / BINSTRING 'T') and numpy 1's module name, as in the real files.
    raw = py2_pickle_bytes({b"data": np.zeros((1, 3072), dtype=np.uint8), b"labels": [0]})
    assert raw.startswith(b"\x80\x02}")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"T\x00\x0c\x00\x00" in raw  # the 3072 data bytes as one BINSTRING
    assert b"_codecs" not in raw and b"numpy._core" not in raw


def test_cifar_channels_and_rows(tmp_path: Path) -> None:
    # A row built by hand from the format description: 1024 red values, 1024 green, 1024 blue, each row-major.
    red = np.full((32, 32), 200, dtype=np.uint8)
    red[0, 1] = 7
    green = np.full((32, 32), 100, dtype=np.uint8)
    blue = (np.arange(1024) % 256).astype(np.uint8).reshape(32, 32)
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()])
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [4], b"data": row[None], b"filenames": [b"a.png"]}
    write_py2_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", batch)
    image = read_cifar10(tmp_path, "test").images[0]
    assert image[0, 0, 1] == 7 and image[0, 1, 0] == 200  # red plane, row 0 column 1 only
    assert (image[1] == 100).all()
    assert image[2, 1, 2] == 34 and image[2, 2, 1] == 65  # blue value k at row k // 32, column k % 32


def test_cifar_missing_batch_raises_missing_data_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar10", n_train=10, n_test=2)
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    path.unlink()
    with pytest.raises(MissingDataError, match=error_names(path)):
        load("cifar10", "train", root=tmp_path)
    with pytest.raises(MissingDataError, match=error_names(tmp_path / "cifar100" / "cifar-100-python" / "test")):
        load("cifar100", "test", root=tmp_path)


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: data[:-1], lambda data: b"not a pickle at all"],
    ids=["half", "last byte cut", "garbage"],
)
def test_cifar_damaged_pickle_raises_data_error(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    write_cifar100(tmp_path, n_train=3, n_test=2)
    path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=error_names(path)):
        read_cifar100(tmp_path, "train")


class _MakeDirectory:
    """Unpickling this would create a directory: the kind of side effect a pickle can smuggle in."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.path),)


def test_cifar_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-unpickling"
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({b"data": _MakeDirectory(marker), b"labels": []}))
    with pytest.raises(DataError, match=error_names(path)) as caught:
        read_cifar10(tmp_path, "test")
    assert "mkdir" in str(caught.value)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the payload is live: an unrestricted unpickler runs it
    assert marker.is_dir()


def good_batch(n: int = 3) -> dict:
    return {b"batch_label": b"testing batch 1 of 1", b"labels": [1] * n, b"data": np.zeros((n, 3072), np.uint8)}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([good_batch()], "dict"),
        ({k: v for k, v in good_batch().items() if k != b"labels"}, "b'labels'"),
        ({**good_batch(), b"data": np.zeros((3, 3000), np.uint8)}, "3072"),
        ({**good_batch(), b"data": [0] * 3072}, "uint8"),
        ({**good_batch(), b"labels": [1, 2]}, "3 integers"),
        ({**good_batch(), b"labels": [b"a", b"b", b"c"]}, "3 integers"),
        ({**good_batch(), b"labels": [0, 10, 3]}, "0..9"),
    ],
    ids=["not a dict", "no labels", "wrong row size", "data not an array", "label count", "label type", "range"],
)
def test_cifar_wrong_content_raises_data_error(tmp_path: Path, content: object, expected: str) -> None:
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_py2_pickle(path, content)
    with pytest.raises(DataError, match=error_names(path)) as caught:
        read_cifar10(tmp_path, "test")
    assert expected in str(caught.value)


def test_cifar100_coarse_labels_are_checked_against_20_classes(tmp_path: Path) -> None:
    images = np.zeros((2, 3, 32, 32), np.uint8)
    write_cifar100(tmp_path, n_train=1, n_test=1)
    batch = {b"data": images.reshape(2, -1), b"fine_labels": [0, 99], b"coarse_labels": [0, 20]}
    write_py2_pickle(tmp_path / "cifar-100-python" / "test", batch)
    assert read_cifar100(tmp_path, "test").labels.tolist() == [0, 99]
    with pytest.raises(DataError, match=re.escape("0..19")):
        read_cifar100(tmp_path, "test", label_kind="coarse")
    with pytest.raises(ValueError, match="label_kind"):
        read_cifar100(tmp_path, "test", label_kind="medium")


# ---------------------------------------------------------------------------------------------------- SVHN


@pytest.mark.parametrize("split", ["train", "test", "extra"])
def test_svhn_round_trip(tmp_path: Path, split: str) -> None:
    written = write_svhn(tmp_path / "svhn", n_train=6, n_test=4, n_extra=3)
    loaded = load("svhn", split, root=tmp_path)
    assert loaded.images.shape == (len(written[split][0]), 3, 32, 32)
    assert loaded.images.is_contiguous()
    assert_image_set(loaded, *written[split])


def test_svhn_layout_and_zero_label(tmp_path: Path) -> None:
    # X indexed [row, column, channel, image] by hand; y = 10 means the digit 0.
    X = np.zeros((32, 32, 3, 3), dtype=np.uint8)
    X[0, 1, 0, 0] = 255  # image 0: red, row 0, column 1
    X[5, 0, 2, 0] = 9  # image 0: blue, row 5, column 0
    X[31, 30, 1, 2] = 77  # image 2: green, row 31, column 30
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": np.array([[10], [1], [9]], dtype=np.uint8)})
    loaded = read_svhn(tmp_path, "test")
    assert loaded.images.shape == (3, 3, 32, 32)
    assert loaded.images[0, 0, 0, 1] == 255 and loaded.images[0, 0, 1, 0] == 0
    assert loaded.images[0, 2, 5, 0] == 9 and loaded.images[0, 2, 0, 5] == 0
    assert loaded.images[2, 1, 31, 30] == 77
    assert int(loaded.images.sum()) == 255 + 9 + 77
    assert loaded.labels.tolist() == [0, 1, 9]


def test_svhn_writer_uses_the_real_layout(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    save_svhn(tmp_path, {"train": (images, np.array([0, 3, 0, 9]))})
    content = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    assert content["X"].dtype == np.uint8 and content["X"].shape == (32, 32, 3, 4)
    assert content["X"][4, 7, 2, 1] == images[1, 2, 4, 7]
    assert content["y"].tolist() == [[10], [3], [10], [9]]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"X": np.zeros((32, 32, 3, 2), np.uint8)}, "'y'"),
        ({"y": np.ones((2, 1), np.uint8)}, "'X'"),
        ({"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1), np.uint8)}, "(32, 32, 3, N)"),
        ({"X": np.zeros((32, 32, 3, 2), np.float64), "y": np.ones((2, 1), np.uint8)}, "uint8"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1), np.uint8)}, "(2, 1)"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [1]], np.uint8)}, "1..10"),
    ],
    ids=["no y", "no X", "wrong image size", "wrong dtype", "label count", "label 0"],
)
def test_svhn_wrong_content_raises_data_error(tmp_path: Path, variables: dict, expected: str) -> None:
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(path, variables)
    with pytest.raises(DataError, match=error_names(path)) as caught:
        read_svhn(tmp_path, "train")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[:100], lambda data: data[: len(data) // 2], lambda data: b"not a MATLAB file " * 20],
    ids=["header only", "half", "garbage"],
)
def test_svhn_damaged_file_raises_data_error(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    write_svhn(tmp_path, n_train=4, n_test=2)
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=error_names(path)):
        read_svhn(tmp_path, "test")


def test_svhn_missing_file_raises_missing_data_error(tmp_path: Path) -> None:
    write_svhn(tmp_path / "svhn", n_train=2, n_test=2)
    with pytest.raises(MissingDataError, match=error_names(tmp_path / "svhn" / "extra_32x32.mat")):
        load("svhn", "extra", root=tmp_path)


# ---------------------------------------------------------------------------------------------------- all


@pytest.mark.parametrize("reader", [read_idx_dataset, read_cifar10, read_cifar100, read_svhn])
def test_unknown_split_raises_value_error(tmp_path: Path, reader: Callable) -> None:
    with pytest.raises(ValueError, match="'validation'"):
        reader(tmp_path, "validation")
