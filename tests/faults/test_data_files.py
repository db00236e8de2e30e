"""Damaged and hostile data files get a DataError naming the file, never a crash, a silent skip or a stray read.

Cases of issue 16: a truncated LSUN ``data.mdb`` (SIGBUS before), a Tiny subset manifest that is not JSON or has no
count, a gzip that inflates far beyond its header, CIFAR batches pickled with protocols 2 and 5, MVTec without
``category=``, a dangling image symlink, and a CelebA partition line naming a file outside ``img_align_celeba``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from common.datasets import load
from common.datasets.idx import read_idx
from common.errors import DataError
from common.tiny_builder import build_tiny_subset
from tests.helpers.write_cifar import write_cifar10
from tests.helpers.write_images import smooth_images, write_celeba, write_image, write_odin_set
from tests.helpers.write_lsun import lsun_folder, write_lsun_category
from tests.helpers.write_tiny import write_tiny_binary

REPOSITORY = Path(__file__).resolve().parents[2]


def test_a_truncated_lsun_data_mdb_is_a_data_error_naming_it_not_a_sigbus(tmp_path: Path) -> None:
    write_lsun_category(tmp_path, "bedroom", list(smooth_images(30, 40, 48)))
    data_file = lsun_folder(tmp_path, "bedroom") / "data.mdb"
    data_file.write_bytes(data_file.read_bytes()[:5000])  # as an interrupted copy leaves it
    script = (
        "import sys\n"
        "from common.datasets import load\n"
        "from common.errors import DataError\n"
        "try:\n"
        "    load('lsun', 'test', root=sys.argv[1], categories=('bedroom',))\n"
        "except DataError as error:\n"
        "    print(error)\n"
        "    raise SystemExit(3)\n"
    )
    # In a child process: before the fix, mapping the truncated file killed the interpreter (SIGBUS, status -7).
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=REPOSITORY, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith(f"{data_file}: is truncated: 5,000 bytes")


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A data root holding a complete Tiny Images subset (3 usable chunks of 64 in 200 images, 2 kept)."""
    binary = write_tiny_binary(tmp_path / "tiny_images.bin", 200)
    build_tiny_subset(binary, tmp_path / "root" / "tiny-images", n_chunks=2, expected_images=None, progress=False)
    return tmp_path / "root"


@pytest.mark.parametrize(("text", "problem"), [("{not json", "not a readable JSON manifest"), ("{}", "count")])
def test_a_tiny_subset_manifest_that_is_not_json_or_lacks_the_count_is_named(
    tiny_root: Path, text: str, problem: str
) -> None:
    manifest = tiny_root / "tiny-images" / "tiny_subset.json"
    assert load("tiny-images-subset", "train", root=tiny_root).images.shape == (128, 3, 32, 32)
    manifest.write_text(text)
    with pytest.raises(DataError, match=problem) as raised:
        load("tiny-images-subset", "train", root=tiny_root)
    assert raised.value.path == manifest


def _gzip_idx(path: Path, shape: tuple[int, ...], payload_bytes: int) -> Path:
    """A gzipped IDX file of uint8 ``shape`` whose stream then holds ``payload_bytes`` zero bytes."""
    header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}i", *shape)
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header)
        zeros = bytes(1 << 20)
        for start in range(0, payload_bytes, len(zeros)):
            stream.write(zeros[: min(len(zeros), payload_bytes - start)])
    return path


def test_a_gzip_inflating_far_beyond_its_header_is_refused_without_inflating_it(tmp_path: Path) -> None:
    bomb = _gzip_idx(tmp_path / "t10k-images-idx3-ubyte.gz", (10, 28, 28), 96 << 20)
    assert bomb.stat().st_size < 1 << 20  # well under a megabyte on disk
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"header promises 7840 data bytes.*holds more") as raised:
            read_idx(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.path == bomb
    assert peak < 16 << 20, f"peak {peak:,} bytes: the stream was inflated before its size was checked"
    liar = _gzip_idx(tmp_path / "train-images-idx3-ubyte.gz", (60000, 28, 28), 0)  # promises 47 MB in ~100 bytes
    with pytest.raises(DataError, match="more than a gzip file of"):
        read_idx(liar)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_repickled_with_protocols_2_and_5_load(tmp_path: Path, protocol: int) -> None:
    written = write_cifar10(tmp_path / "cifar10", n_train=10, n_test=4)
    for batch in (tmp_path / "cifar10" / "cifar-10-batches-py").glob("*_batch*"):
        with batch.open("rb") as file:
            content = pickle.load(file, encoding="bytes")
        batch.write_bytes(pickle.dumps(content, protocol=protocol))
    for split, (images, labels) in written.items():
        loaded = load("cifar10", split, root=tmp_path)
        assert np.array_equal(loaded.images.numpy(), images) and np.array_equal(loaded.labels.numpy(), labels)


class _Hostile:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickles_of_any_protocol_still_refuse_other_names(tmp_path: Path, protocol: int) -> None:
    write_cifar10(tmp_path / "cifar10", n_train=5, n_test=4)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    hostile = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Hostile()}
    batch.write_bytes(pickle.dumps(hostile, protocol=protocol))
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system"):
        load("cifar10", "test", root=tmp_path)
    objects = {b"data": np.array([[object()]] * 1, dtype=object), b"labels": [0]}
    batch.write_bytes(pickle.dumps(objects, protocol=protocol))
    with pytest.raises(DataError):
        load("cifar10", "test", root=tmp_path)


def test_mvtec_without_category_names_the_missing_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'mvtec'.*category"):
        load("mvtec", "train", root=tmp_path)
    with pytest.raises(ValueError, match=r"'cifar10'.*unexpected keyword argument 'category'"):
        load("cifar10", "train", root=tmp_path, category="bottle")


def test_a_dangling_image_symlink_is_a_data_error_naming_it(tmp_path: Path) -> None:
    paths = write_odin_set(tmp_path, "lsun-resize", list(smooth_images(3, 36, 36)))
    assert len(load("lsun-resize", "test", root=tmp_path).images) == 3
    dangling = paths[0].with_name("00003.jpg")
    dangling.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(DataError, match=r"symbolic link to .*gone\.jpg.*does not exist") as raised:
        load("lsun-resize", "test", root=tmp_path)
    assert raised.value.path == dangling


def test_a_celeba_partition_line_leaving_the_image_folder_is_refused(tmp_path: Path) -> None:
    write_celeba(tmp_path, list(smooth_images(2, 218, 178)), [0, 0])
    outside = write_image(tmp_path / "outside.jpg", smooth_images(1, 218, 178)[0])  # readable, if reached
    assert outside.resolve() == (tmp_path / "celeba" / "img_align_celeba" / "../../outside.jpg").resolve()
    partition = tmp_path / "celeba" / "list_eval_partition.txt"
    partition.write_text(partition.read_text() + "../../outside.jpg 0\n")
    refused = r"line 3: image '\.\./\.\./outside\.jpg': expected a plain file name"
    with pytest.raises(DataError, match=refused) as raised:
        load("celeba", "train", root=tmp_path)
    assert raised.value.path == partition
