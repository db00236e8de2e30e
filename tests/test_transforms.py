"""Batch transforms against per-sample numpy / OpenCV references and hand computations."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import pytest
import torch

from common.transforms import (
    BatchPipeline,
    bin_centres,
    center_crop,
    crop_at,
    dequantize,
    normalize,
    random_crop,
    random_horizontal_flip,
    resize,
    to_float,
)


def random_uint8(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def reference_crop(
    images: torch.Tensor, top: list[int], left: list[int], size: tuple[int, int], padding: int, mode: str
) -> torch.Tensor:
    """numpy's pad then a slice, one sample at a time (numpy 'reflect' mirrors without repeating the edge)."""
    pad_mode = "constant" if mode == "constant" else "reflect"
    crops = []
    for sample, y, x in zip(images.numpy(), top, left, strict=True):
        padded = np.pad(sample, ((0, 0), (padding, padding), (padding, padding)), mode=pad_mode)
        crops.append(padded[:, y : y + size[0], x : x + size[1]])
    return torch.from_numpy(np.stack(crops))


@pytest.mark.parametrize("padding_mode", ["constant", "reflect"])
def test_crop_at_equals_per_sample_pad_and_slice(padding_mode: str) -> None:
    images = random_uint8(6, 3, 9, 11)
    top = torch.tensor([0, 4, 7, 1, 7, 3])  # 9 + 2·3 − 8 = 7 is the largest row offset
    left = torch.tensor([0, 10, 2, 10, 5, 0])  # 11 + 2·3 − 7 = 10 is the largest column offset
    ours = crop_at(images, top, left, (8, 7), padding=3, padding_mode=padding_mode)
    expected = reference_crop(images, top.tolist(), left.tolist(), (8, 7), 3, padding_mode)
    assert ours.dtype == torch.uint8
    assert torch.equal(ours, expected)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    assert torch.equal(crop_at(channels_last, top, left, (8, 7), padding=3, padding_mode=padding_mode), expected)


