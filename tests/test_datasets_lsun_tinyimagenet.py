"""LSUN scene validation LMDBs and TinyImageNet-200, read through the registry from files in their real layouts.

Expected pixels are computed independently of the readers: crops by slicing at offsets worked out by hand from
torchvision's rules, area averaging as a product of coverage matrices in float64, enlarging with torch's bilinear
``interpolate``, and images made of constant 2×2 blocks whose halving is known exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.datasets import DATASETS, load
from common.datasets import sources as sources_module
from common.datasets.image_folders import resize_antialiased
from common.datasets.lsun_lmdb import LSUN_CATEGORIES, read_lsun
from common.datasets.sources import SOURCES, fetch
from common.datasets.tinyimagenet import TINYIMAGENET_FOLDER, read_tinyimagenet
from common.errors import DataError, MissingDataError
from tests.helpers.write_images import smooth_images, write_garbage
from tests.helpers.write_lsun import encode, image_key, lsun_folder, write_lsun_category, write_lsun_values
from tests.helpers.write_tinyimagenet import write_tinyimagenet

if TYPE_CHECKING:
    from tests.helpers.http_server import FileServer

pytest_plugins = ["tests.helpers.http_server"]  # the file_server fixture


# ----------------------------------------------------------------------------------------------- references
def area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) matrix: the share of output cell i (width source / target) covered by input pixel j."""
    scale = source / target
    cell_edges = np.arange(target + 1) * scale
    starts = np.maximum(cell_edges[:-1, None], np.arange(source)[None, :])
    ends = np.minimum(cell_edges[1:, None], np.arange(1, source + 1)[None, :])
    return np.clip(ends - starts, 0, None) / scale


