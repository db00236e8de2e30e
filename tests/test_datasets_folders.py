"""Image-folder OOD sets (ODIN, DTD, CelebA) and MVTec AD, read through the registry from files in real layouts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.datasets import load
from common.datasets.mvtec import MVTEC_CATEGORIES, read_mvtec
from common.errors import DataError, MissingDataError
from tests.helpers.write_images import (
    ODIN_FOLDERS,
    smooth_images,
    write_celeba,
    write_garbage,
    write_image,
    write_mvtec_category,
    write_odin_set,
    write_textures,
)

ODIN_SETS = sorted(ODIN_FOLDERS)


def nchw(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) numpy → (N, C, H, W) torch."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def torch_bilinear(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    """MCHAD's test resize, computed independently: torch bilinear on floats, no antialiasing; (C, H, W)."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return resized[0]


def constant_images(values: list[int]) -> list[np.ndarray]:
    """One 32×32 RGB image per value, every pixel (value, 255 - value, 7)."""
    return [np.full((32, 32, 3), (value, 255 - value, 7), dtype=np.uint8) for value in values]


# ----------------------------------------------------------------------------------------------- ODIN sets
@pytest.mark.parametrize("name", ODIN_SETS)
def test_odin_set_reads_jpegs_in_the_real_layout(tmp_path: Path, name: str) -> None:
    images = smooth_images(5, 32, 32, seed=1)
    write_odin_set(tmp_path, name, images)
    result = load(name, "test", root=tmp_path)
    assert result.images.shape == (5, 3, 32, 32) and result.images.dtype == torch.uint8
    assert result.labels.dtype == torch.int64 and result.labels.tolist() == [-1] * 5
    jpeg_error = (result.images.double() - nchw(images).double()).abs().mean()
    assert jpeg_error < 3.0


@pytest.mark.parametrize("name", ODIN_SETS)
def test_odin_set_is_rgb_in_sorted_order_and_limited(tmp_path: Path, name: str) -> None:
    values = [200, 10, 120]
    write_odin_set(tmp_path, name, constant_images(values), suffix=".png", names=["c", "a", "b"])
    result = load(name, "test", root=tmp_path)
    assert result.images[:, 0, 0, 0].tolist() == [10, 120, 200]  # a, b, c
    assert result.images[:, 1, 0, 0].tolist() == [245, 135, 55]
    assert (result.images[:, 2] == 7).all()
    limited = load(name, "test", root=tmp_path, limit=2)
    assert torch.equal(limited.images, result.images[:2]) and limited.labels.tolist() == [-1, -1]


def test_pure_red_png_is_red_in_channel_zero(tmp_path: Path) -> None:
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    write_odin_set(tmp_path, "lsun-crop", [red], suffix=".png")
    image = load("lsun-crop", "test", root=tmp_path).images[0]
    assert (image[0] == 255).all() and (image[1:] == 0).all()


def test_crop_set_of_36_pixels_is_stretched_like_mchads_torch_resize(tmp_path: Path) -> None:
    image = np.random.default_rng(3).integers(0, 256, (36, 36, 3), dtype=np.uint8)
    write_odin_set(tmp_path, "tinyimagenet-crop", [image], suffix=".png")
    result = load("tinyimagenet-crop", "test", root=tmp_path).images[0]
    assert result.shape == (3, 32, 32)
    assert (result.double() - torch_bilinear(image, 32, 32)).abs().max() <= 1.0


def test_size_option_sets_the_output_side(tmp_path: Path) -> None:
    images = smooth_images(2, 32, 32)
    write_odin_set(tmp_path, "isun", images, suffix=".png")
    result = load("isun", "test", root=tmp_path, size=16)
    assert result.images.shape == (2, 3, 16, 16)
    assert (result.images[1].double() - torch_bilinear(images[1], 16, 16)).abs().max() <= 1.0


