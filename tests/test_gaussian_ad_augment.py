"""The albumentations pipeline of Gaussian AD's ``--augment`` against the original's parameters (albumentations 0.4.3,
imgaug 0.2.6, ``common/augmentation.py`` and ``MVTecAD.augmentation_info``), and its per-image seeding."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gaussian_ad.augment import Switches, albumentations, augment, augment_image, pipeline

A = albumentations()

MVTEC = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
# The original's augmentation_info, as written there: the categories each switch excludes.
ORIGINAL_NO_FLIP = ("metal_nut", "pill", "capsule", "screw")
ORIGINAL_NO_ROTATE90 = ("transistor",)
ORIGINAL_NO_ROTATE45 = (
    "bottle", "cable", "capsule", "metal_nut", "pill", "screw", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
ORIGINAL_NO_BACKGROUND_EDGE = ("grid",)


def _one_of(transform: A.OneOf, p: float, kinds: list[type], weights: list[float]) -> list:
    """Check a OneOf's p, its children's types and the normalised weights 0.4.3 gave them; return the children."""
    assert isinstance(transform, A.OneOf) and transform.p == p
    assert [type(t) for t in transform.transforms] == kinds
    np.testing.assert_allclose(transform.transforms_ps, np.array(weights) / sum(weights))
    return list(transform.transforms)


def _check_pixel_block(block: A.Sequential, noise: bool) -> None:
    """pixel_aug(p=1, noise): the four blocks with 0.4.3's limits (defaults of 0.4.3 / imgaug 0.2.6 where unset)."""
    assert isinstance(block, A.Sequential) and block.p == 1.0
    blocks = list(block.transforms)
    assert len(blocks) == (4 if noise else 3)
    motion, median, box = _one_of(blocks[0], 0.2, [A.MotionBlur, A.MedianBlur, A.Blur], [0.2, 0.1, 0.1])
    assert motion.blur_limit == (3, 7) and median.blur_limit == (3, 3) and box.blur_limit == (3, 3)
    kinds = [A.CLAHE, A.Sharpen, A.Emboss, A.RandomBrightnessContrast]
    clahe, sharpen, emboss, tone = _one_of(blocks[1], 0.3, kinds, [0.5] * 4)  # 0.4.3's default p = .5 each
    assert clahe.clip_limit == (1, 2) and clahe.tile_grid_size == (8, 8)  # CLAHE(clip_limit=2) → (1, 2)
    assert sharpen.alpha == (0.2, 0.5) and sharpen.lightness == (0.5, 1.0) and sharpen.method == "kernel"
    assert emboss.alpha == (0.2, 0.5) and emboss.strength == (0.2, 0.7)
    assert tone.brightness_limit == (-0.1, 0.2) and tone.contrast_limit == (-0.2, 0.2) and tone.brightness_by_max
    hsv = blocks[2]
    assert isinstance(hsv, A.HueSaturationValue) and hsv.p == 0.3
    assert (hsv.hue_shift_limit, hsv.sat_shift_limit, hsv.val_shift_limit) == ((-10, 10), (-30, 30), (-10, 20))
    if noise:
        shared, per_channel = _one_of(blocks[3], 0.2, [A.GaussNoise, A.GaussNoise], [0.5, 0.5])
        for gauss, channels in ((shared, False), (per_channel, True)):
            # imgaug scale (0.01·255, 0.03·255) in pixel units = std_range as a fraction of 255
            assert gauss.std_range == (0.01, 0.03) and gauss.mean_range == (0, 0) and gauss.per_channel is channels


