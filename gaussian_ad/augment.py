"""Training-image augmentation of the original code's ``--augment`` (note §1.10), with albumentations.

:func:`pipeline` rebuilds the original's ``detection_aug`` (albumentations 0.4.3 and imgaug 0.2.6) with
albumentations 2.0.8, transform by transform, with its probabilities, ranges and per-category switches (read from
the original; no code taken). Half of the images are left untouched; the others go through

- one of MotionBlur (blur_limit 3–7), MedianBlur(3), Blur(3) with p .2 (weights .2 : .1 : .1, i.e. .1 / .05 / .05);
- one of CLAHE (clip 1–2), sharpen, emboss, RandomBrightnessContrast (brightness −0.1..+0.2 of 255, contrast ±0.2)
  with p .3 (.075 each);
- HueSaturationValue (hue ±10, saturation ±30, value −10..+20, OpenCV uint8 units) with p .3;
- if ``noise``: Gaussian noise σ = 1–3 % of 255, the same for the three channels or per channel (.5 : .5), p .2;
- HorizontalFlip p .5 if ``flip``; RandomRotate90 p .5 (a multiple of 90° drawn from 0–270°) if ``rotate90``;
- shift ±5 %, scale 0.95–1.1, rotation ±15° (±45° if ``rotate45``), bilinear, reflect-101 borders, p .2; without a
  free ``background_edge`` (grid) only the scale 0.95–1.0.

Renamed or re-parameterised since 0.4.3 (the mapping keeps the original's distribution):

- ``IAASharpen()`` / ``IAAEmboss()`` (imgaug) → ``Sharpen`` / ``Emboss`` with imgaug's defaults and 3×3 kernels;
- ``IAAAdditiveGaussianNoise(scale=(0.01·255, 0.03·255), per_channel)`` → ``GaussNoise(std_range=(0.01, 0.03),
  per_channel)``: σ as a fraction of 255 (imgaug truncated the noise to integers, 2.0.8 does not);
- ``ShiftScaleRotate`` → ``Affine(translate_percent, scale=1 + scale_limit, rotate, keep_ratio=True)`` with the
  old border mode written out (2.0.8's ``ShiftScaleRotate`` is a deprecated ``Affine`` with independent x and y
  scales and constant borders); ``Affine`` truncates the shift to whole pixels;
- ``RandomRotate90``'s default p became 1 (set to the old .5); the nested ``Compose(p=1)`` is ``Sequential``;
- ``MotionBlur`` draws its line by angle (0–360°), direction and shift instead of between two random kernel cells.

Deviation: 2.0.8's HueSaturationValue leaves grey pixels (S = 0) grey; 0.4.3's saturation shift gave them a faint
red tint (hue 0 ± 10), most visible on the grey categories (grid, screw, zipper).

Randomness: one (numpy, Python) generator pair per (seed, pass, image) (:func:`random_state`) drives the whole
pipeline for that image, so an augmented image does not depend on the order, batching or worker that computes it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

if TYPE_CHECKING:
    import albumentations as A

NO_FLIP = frozenset({"metal_nut", "pill", "capsule", "screw"})
NO_ROTATE90 = frozenset({"transistor"})
ROTATE45 = frozenset({"carpet", "grid", "hazelnut", "leather", "tile"})
NO_BACKGROUND_EDGE = frozenset({"grid"})


@dataclass(frozen=True)
class Switches:
    """Per-category augmentation switches of the original code (MVTecAD.augmentation_info)."""

    flip: bool = True
    rotate90: bool = True
    rotate45: bool = False
    background_edge: bool = True
    noise: bool = True

    @classmethod
    def for_category(cls, category: str) -> Switches:
        """The switches of an MVTec AD category (noise for all of them)."""
        return cls(
            flip=category not in NO_FLIP,
            rotate90=category not in NO_ROTATE90,
            rotate45=category in ROTATE45,
            background_edge=category not in NO_BACKGROUND_EDGE,
        )


def albumentations() -> ModuleType:
    """The albumentations module, imported on first use (~2 s; only augmented runs need it) without the PyPI
    version check its import makes otherwise."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def pipeline(switches: Switches) -> A.Compose:
    """The original's ``detection_aug(p=0.5, **switches)`` in albumentations 2.0.8 (module docstring)."""
    A = albumentations()
    pixel = [
        A.OneOf(
            [A.MotionBlur(blur_limit=(3, 7), p=0.2), A.MedianBlur(blur_limit=3, p=0.1), A.Blur(blur_limit=3, p=0.1)],
            p=0.2,
        ),
        A.OneOf(
            [
                A.CLAHE(clip_limit=(1, 2)),
                A.Sharpen(alpha=(0.2, 0.5), lightness=(0.5, 1.0)),
                A.Emboss(alpha=(0.2, 0.5), strength=(0.2, 0.7)),
                A.RandomBrightnessContrast(brightness_limit=(-0.1, 0.2), contrast_limit=(-0.2, 0.2)),
            ],
            p=0.3,
        ),
        A.HueSaturationValue(hue_shift_limit=(-10, 10), sat_shift_limit=(-30, 30), val_shift_limit=(-10, 20), p=0.3),
    ]
    if switches.noise:
        noise = [A.GaussNoise(std_range=(0.01, 0.03), per_channel=channels) for channels in (False, True)]
        pixel.append(A.OneOf(noise, p=0.2))
    geometric = [A.HorizontalFlip(p=0.5)] if switches.flip else []
    if switches.rotate90:
        geometric.append(A.RandomRotate90(p=0.5))
    shift, degrees = (0.05, 45 if switches.rotate45 else 15) if switches.background_edge else (0.0, 0)
    geometric.append(
        A.Affine(
            scale=(0.95, 1.1 if switches.background_edge else 1.0),
            translate_percent=(-shift, shift),
            rotate=(-degrees, degrees),
            keep_ratio=True,
            interpolation=cv2.INTER_LINEAR,
            border_mode=cv2.BORDER_REFLECT_101,
            p=0.2,
        )
    )
    return A.Compose([A.Sequential(pixel, p=1.0), *geometric], p=0.5)


def random_state(seed: int, pass_index: int, image_index: int) -> tuple[np.random.Generator, random.Random]:
    """The (numpy, Python) generators of one augmented image, derived from (seed, pass, image) alone."""
    numpy_sequence, python_sequence = np.random.SeedSequence((seed, pass_index, image_index)).spawn(2)
    return np.random.default_rng(numpy_sequence), random.Random(int(python_sequence.generate_state(1, np.uint64)[0]))


def augment_image(transform: A.Compose, image: np.ndarray, seed: int, pass_index: int, image_index: int) -> np.ndarray:
    """``transform`` applied to one uint8 (H, W, 3) image with the generators of (seed, pass, image)."""
    transform.set_random_state(*random_state(seed, pass_index, image_index))
    return transform(image=image)["image"]


def augment(images: torch.Tensor, switches: Switches, seed: int, pass_index: int) -> torch.Tensor:
    """One augmentation pass over uint8 images (N, 3, H, W): image i drawn from (seed, ``pass_index``, i)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images: expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    transform = pipeline(switches)
    hwc = images.permute(0, 2, 3, 1).numpy()
    out = [augment_image(transform, np.ascontiguousarray(image), seed, pass_index, i) for i, image in enumerate(hwc)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