def test_resize_archive_with_doubled_folder_is_accepted(tmp_path: Path) -> None:
    paths = write_odin_set(tmp_path, "lsun-resize", constant_images([1, 2]), suffix=".png", nested=True)
    assert paths[0].parent == tmp_path / "lsun-resize" / "LSUN_resize" / "LSUN_resize"
    assert load("lsun-resize", "test", root=tmp_path).images[:, 0, 0, 0].tolist() == [1, 2]


def test_missing_folder_is_missing_data_naming_the_expected_folder(tmp_path: Path) -> None:
    (tmp_path / "lsun-crop" / "LSUN").mkdir(parents=True)
    with pytest.raises(MissingDataError, match=r"lsun-crop/LSUN/test: file not found.*LSUN\.tar\.gz"):
        load("lsun-crop", "test", root=tmp_path)
    with pytest.raises(FileNotFoundError):
        load("isun", "test", root=tmp_path)


def test_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    directory = tmp_path / "tinyimagenet-resize" / "Imagenet_resize"
    directory.mkdir(parents=True)
    (directory / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files") as error:
        load("tinyimagenet-resize", "test", root=tmp_path)
    assert not isinstance(error.value, MissingDataError)


def test_unreadable_image_is_a_data_error_naming_it(tmp_path: Path) -> None:
    write_odin_set(tmp_path, "lsun-crop", constant_images([1, 2]))
    write_garbage(tmp_path / "lsun-crop" / "LSUN" / "test" / "00001b.jpg")
    with pytest.raises(DataError, match=re.escape("00001b.jpg")):
        load("lsun-crop", "test", root=tmp_path)


def test_non_positive_limit_or_size_is_rejected(tmp_path: Path) -> None:
    write_odin_set(tmp_path, "isun", constant_images([1]))
    with pytest.raises(ValueError, match="limit"):
        load("isun", "test", root=tmp_path, limit=0)
    with pytest.raises(ValueError, match="size"):
        load("isun", "test", root=tmp_path, size=0)


# ----------------------------------------------------------------------------------------------- Textures
def test_textures_are_stretched_without_crop_in_class_then_name_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    wide = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
    written = {
        "zigzagged": [np.full((50, 30, 3), 9, dtype=np.uint8)],
        "banded": [wide, np.full((33, 33, 3), 200, dtype=np.uint8)],
    }
    write_textures(tmp_path, written, suffix=".png")
    (tmp_path / "textures" / "dtd" / "images" / "banded" / ".directory").write_text("[Dolphin]")
    result = load("textures", "test", root=tmp_path)
    assert result.images.shape == (3, 3, 32, 32) and result.labels.tolist() == [-1, -1, -1]
    assert (result.images[0].double() - torch_bilinear(wide, 32, 32)).abs().max() <= 1.0
    assert (result.images[1] == 200).all() and (result.images[2] == 9).all()


def test_textures_jpeg_layout_and_limit(tmp_path: Path) -> None:
    write_textures(tmp_path, {"dotted": list(smooth_images(3, 48, 40)), "lined": list(smooth_images(2, 40, 40))})
    assert load("textures", "test", root=tmp_path).images.shape == (5, 3, 32, 32)
    assert load("textures", "test", root=tmp_path, limit=4).images.shape == (4, 3, 32, 32)


# ----------------------------------------------------------------------------------------------- CelebA
def tall_face(seed: int) -> np.ndarray:
    """A 30×20 image: rows 5..24 (the central 20×20 square) hold random pixels, the rest is 255."""
    image = np.full((30, 20, 3), 255, dtype=np.uint8)
    image[5:25] = np.random.default_rng(seed).integers(0, 200, (20, 20, 3), dtype=np.uint8)
    return image


def test_celeba_splits_follow_the_partition_file(tmp_path: Path) -> None:
    write_celeba(tmp_path, constant_images([0, 1, 2, 3, 4, 5]), [2, 0, 1, 0, 2, 0], suffix=".png")
    channel0 = {
        split: load("celeba", split, root=tmp_path).images[:, 0, 0, 0].tolist() for split in ("train", "valid", "test")
    }
    assert channel0 == {"train": [1, 3, 5], "valid": [2], "test": [0, 4]}
    result = load("celeba", "train", root=tmp_path, limit=2)
    assert result.images[:, 0, 0, 0].tolist() == [1, 3] and result.labels.tolist() == [-1, -1]


def test_celeba_central_square_is_area_shrunk(tmp_path: Path) -> None:
    faces = [tall_face(0), tall_face(3)]
    write_celeba(tmp_path, faces, [0, 0], suffix=".png")
    result = load("celeba", "train", root=tmp_path, size=5)
    block_means = faces[1][5:25].astype(np.float64).reshape(5, 4, 5, 4, 3).mean(axis=(1, 3))
    assert result.images.shape == (2, 3, 5, 5)
    assert np.abs(result.images[1].permute(1, 2, 0).numpy() - block_means).max() <= 0.5 + 1e-9


def test_celeba_crop_option_takes_a_smaller_central_square(tmp_path: Path) -> None:
    write_celeba(tmp_path, [tall_face(0)], [1], suffix=".png")
    result = load("celeba", "valid", root=tmp_path, crop=10, size=10)
    expected = tall_face(0)[10:20, 5:15]
    assert np.array_equal(result.images[0].permute(1, 2, 0).numpy(), expected)


def test_celeba_jpegs_default_to_32_pixels(tmp_path: Path) -> None:
    write_celeba(tmp_path, list(smooth_images(2, 218, 178)), [0, 0])
    assert load("celeba", "train", root=tmp_path).images.shape == (2, 3, 32, 32)


def test_celeba_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="img_align_celeba"):
        load("celeba", "train", root=tmp_path)
    paths = write_celeba(tmp_path, constant_images([1, 2]), [0, 0], suffix=".png")
    with pytest.raises(DataError, match=re.escape(f"{paths[0].name}: cannot crop 40×40")):
        load("celeba", "train", root=tmp_path, crop=40)
    paths[1].unlink()
    with pytest.raises(MissingDataError, match=re.escape(paths[1].name)):
        load("celeba", "train", root=tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.png 0\n000002.png three\n")
    with pytest.raises(DataError, match=re.escape("list_eval_partition.txt: line 2")):
        load("celeba", "train", root=tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(MissingDataError, match=re.escape("list_eval_partition.txt")):
        load("celeba", "train", root=tmp_path)


# ----------------------------------------------------------------------------------------------- MVTec AD
@pytest.mark.parametrize(("category", "grey"), [("bottle", False), ("grid", True)])
def test_mvtec_splits_labels_masks_and_defect_types(tmp_path: Path, category: str, grey: bool) -> None:
    written = write_mvtec_category(tmp_path, category, defects={"crack": 2, "broken_large": 1}, grey=grey)
    for split in ("train", "test"):
        expected = written[split]
        result = read_mvtec(tmp_path / "mvtec", category, split)
        assert result.paths == [item.path for item in expected]
        assert result.defect_types == [item.defect_type for item in expected]
        assert result.labels.tolist() == [item.label for item in expected]
        assert torch.equal(result.images, nchw(np.stack([item.image for item in expected])))
        assert torch.equal(result.masks, nchw(np.stack([item.mask[:, :, None] for item in expected])))
        assert result.images.dtype == result.masks.dtype == torch.uint8 and result.labels.dtype == torch.int64
    test = read_mvtec(tmp_path / "mvtec", category, "test")
    assert test.defect_types == ["broken_large", "crack", "crack", "good", "good"]
    assert test.labels.tolist() == [1, 1, 1, 0, 0] and test.masks[3:].sum() == 0 and test.masks[:3].sum() > 0
    if grey:
        assert torch.equal(test.images[:, 0], test.images[:, 1]) and torch.equal(test.images[:, 0], test.images[:, 2])


def test_mvtec_registry_reader_returns_images_and_labels(tmp_path: Path) -> None:
    write_mvtec_category(tmp_path, "screw", grey=True)
    direct = read_mvtec(tmp_path / "mvtec", "screw", "test")
    through_registry = load("mvtec", "test", root=tmp_path, category="screw")
    assert torch.equal(through_registry.images, direct.images) and torch.equal(through_registry.labels, direct.labels)
    assert load("mvtec", "train", root=tmp_path, category="screw").labels.tolist() == [0, 0, 0]


def test_mvtec_size_resizes_images_bilinearly_and_masks_nearest(tmp_path: Path) -> None:
    written = write_mvtec_category(tmp_path, "carpet", size=(40, 48), defects={"cut": 1})
    speckled = np.random.default_rng(5).integers(0, 2, (40, 48), dtype=np.uint8)
    write_image(tmp_path / "mvtec" / "carpet" / "ground_truth" / "cut" / "000_mask.png", speckled * 255)
    result = read_mvtec(tmp_path / "mvtec", "carpet", "test", size=24)
    assert result.images.shape == (3, 3, 24, 24) and result.masks.shape == (3, 1, 24, 24)
    defective = written["test"][0]
    assert (result.images[0].double() - torch_bilinear(defective.image, 24, 24)).abs().max() <= 1.0
    rows = np.floor(np.arange(24) * 40 / 24).astype(int)  # OpenCV nearest: source index floor(i · in / out)
    columns = np.floor(np.arange(24) * 48 / 24).astype(int)
    assert np.array_equal(result.masks[0, 0].numpy(), speckled[np.ix_(rows, columns)])
    registry = load("mvtec", "test", root=tmp_path, category="carpet", size=24)
    assert torch.equal(registry.images, result.images)


def test_mvtec_unknown_category_lists_the_fifteen(tmp_path: Path) -> None:
    assert len(MVTEC_CATEGORIES) == 15 and "metal_nut" in MVTEC_CATEGORIES
    with pytest.raises(ValueError, match=r"bottle, cable, capsule.*zipper"):
        load("mvtec", "test", root=tmp_path, category="bottles")


def test_mvtec_missing_category_folder_is_missing_data(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"mvtec/hazelnut/train"):
        load("mvtec", "train", root=tmp_path, category="hazelnut")


def test_mvtec_missing_mask_is_missing_data_naming_it(tmp_path: Path) -> None:
    write_mvtec_category(tmp_path, "pill", defects={"crack": 1})
    mask = tmp_path / "mvtec" / "pill" / "ground_truth" / "crack" / "000_mask.png"
    mask.unlink()
    with pytest.raises(MissingDataError, match=re.escape("000_mask.png")):
        read_mvtec(tmp_path / "mvtec", "pill", "test")


def test_mvtec_mask_of_wrong_size_and_unreadable_image_are_data_errors(tmp_path: Path) -> None:
    write_mvtec_category(tmp_path, "tile", defects={"oil": 1})
    mask = tmp_path / "mvtec" / "tile" / "ground_truth" / "oil" / "000_mask.png"
    write_image(mask, np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DataError, match=re.escape("000_mask.png")):
        read_mvtec(tmp_path / "mvtec", "tile", "test")
    write_garbage(tmp_path / "mvtec" / "tile" / "train" / "good" / "001.png")
    with pytest.raises(DataError, match=re.escape("001.png")):
        load("mvtec", "train", root=tmp_path, category="tile")


def test_mvtec_images_of_mixed_sizes_are_a_data_error_unless_resized(tmp_path: Path) -> None:
    write_mvtec_category(tmp_path, "screw", train_good=2, size=(40, 48))
    write_image(tmp_path / "mvtec" / "screw" / "train" / "good" / "002.png", np.zeros((30, 30, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"mvtec/screw/train.*\(30, 30, 3\)"):
        read_mvtec(tmp_path / "mvtec", "screw", "train")
    assert read_mvtec(tmp_path / "mvtec", "screw", "train", size=16).images.shape == (3, 3, 16, 16)