@pytest.mark.parametrize("padding_mode", ["constant", "reflect"])
def test_random_crop_equals_per_sample_reference_with_the_documented_offsets(padding_mode: str) -> None:
    images = random_uint8(64, 3, 32, 32)
    ours = random_crop(images, 32, padding=4, padding_mode=padding_mode, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    top = torch.randint(0, 32 + 8 - 32 + 1, (64,), generator=generator)
    left = torch.randint(0, 32 + 8 - 32 + 1, (64,), generator=generator)
    assert torch.equal(ours, reference_crop(images, top.tolist(), left.tolist(), (32, 32), 4, padding_mode))


def test_random_crop_offsets_cover_the_whole_range_uniformly() -> None:
    height, width, samples = 6, 5, 6000
    coordinates = torch.arange(height * width).reshape(1, 1, height, width).expand(samples, 1, height, width)
    crops = random_crop(coordinates, (3, 2), generator=torch.Generator().manual_seed(1))
    corner = crops[:, 0, 0, 0]
    window = corner[:, None, None] + torch.arange(3)[:, None] * width + torch.arange(2)
    assert torch.equal(crops[:, 0], window)
    row_counts = torch.bincount(corner // width)
    col_counts = torch.bincount(corner % width)
    assert len(row_counts) == height - 3 + 1 and len(col_counts) == width - 2 + 1
    assert row_counts.min() > 0.9 * samples / 4 and col_counts.min() > 0.9 * samples / 4


def test_random_crop_is_reproducible_and_depends_on_the_generator() -> None:
    images = random_uint8(32, 3, 16, 16)
    first = random_crop(images, 16, padding=4, generator=torch.Generator().manual_seed(3))
    again = random_crop(images, 16, padding=4, generator=torch.Generator().manual_seed(3))
    other = random_crop(images, 16, padding=4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_crop_rejects_bad_arguments() -> None:
    images = random_uint8(2, 1, 4, 4)
    with pytest.raises(ValueError, match="padding_mode"):
        random_crop(images, 4, padding=1, padding_mode="edge", generator=torch.Generator())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reflect padding"):
        random_crop(images, 4, padding=4, padding_mode="reflect", generator=torch.Generator())
    with pytest.raises(ValueError, match="exceeds"):
        random_crop(images, 7, padding=1, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"top: offsets must lie in \[0, 3\]"):
        crop_at(images, torch.tensor([0, 4]), torch.tensor([0, 0]), 3, padding=1)
    with pytest.raises(ValueError, match=r"left: offsets must lie in \[0, 3\]"):
        crop_at(images, torch.tensor([0, 0]), torch.tensor([-1, 0]), 3, padding=1)
    with pytest.raises(ValueError, match=r"images: expected a tensor of shape \(N, C, H, W\)"):
        random_crop(images[0], 2, generator=torch.Generator())


def test_flip_equals_per_sample_reference_with_the_documented_draws() -> None:
    images = random_uint8(50, 3, 5, 7)
    ours = random_horizontal_flip(images, p=0.3, generator=torch.Generator().manual_seed(8))
    flip = torch.rand(50, generator=torch.Generator().manual_seed(8)) < 0.3
    expected = [sample[:, :, ::-1] if flipped else sample for sample, flipped in zip(images.numpy(), flip, strict=True)]
    assert torch.equal(ours, torch.from_numpy(np.stack(expected)))
    assert 0 < int(flip.sum()) < 50


def test_flip_probability_extremes_and_reproducibility() -> None:
    images = random_uint8(40, 3, 4, 6)
    assert torch.equal(random_horizontal_flip(images, p=0.0, generator=torch.Generator()), images)
    assert torch.equal(random_horizontal_flip(images, p=1.0, generator=torch.Generator()), images.flip(-1))
    first = random_horizontal_flip(images, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, random_horizontal_flip(images, generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(first, random_horizontal_flip(images, generator=torch.Generator().manual_seed(9)))
    with pytest.raises(ValueError, match="p: expected a probability"):
        random_horizontal_flip(images, p=1.5, generator=torch.Generator())


def test_bilinear_upsampling_matches_a_hand_computation() -> None:
    # align_corners=False: output pixel i samples the input at (i + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25,
    # clamped to [0, 1]; so the interpolation weights of the two input pixels are, row by row:
    weights = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    image = torch.tensor([[1.0, 3.0], [5.0, 11.0]], dtype=torch.float64)
    expected = weights @ image @ weights.T
    ours = resize(image[None, None], 4, mode="bilinear")
    assert ours.shape == (1, 1, 4, 4)
    assert torch.allclose(ours[0, 0], expected, atol=1e-12)


def test_resize_matches_opencv_linear_upsampling_and_area_downsampling() -> None:
    images = random_uint8(3, 3, 8, 10).float()
    for mode, cv2_mode, size in (("bilinear", cv2.INTER_LINEAR, (13, 17)), ("area", cv2.INTER_AREA, (4, 5))):
        ours = resize(images, size, mode=mode)  # type: ignore[arg-type]
        expected = [cv2.resize(image.permute(1, 2, 0).numpy(), size[::-1], interpolation=cv2_mode) for image in images]
        assert ours.shape == (3, 3, *size)
        assert torch.allclose(ours, torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2), atol=1e-3)


def test_resize_keeps_constant_images_constant_and_uint8_rounds_the_float_result() -> None:
    constant = torch.full((2, 3, 9, 7), 77, dtype=torch.uint8)
    for mode in ("nearest", "bilinear", "bicubic", "area"):
        for size in (4, (20, 15)):
            resized = resize(constant, size, mode=mode)  # type: ignore[arg-type]
            assert resized.dtype == torch.uint8
            assert torch.equal(resized, torch.full_like(resized, 77))
    images = random_uint8(2, 3, 12, 12)
    as_float = resize(images.float(), 5, mode="bicubic")
    assert torch.equal(resize(images, 5, mode="bicubic"), as_float.round().clamp(0, 255).to(torch.uint8))


def test_antialiased_halving_uses_the_widened_triangle_filter() -> None:
    # Shrinking by 2 stretches the bilinear triangle to a half-width of 2 input pixels: output i averages inputs
    # 2i−1 … 2i+2 with weights (1, 3, 3, 1)/8 (cv2.INTER_AREA would use (0, 1, 1, 0)/2), away from the border.
    row = torch.rand(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = resize(row[None, None, None], (1, 8), antialias=True)[0, 0, 0]
    expected = torch.stack(
        [row[2 * i - 1 : 2 * i + 3] @ torch.tensor([1.0, 3, 3, 1], dtype=torch.float64) / 8 for i in range(1, 7)]
    )
    assert torch.allclose(ours[1:7], expected, atol=1e-12)
    without_filter = resize(row[None, None, None], (1, 8), antialias=False)[0, 0, 0]
    assert torch.allclose(without_filter, (row[0::2] + row[1::2]) / 2, atol=1e-12)


def test_center_crop_uses_torchvision_offsets() -> None:
    images = torch.arange(2 * 1 * 32 * 32).reshape(2, 1, 32, 32)
    assert torch.equal(center_crop(images, 28), images[:, :, 2:30, 2:30])
    odd = torch.arange(5 * 7).reshape(1, 1, 5, 7)
    # round(3/2) = 2 (half to even) rows above, round(4/2) = 2 columns to the left.
    assert torch.equal(center_crop(odd, (2, 3)), odd[:, :, 2:4, 2:5])
    with pytest.raises(ValueError, match="exceeds the image"):
        center_crop(odd, 6)


def test_to_float_and_normalize_match_manual_formulas() -> None:
    images = random_uint8(4, 3, 5, 5)
    as_float = to_float(images)
    assert as_float.dtype == torch.float32
    assert torch.allclose(as_float.double(), torch.from_numpy(images.numpy() / 255.0))
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    manual = np.stack([(as_float[:, c].numpy() - mean[c]) / std[c] for c in range(3)], axis=1)
    assert np.allclose(normalize(as_float, mean, std).numpy(), manual, atol=1e-6)
    assert torch.equal(as_float, to_float(images))  # left untouched
    in_place = normalize(as_float, mean, std, inplace=True)
    assert in_place.data_ptr() == as_float.data_ptr()
    assert np.allclose(as_float.numpy(), manual, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        to_float(as_float)
    with pytest.raises(ValueError, match="floating"):
        normalize(images, mean, std)
    with pytest.raises(ValueError, match="expected 3 values"):
        normalize(as_float, mean[:2], std)


def test_dequantize_fills_each_bin_uniformly() -> None:
    images = random_uint8(64, 3, 16, 16)
    ours = dequantize(images, generator=torch.Generator().manual_seed(0))
    assert ours.dtype == torch.float32
    assert ours.min() >= -0.5 and ours.max() <= 0.5
    bin_start = images.double() / 256 - 0.5
    offset = (ours.double() - bin_start) * 256  # U[0, 1) in units of one bin
    assert offset.min() >= -1e-4 and offset.max() < 1 + 1e-4
    assert abs(float(offset.mean()) - 0.5) < 0.01
    assert abs(float(offset.var()) - 1 / 12) < 0.01
    assert torch.equal(ours, dequantize(images, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(ours, dequantize(images, generator=torch.Generator().manual_seed(1)))


def test_bin_centres_are_the_middle_of_each_bin() -> None:
    images = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    expected = np.arange(256).reshape(1, 1, 16, 16) / 256 - 0.5 + 1 / 512
    assert np.allclose(bin_centres(images).numpy(), expected, atol=1e-7)
    assert bin_centres(images).dtype == torch.float32


def test_batch_pipeline_applies_steps_in_order() -> None:
    images = random_uint8(8, 3, 12, 12)
    pipeline = BatchPipeline([partial(center_crop, size=10), to_float, partial(normalize, mean=[0.5] * 3, std=[2] * 3)])
    expected = (images[:, :, 1:11, 1:11].double() / 255 - 0.5) / 2
    assert torch.allclose(pipeline(images).double(), expected, atol=1e-6)
    assert "center_crop" in repr(pipeline)