def area_shrunk(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8 image box-averaged to (height, width), in float64 (not rounded)."""
    rows, columns = area_weights(image.shape[0], height), area_weights(image.shape[1], width)
    return np.einsum("ih,hwc,jw->ijc", rows, image.astype(np.float64), columns)


def bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) image resized by torch's bilinear interpolation (half-pixel centres, no antialiasing), float64."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].double()
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return resized[0].permute(1, 2, 0).numpy()


def hwc(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) torch → (N, H, W, C) numpy."""
    return images.permute(0, 2, 3, 1).numpy()


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def blocks_of_two(image: np.ndarray) -> np.ndarray:
    """``image`` with every pixel repeated into a 2×2 block: halving it with any averaging gives ``image`` back."""
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


def assert_within_one_grey_level(actual: np.ndarray, expected: np.ndarray) -> None:
    difference = np.abs(actual.astype(np.float64) - expected)
    assert actual.shape == expected.shape and difference.max() <= 1.0, difference.max()


# ----------------------------------------------------------------------------------------------- LSUN
def test_lsun_images_already_32_on_the_short_side_are_only_cropped_at_torchvision_offsets(tmp_path: Path) -> None:
    wide, tall, square = random_image(32, 39, seed=1), random_image(35, 32, seed=2), random_image(32, 32, seed=3)
    in_order = write_lsun_category(tmp_path, "bedroom", [wide, tall, square])
    # torchvision: offset int(round(excess / 2)): excess 7 → 4 (floor would give 3), excess 3 → 2 (floor: 1)
    expected = {id(wide): wide[:, 4:36], id(tall): tall[2:34, :], id(square): square}
    result = load("lsun", "test", root=tmp_path, categories="bedroom")
    assert result.images.shape == (3, 3, 32, 32) and result.images.dtype == torch.uint8
    np.testing.assert_array_equal(hwc(result.images), np.stack([expected[id(image)] for image in in_order]))
    assert result.labels.dtype == torch.int64 and result.labels.tolist() == [-1, -1, -1]


def test_lsun_halving_of_two_by_two_blocks_is_exact_before_the_centre_crop(tmp_path: Path) -> None:
    wide, tall = random_image(32, 45, seed=4), random_image(45, 32, seed=5)
    in_order = write_lsun_category(tmp_path, "bridge", [blocks_of_two(wide), blocks_of_two(tall)])
    # 64×90 → shorter side 32, longer int(32 · 90 / 64) = 45; excess 13 → offset round(6.5) = 6
    expected = {(64, 90): wide[:, 6:38], (90, 64): tall[6:38, :]}
    result = load("lsun", "test", root=tmp_path, categories=["bridge"])
    np.testing.assert_array_equal(hwc(result.images), np.stack([expected[image.shape[:2]] for image in in_order]))


def test_lsun_shrinking_truncates_the_long_side_and_averages_areas(tmp_path: Path) -> None:
    image = random_image(50, 79, seed=6)
    write_lsun_category(tmp_path, "tower", [image])
    # long side int(32 · 79 / 50) = int(50.56) = 50 (not 51); excess 18 → offset 9
    expected = area_shrunk(image, 32, 50)[:, 9:41]
    result = load("lsun", "test", root=tmp_path, categories="tower")
    assert_within_one_grey_level(hwc(result.images)[0], expected)


def test_lsun_small_images_are_enlarged_bilinearly(tmp_path: Path) -> None:
    image = random_image(30, 20, seed=7)
    write_lsun_category(tmp_path, "kitchen", [image])
    expected = bilinear(image, 48, 32)[8:40]  # 30×20 (H×W): width → 32, height int(32 · 30 / 20) = 48, top 8
    result = load("lsun", "test", root=tmp_path, categories="kitchen")
    assert_within_one_grey_level(hwc(result.images)[0], expected)


def test_lsun_size_option(tmp_path: Path) -> None:
    image = blocks_of_two(random_image(16, 20, seed=8))
    write_lsun_category(tmp_path, "bedroom", [image])
    result = load("lsun", "test", root=tmp_path, categories="bedroom", size=16)
    np.testing.assert_array_equal(hwc(result.images)[0], image[::2, ::2][:, 2:18])  # excess 4 → offset 2


def test_lsun_reads_categories_in_order_then_keys_and_honours_limit(tmp_path: Path) -> None:
    values: dict[str, list[int]] = {}
    for number, category in enumerate(LSUN_CATEGORIES):
        colours = [10 * number + index for index in range(3)]
        images = [np.full((32, 40, 3), colour, np.uint8) for colour in colours]
        write_lsun_values(tmp_path, category, {image_key(category, i): encode(image) for i, image in enumerate(images)})
        keys = [image_key(category, index) for index in range(3)]
        values[category] = [colours[keys.index(key)] for key in sorted(keys)]  # LMDB returns keys sorted as bytes
    every = load("lsun", "test", root=tmp_path)
    expected = [value for category in LSUN_CATEGORIES for value in values[category]]
    assert len(expected) == 30 and every.images[:, 0, 0, 0].tolist() == expected
    assert every.labels.tolist() == [-1] * 30
    assert torch.equal(load("lsun", "test", root=tmp_path, limit=4).images, every.images[:4])
    chosen = load("lsun", "test", root=tmp_path, categories=["tower", "bedroom"])
    assert chosen.images[:, 0, 0, 0].tolist() == values["tower"] + values["bedroom"]


def test_lsun_lossy_webp_release_like_image_is_close_to_the_exact_result(tmp_path: Path) -> None:
    image = smooth_images(1, 256, 341, seed=9)[0]
    write_lsun_category(tmp_path, "restaurant", [image], quality=75)
    expected = area_shrunk(image, 32, 42)[:, 5:37]  # int(32 · 341 / 256) = 42; excess 10 → offset 5
    result = hwc(load("lsun", "test", root=tmp_path, categories="restaurant").images)[0]
    assert np.abs(result - expected).mean() < 3.0


def test_lsun_grey_and_jpeg_values_are_decoded_grey_to_three_equal_channels(tmp_path: Path) -> None:
    grey = np.random.default_rng(10).integers(0, 256, (32, 32), dtype=np.uint8)
    colour = smooth_images(1, 32, 32, seed=11)[0]
    write_lsun_values(tmp_path, "classroom", {b"a": encode(grey, ".png"), b"b": encode(colour, ".jpg")})
    images = load("lsun", "test", root=tmp_path, categories="classroom").images
    for channel in range(3):
        np.testing.assert_array_equal(images[0, channel].numpy(), grey)
    assert np.abs(hwc(images)[1].astype(np.float64) - colour).mean() < 3.0


def test_lsun_missing_folder_or_category_names_the_folder_and_the_download(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"bedroom_val_lmdb: file not found.*python main.py download lsun"):
        load("lsun", "test", root=tmp_path)
    for category in LSUN_CATEGORIES:
        if category != "kitchen":
            write_lsun_category(tmp_path, category, [random_image(32, 32, seed=0)])
    with pytest.raises(MissingDataError, match=r"kitchen_val_lmdb: file not found"):
        load("lsun", "test", root=tmp_path)
    lsun_folder(tmp_path, "kitchen").mkdir()
    with pytest.raises(MissingDataError, match=r"kitchen_val_lmdb/data.mdb: file not found"):
        load("lsun", "test", root=tmp_path)


def test_lsun_corrupt_environment_empty_environment_and_bad_value_are_data_errors(tmp_path: Path) -> None:
    write_garbage(lsun_folder(tmp_path, "bedroom") / "data.mdb")
    with pytest.raises(DataError, match=r"bedroom_val_lmdb: is not a readable LMDB environment"):
        load("lsun", "test", root=tmp_path, categories="bedroom")
    write_lsun_values(tmp_path, "bridge", {})
    with pytest.raises(DataError, match=r"bridge_val_lmdb: the LMDB environment holds no images"):
        load("lsun", "test", root=tmp_path, categories="bridge")
    write_lsun_values(tmp_path, "tower", {b"good": encode(random_image(32, 32, seed=0)), b"worse": b"not an image"})
    with pytest.raises(DataError, match=r"tower_val_lmdb: the value of key b'worse' cannot be decoded"):
        load("lsun", "test", root=tmp_path, categories="tower")


def test_lsun_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown LSUN categories \['attic'\]; choose from bedroom, bridge"):
        load("lsun", "test", root=tmp_path, categories=["bedroom", "attic"])
    with pytest.raises(ValueError, match="no LSUN category given"):
        load("lsun", "test", root=tmp_path, categories=[])
    with pytest.raises(ValueError, match="size must be a positive integer"):
        load("lsun", "test", root=tmp_path, size=0)
    with pytest.raises(ValueError, match="has no split 'train'"):
        load("lsun", "train", root=tmp_path)
    with pytest.raises(ValueError, match="only the split 'test'"):
        read_lsun(tmp_path / "lsun", "train")


def test_lsun_without_the_lmdb_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_lsun_category(tmp_path, "bedroom", [random_image(32, 32, seed=0)])
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` raise ImportError
    with pytest.raises(ImportError, match=r"needs the lmdb package.*pip install 'lmdb>=1.4'"):
        load("lsun", "test", root=tmp_path, categories="bedroom")


# ----------------------------------------------------------------------------------------------- TinyImageNet
WNIDS = ("n09999999", "n01443537", "n04067472")  # wnids.txt order; sorted: n01443537 0, n04067472 1, n09999999 2
SORTED_LABEL = {"n01443537": 0, "n04067472": 1, "n09999999": 2}


def test_tinyimagenet_train_is_train_then_val_in_sorted_order_with_sorted_wnid_labels(tmp_path: Path) -> None:
    written = write_tinyimagenet(tmp_path, WNIDS, train_per_class=2, val_per_class=4, test=2)
    result = load("tinyimagenet", "train", root=tmp_path)
    val_order = [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]  # val_<i>.JPEG sorted by name
    expected = [image for wnid in sorted(WNIDS) for image in written["train"] if image.wnid == wnid]
    expected += [written["val"][index] for index in val_order]
    assert [image.path.name for image in expected][:3] == ["n01443537_0.JPEG", "n01443537_1.JPEG", "n04067472_0.JPEG"]
    assert result.images.shape == (18, 3, 32, 32) and result.labels.dtype == torch.int64
    assert result.labels.tolist() == [0, 0, 1, 1, 2, 2] + [SORTED_LABEL[WNIDS[index % 3]] for index in val_order]
    shrunk = np.stack([area_shrunk(image.image, 32, 32) for image in expected])
    assert np.abs(hwc(result.images) - shrunk).mean() < 3.0  # JPEG


def test_tinyimagenet_test_is_the_unlabelled_test_folder(tmp_path: Path) -> None:
    written = write_tinyimagenet(tmp_path, WNIDS, test=3, lossless=True)
    result = load("tinyimagenet", "test", root=tmp_path)
    expected = np.stack([area_shrunk(image.image, 32, 32) for image in written["test"]])
    assert_within_one_grey_level(hwc(result.images), expected)
    assert result.labels.tolist() == [-1, -1, -1]


def test_tinyimagenet_halving_of_two_by_two_blocks_is_exact(tmp_path: Path) -> None:
    small = np.random.default_rng(12).integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
    blocks = np.stack([blocks_of_two(image) for image in small])
    written = write_tinyimagenet(tmp_path, WNIDS, 2, 2, 1, images=blocks, lossless=True)
    test = load("tinyimagenet", "test", root=tmp_path)
    np.testing.assert_array_equal(hwc(test.images)[0], small[12])
    in_reader_order = sorted(written["train"], key=lambda image: image.path.name) + written["val"]  # val_0 … val_5
    train = load("tinyimagenet", "train", root=tmp_path)
    np.testing.assert_array_equal(hwc(train.images), np.stack([image.image[::2, ::2] for image in in_reader_order]))


def test_tinyimagenet_grey_jpeg_becomes_three_equal_channels(tmp_path: Path) -> None:
    written = write_tinyimagenet(tmp_path, WNIDS, train_per_class=1, val_per_class=1, test=1)
    [grey] = [image for image in written["val"] if image.grey]
    images = load("tinyimagenet", "train", root=tmp_path).images
    index = 3  # 3 train images, then val_0 (the grey one)
    assert grey.path.name == "val_0.JPEG"
    assert torch.equal(images[index, 0], images[index, 1]) and torch.equal(images[index, 1], images[index, 2])
    assert np.abs(images[index, 0].numpy() - area_shrunk(grey.image, 32, 32)[..., 0]).mean() < 3.0


def test_tinyimagenet_size_option_and_limit(tmp_path: Path) -> None:
    written = write_tinyimagenet(tmp_path, WNIDS, 1, 1, 2, lossless=True)
    image = written["test"][0].image
    np.testing.assert_array_equal(hwc(load("tinyimagenet", "test", root=tmp_path, size=64).images)[0], image)
    for size, expected in ((48, area_shrunk(image, 48, 48)), (80, bilinear(image, 80, 80))):
        assert_within_one_grey_level(hwc(load("tinyimagenet", "test", root=tmp_path, size=size).images)[0], expected)
    limited = load("tinyimagenet", "train", root=tmp_path, limit=4)
    assert limited.images.shape[0] == 4 and limited.labels.tolist() == [0, 1, 2, SORTED_LABEL[WNIDS[0]]]


def test_resize_antialiased_goes_one_axis_at_a_time_when_shrinking_one_and_enlarging_the_other() -> None:
    image = random_image(40, 20, seed=13)  # 40×20 → 30×30: width enlarged bilinearly first, then height averaged
    widened = np.clip(np.round(bilinear(image, 40, 30)), 0, 255).astype(np.uint8)
    difference = np.abs(resize_antialiased(image, 30, 30) - area_shrunk(widened, 30, 30))
    # both passes round to uint8 (OpenCV's bilinear in fixed point): 1.5 grey levels at most; one-pass area or
    # bilinear resizing is off by tens of grey levels
    assert difference.max() <= 1.5 + 1e-6 and difference.mean() < 0.5


def test_tinyimagenet_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"tiny-imagenet-200: file not found.*download tinyimagenet"):
        load("tinyimagenet", "train", root=tmp_path)
    write_tinyimagenet(tmp_path, WNIDS, 1, 1, 1)
    folder = tmp_path / "tinyimagenet" / TINYIMAGENET_FOLDER
    (folder / "val" / "val_annotations.txt").unlink()
    with pytest.raises(MissingDataError, match=r"val_annotations.txt: file not found"):
        load("tinyimagenet", "train", root=tmp_path)
    (folder / "wnids.txt").unlink()
    with pytest.raises(MissingDataError, match=r"wnids.txt: file not found"):
        load("tinyimagenet", "train", root=tmp_path)
    assert load("tinyimagenet", "test", root=tmp_path).labels.tolist() == [-1]  # test needs neither file


def test_tinyimagenet_inconsistent_lists_are_data_errors_naming_the_file(tmp_path: Path) -> None:
    write_tinyimagenet(tmp_path, WNIDS, 1, 1, 1)
    folder = tmp_path / "tinyimagenet" / TINYIMAGENET_FOLDER
    annotations = folder / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"val_annotations.txt: has no line for the val image val_0.JPEG"):
        load("tinyimagenet", "train", root=tmp_path)
    annotations.write_text("\n".join([*lines, "val_9.JPEG\tn00000001\t0\t0\t1\t1"]) + "\n")
    with pytest.raises(DataError, match=r"line 4: class 'n00000001' is not listed in wnids.txt"):
        load("tinyimagenet", "train", root=tmp_path)
    annotations.write_text("\n".join([*lines, "val_9.JPEG"]) + "\n")
    with pytest.raises(DataError, match=r"line 4: expected"):
        load("tinyimagenet", "train", root=tmp_path)
    annotations.write_text("\n".join(lines) + "\n")
    (folder / "wnids.txt").write_text("n01443537\nn04067472\n")
    with pytest.raises(DataError, match=r"train/n09999999: class folder 'n09999999' is not listed in wnids.txt"):
        load("tinyimagenet", "train", root=tmp_path)
    (folder / "wnids.txt").write_text("n01443537\nn04067472\nn09999999\nn01443537\n")
    with pytest.raises(DataError, match=r"wnids.txt: lists class ids more than once: n01443537"):
        load("tinyimagenet", "train", root=tmp_path)


def test_tinyimagenet_unreadable_image_and_bad_arguments(tmp_path: Path) -> None:
    write_tinyimagenet(tmp_path, WNIDS, 1, 1, 2)
    broken = write_garbage(tmp_path / "tinyimagenet" / TINYIMAGENET_FOLDER / "test" / "images" / "test_1.JPEG")
    with pytest.raises(DataError, match=rf"{broken}: cannot be decoded"):
        load("tinyimagenet", "test", root=tmp_path)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load("tinyimagenet", "train", root=tmp_path, limit=0)
    with pytest.raises(ValueError, match="TinyImageNet has no split 'val'"):
        read_tinyimagenet(tmp_path / "tinyimagenet", "val")


# ----------------------------------------------------------------------------------------------- sources
def test_sources_unpack_to_the_folders_the_readers_read() -> None:
    lsun, tiny = SOURCES["lsun"], SOURCES["tinyimagenet"]
    assert [file.unpacks_to for file in lsun.files] == [f"{category}_val_lmdb" for category in LSUN_CATEGORIES]
    for file in lsun.files:
        assert file.filename == f"{file.unpacks_to}.zip"
        assert file.urls == (f"http://dl.yf.io/lsun/scenes/{file.filename}",) and len(file.sha256 or "") == 64
    [archive] = tiny.files
    assert archive.unpacks_to == TINYIMAGENET_FOLDER and archive.md5 == "90528d7ca1a48142e341f4ef8d21d0de"
    assert DATASETS["lsun"].splits == ("test",) and DATASETS["tinyimagenet"].splits == ("train", "test")


def _zip_of(folders: list[Path]) -> bytes:
    """A zip holding each of ``folders`` at its top level, as the published archives do."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder in folders:
            for path in sorted(folder.rglob("*")):
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


def test_fetch_extracts_every_lsun_zip_into_a_folder_the_reader_loads(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = []
    for number, (real, category) in enumerate(zip(SOURCES["lsun"].files, LSUN_CATEGORIES, strict=True)):
        write_lsun_category(tmp_path / "made", category, [np.full((32, 48, 3), number, np.uint8)])
        data = _zip_of([lsun_folder(tmp_path / "made", category)])
        (file_server.folder / real.filename).write_bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        served.append(dataclasses.replace(real, urls=(file_server.url(real.filename),), sha256=sha256))
    monkeypatch.setitem(sources_module.SOURCES, "lsun", dataclasses.replace(SOURCES["lsun"], files=tuple(served)))
    fetch("lsun", tmp_path / "data", progress=False)
    assert load("lsun", "test", root=tmp_path / "data").images[:, 0, 0, 0].tolist() == list(range(10))


def test_fetch_extracts_tinyimagenet_into_a_folder_the_reader_loads(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tinyimagenet(tmp_path / "made", WNIDS, 1, 1, 1)
    data = _zip_of([tmp_path / "made" / "tinyimagenet" / TINYIMAGENET_FOLDER])
    [real] = SOURCES["tinyimagenet"].files
    (file_server.folder / real.filename).write_bytes(data)
    served = dataclasses.replace(real, urls=(file_server.url(real.filename),), md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(
        sources_module.SOURCES, "tinyimagenet", dataclasses.replace(SOURCES["tinyimagenet"], files=(served,))
    )
    fetch("tinyimagenet", tmp_path / "data", progress=False)
    # train: one image per class in sorted wnid order, then val_0..val_2 of classes WNIDS[0], WNIDS[1], WNIDS[2]
    assert load("tinyimagenet", "train", root=tmp_path / "data").labels.tolist() == [0, 1, 2, 2, 0, 1]
