"""Generated and shipped demo sets: scikit-learn digits, uniform and Gaussian noise, drawn shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from common.datasets import load
from common.datasets.synthetic import SHAPE_CLASSES


# ----------------------------------------------------------------------------------------------- digits
@pytest.mark.parametrize("seed", [0, 7])
def test_digits_are_sklearns_scaled_pixels_on_a_stratified_split(tmp_path: Path, seed: int) -> None:
    digits = load_digits()
    train_index, test_index = train_test_split(
        np.arange(1797), test_size=0.25, stratify=digits.target, random_state=seed
    )
    for split, index in (("train", np.sort(train_index)), ("test", np.sort(test_index))):
        result = load("digits", split, root=tmp_path, seed=seed)
        expected = np.floor(digits.images[index] * 255 / 16 + 0.5)
        assert result.images.shape == (len(index), 1, 8, 8) and result.images.dtype == torch.uint8
        assert np.array_equal(result.images[:, 0].numpy(), expected)
        assert result.labels.dtype == torch.int64 and np.array_equal(result.labels.numpy(), digits.target[index])
    assert load("digits", "train", root=tmp_path).images.max() == 255  # 16 → 255


def test_digits_split_is_stratified_disjoint_and_seeded(tmp_path: Path) -> None:
    train = load("digits", "train", root=tmp_path, test_fraction=0.2)
    test = load("digits", "test", root=tmp_path, test_fraction=0.2)
    assert len(train.labels) + len(test.labels) == 1797
    train_counts = torch.bincount(train.labels, minlength=10).double()
    test_counts = torch.bincount(test.labels, minlength=10).double()
    assert ((test_counts / (train_counts + test_counts) - 0.2).abs() < 0.02).all()
    train_rows = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_rows for image in test.images if image.any())
    other = load("digits", "test", root=tmp_path, test_fraction=0.2, seed=1)
    assert torch.equal(load("digits", "test", root=tmp_path, test_fraction=0.2).images, test.images)
    assert not torch.equal(other.images, test.images)


def test_digits_upscale_bilinearly(tmp_path: Path) -> None:
    small = load("digits", "test", root=tmp_path)
    large = load("digits", "test", root=tmp_path, size=32)
    expected = F.interpolate(small.images.double(), size=(32, 32), mode="bilinear", align_corners=False)
    assert large.images.shape == (450, 1, 32, 32)
    assert (large.images.double() - expected).abs().max() <= 1.0


def test_digits_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load("digits", "train", root=tmp_path, test_fraction=1.0)
    with pytest.raises(ValueError, match="size"):
        load("digits", "train", root=tmp_path, size=0)


# ----------------------------------------------------------------------------------------------- noise
def test_uniform_noise_matches_pytorch_oods_per_image_draws(tmp_path: Path) -> None:
    result = load("uniform-noise", "test", root=tmp_path, n=20, size=8, channels=3, seed=123)
    generator = np.random.default_rng(123)
    expected = [generator.uniform(low=0, high=255, size=(8, 8, 3)).astype(np.uint8) for _ in range(20)]
    assert result.images.shape == (20, 3, 8, 8) and result.images.dtype == torch.uint8
    assert np.array_equal(result.images.numpy(), np.stack(expected).transpose(0, 3, 1, 2))
    assert result.labels.dtype == torch.int64 and (result.labels == -1).all()


def test_uniform_noise_default_set_and_seeds(tmp_path: Path) -> None:
    result = load("uniform-noise", "test", root=tmp_path)
    assert result.images.shape == (10_000, 3, 32, 32)
    assert result.images.max() == 254 and result.images.min() == 0  # uint8(U[0, 255)) never reaches 255
    small = load("uniform-noise", "test", root=tmp_path, n=50)
    assert torch.equal(small.images, result.images[:50])
    assert not torch.equal(load("uniform-noise", "test", root=tmp_path, n=50, seed=1).images, small.images)


def test_gaussian_noise_matches_pytorch_oods_per_image_draws(tmp_path: Path) -> None:
    result = load("gaussian-noise", "test", root=tmp_path, n=10, size=8, channels=1, seed=5)
    generator = np.random.default_rng(5)
    expected = [np.clip(generator.normal(128, 128, size=(8, 8, 1)), 0, 255).astype(np.uint8) for _ in range(10)]
    assert result.images.shape == (10, 1, 8, 8)
    assert np.array_equal(result.images.numpy(), np.stack(expected).transpose(0, 3, 1, 2))
    assert (result.labels == -1).all()


def test_gaussian_noise_clips_a_sixth_of_pixels_at_each_end(tmp_path: Path) -> None:
    pixels = load("gaussian-noise", "test", root=tmp_path, n=200).images
    below_zero = norm.cdf(0, loc=128, scale=128)  # P(N(128, 128²) < 0) ≈ 0.159
    above_255 = norm.sf(255, loc=128, scale=128)
    assert abs((pixels == 0).double().mean().item() - below_zero) < 0.005
    assert abs((pixels == 255).double().mean().item() - above_255) < 0.005
    assert not torch.equal(load("gaussian-noise", "test", root=tmp_path, n=200, seed=1).images, pixels)


# ----------------------------------------------------------------------------------------------- shapes
def foreground(images: torch.Tensor) -> torch.Tensor:
    """Pixels (N, H, W) far (> 48) in some channel from the image's background, the median of its 4 corners."""
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].median(dim=2).values
    return (images.int() - corners[:, :, None, None].int()).abs().amax(dim=1) > 48


def test_shapes_are_balanced_seeded_and_differ_between_splits(tmp_path: Path) -> None:
    train = load("shapes", "train", root=tmp_path, n=200, seed=3)
    assert train.images.shape == (200, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and torch.bincount(train.labels).tolist() == [20] * 10
    assert torch.equal(load("shapes", "train", root=tmp_path, n=200, seed=3).images, train.images)
    assert not torch.equal(load("shapes", "train", root=tmp_path, n=200, seed=4).images, train.images)
    test = load("shapes", "test", root=tmp_path, n=200, seed=3)
    assert not torch.equal(test.images, train.images) and not torch.equal(test.labels, train.labels)


def test_shapes_default_sizes_and_grey(tmp_path: Path) -> None:
    assert load("shapes", "test", root=tmp_path).images.shape == (1000, 3, 32, 32)
    grey = load("shapes", "train", root=tmp_path, n=30, size=16, channels=1)
    assert grey.images.shape == (30, 1, 16, 16)
    assert (foreground(grey.images).flatten(1).float().mean(1) > 0.01).all()


def test_every_shape_is_visible_and_filled_shapes_cover_more_than_outlines(tmp_path: Path) -> None:
    shapes = load("shapes", "train", root=tmp_path, n=1000, seed=11)
    area = foreground(shapes.images).flatten(1).double().mean(1)
    assert ((area > 0.01) & (area < 0.6)).all()
    mean_area = {name: area[shapes.labels == label].mean().item() for label, name in enumerate(SHAPE_CLASSES)}
    for filled, outline in (("disc", "ring"), ("square", "square outline"), ("triangle", "triangle outline")):
        assert mean_area[filled] > 1.3 * mean_area[outline]
    assert mean_area["disc"] > mean_area["line"]


def test_shapes_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channels"):
        load("shapes", "train", root=tmp_path, n=10, channels=2)
    with pytest.raises(ValueError, match="n must be"):
        load("shapes", "train", root=tmp_path, n=0)