@pytest.mark.parametrize("category", MVTEC)
def test_pipeline_has_the_original_transforms_probabilities_and_switches(category: str) -> None:
    switches = Switches.for_category(category)
    assert switches == Switches(
        flip=category not in ORIGINAL_NO_FLIP,
        rotate90=category not in ORIGINAL_NO_ROTATE90,
        rotate45=category not in ORIGINAL_NO_ROTATE45,
        background_edge=category not in ORIGINAL_NO_BACKGROUND_EDGE,
        noise=True,
    )
    transform = pipeline(switches)
    assert isinstance(transform, A.Compose) and transform.p == 0.5  # half of the images stay untouched
    pixel, *geometric = transform.transforms
    _check_pixel_block(pixel, noise=True)
    kinds = [A.HorizontalFlip] * switches.flip + [A.RandomRotate90] * switches.rotate90 + [A.Affine]
    assert [type(t) for t in geometric] == kinds
    assert all(t.p == 0.5 for t in geometric[:-1])  # 0.4.3's default p of HorizontalFlip and RandomRotate90
    affine = geometric[-1]
    # ShiftScaleRotate(shift_limit, scale_limit (bias 1), rotate_limit, p .2), linear, BORDER_REFLECT_101
    shift = 0.05 if switches.background_edge else 0.0
    rotate = (45 if switches.rotate45 else 15) if switches.background_edge else 0
    assert affine.p == 0.2 and affine.keep_ratio  # one isotropic scale, as getRotationMatrix2D
    assert affine.scale == {axis: (0.95, 1.1 if switches.background_edge else 1.0) for axis in "xy"}
    assert affine.translate_percent == {axis: (-shift, shift) for axis in "xy"}
    assert affine.rotate == (-rotate, rotate) and affine.shear == {"x": (0, 0), "y": (0, 0)}
    assert affine.interpolation == cv2.INTER_LINEAR and affine.border_mode == cv2.BORDER_REFLECT_101
    assert not affine.fit_output


def test_noise_switch_drops_the_noise_block() -> None:
    _check_pixel_block(pipeline(Switches(noise=False)).transforms[0], noise=False)


def _images(count: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


def test_untouched_fraction_follows_the_original_probabilities() -> None:
    """P(image unchanged) = .5 + .5·P(no op fires) from 0.4.3's probabilities (rot90 draws 0° a quarter of the time)."""
    images = _images(600)
    out = augment(images, Switches.for_category("carpet"), seed=0, pass_index=0)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    no_op = (1 - 0.2) * (1 - 0.3) * (1 - 0.3) * (1 - 0.2) * (1 - 0.5) * (1 - 0.5 * 3 / 4) * (1 - 0.2)
    unchanged = float((out == images).flatten(1).all(dim=1).double().mean())
    assert unchanged == pytest.approx(0.5 + 0.5 * no_op, abs=0.07)  # ± 3.5 binomial σ


def test_augmentation_is_a_function_of_seed_pass_and_image() -> None:
    images, switches = _images(12), Switches.for_category("hazelnut")
    reference = augment(images, switches, seed=3, pass_index=1)
    random.seed(9)  # the global generators play no part
    np.random.seed(9)
    torch.manual_seed(9)
    assert torch.equal(augment(images, switches, seed=3, pass_index=1), reference)
    transform = pipeline(switches)
    for i in reversed(range(12)):  # one image at a time, in another order, through one reused pipeline
        alone = augment_image(transform, images[i].permute(1, 2, 0).numpy().copy(), 3, 1, i)
        assert np.array_equal(alone, reference[i].permute(1, 2, 0).numpy())
    assert not torch.equal(augment(images, switches, seed=3, pass_index=2), reference)
    assert not torch.equal(augment(images, switches, seed=4, pass_index=1), reference)
    with pytest.raises(ValueError, match="uint8"):
        augment(images.float(), switches, 0, 0)


WORKER = """
import sys
import numpy as np
from gaussian_ad.augment import Switches, augment_image, pipeline
images, transform = np.load(sys.argv[1]), pipeline(Switches.for_category("tile"))
np.save(sys.argv[2], np.stack([augment_image(transform, images[i], 5, 0, i) for i in (5, 3, 1)]))
"""


def test_augmentation_is_reproduced_in_another_process(tmp_path: Path) -> None:
    """A fresh interpreter (another run or a data-loader worker) augmenting a share of the images, in another order."""
    images = _images(6)
    reference = augment(images, Switches.for_category("tile"), seed=5, pass_index=0).permute(0, 2, 3, 1).numpy()
    np.save(tmp_path / "images.npy", images.permute(0, 2, 3, 1).numpy())
    command = [sys.executable, "-c", WORKER, str(tmp_path / "images.npy"), str(tmp_path / "out.npy")]
    subprocess.run(command, check=True, cwd=Path(__file__).parents[1], capture_output=True)
    assert np.array_equal(np.load(tmp_path / "out.npy"), reference[[5, 3, 1]])
