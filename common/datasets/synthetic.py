"""Data sets that exist on any machine: scikit-learn's digits, noise images and procedurally drawn shapes.

They back the ``demo`` scale. ``folder`` is ignored (nothing is read from disk). Every set is a pure function of its
arguments, so the same seed gives the same images: the digits split is seeded, the noise sets (test only) draw from
``numpy.random.default_rng(seed)``, and the shapes' train and test splits come from different random streams
(``default_rng([seed, 0])`` for train, ``[seed, 1]`` for test).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from common.datasets import ImageSet
from common.datasets.image_folders import check_positive, ood_labels, resize

SPLIT_STREAMS = {"train": 0, "test": 1}
DIGITS_MAX = 16  # scikit-learn's digits are 8×8 counts 0..16 (4×4 blocks of a 32×32 bitmap)
NOISE_COUNT = 10_000  # MCHAD's uniform and Gaussian noise test sets (mchad.md §2.2)
GAUSSIAN_MEAN, GAUSSIAN_STD = 128.0, 128.0  # N(128, 128²) per pixel, clipped to [0, 255] (pytorch-ood GaussianNoise)
SHAPE_CLASSES = (
    "disc",
    "ring",
    "square",
    "square outline",
    "triangle",
    "triangle outline",
    "line",
    "ellipse",
    "cross",
    "star",
)
SHAPE_COUNTS = {"train": 5000, "test": 1000}
MIN_CONTRAST = 96  # a shape's colour differs from the background by at least this much in some channel
BACKGROUND_NOISE_STD = 8.0


def _split_rng(split: str, seed: int) -> np.random.Generator:
    if split not in SPLIT_STREAMS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_STREAMS)}")
    return np.random.default_rng([seed, SPLIT_STREAMS[split]])


def _nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) → contiguous torch uint8 (N, C, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------------------------- digits
def read_digits(
    folder: Path, split: str, seed: int = 0, test_fraction: float = 0.25, size: int | None = None
) -> ImageSet:
    """scikit-learn's 1,797 hand-written digits as uint8 grey images (N, 1, 8, 8) and labels 0..9.

    Pixel counts v ∈ 0..16 become ``floor(v · 255 / 16 + 0.5)`` (0 → 0, 16 → 255). The split is
    ``sklearn.model_selection.train_test_split(indices, test_size=test_fraction, stratify=labels,
    random_state=seed)``, each part kept in the original order, so it is stratified and the same for a given seed.

    Args:
        folder: ignored (the data ship with scikit-learn).
        split: ``"train"`` or ``"test"``.
        seed: seed of the train/test split.
        test_fraction: share of each class in the test split, in (0, 1).
        size: upscale to ``size × size`` with bilinear interpolation (e.g. 16 or 32 for small CNNs).
    """
    if split not in SPLIT_STREAMS:
        raise ValueError(f"digits has no split {split!r}; splits: {', '.join(SPLIT_STREAMS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    check_positive(size=size)
    digits = load_digits()
    train, test = train_test_split(
        np.arange(len(digits.target)), test_size=test_fraction, stratify=digits.target, random_state=seed
    )
    indices = np.sort(train if split == "train" else test)
    images = np.floor(digits.images[indices] * (255 / DIGITS_MAX) + 0.5).astype(np.uint8)
    if size is not None:
        images = np.stack([resize(image, size, size, cv2.INTER_LINEAR) for image in images])
    return ImageSet(_nchw(images[..., None]), torch.from_numpy(digits.target[indices].astype(np.int64)))


# ----------------------------------------------------------------------------------------------- noise
def read_uniform_noise(
    folder: Path, split: str, n: int = NOISE_COUNT, size: int = 32, channels: int = 3, seed: int = 0
) -> ImageSet:
    """``n`` images of i.i.d. uniform noise, ``uint8(U[0, 255))`` per pixel (so 0..254), labels -1.

    This is pytorch-ood's ``UniformNoise`` as MCHAD uses it (``generator.uniform(0, 255, (H, W, C))`` cast to
    uint8), drawn image after image from ``numpy.random.default_rng(seed)``. The original redraws on every
    access; here the set is fixed by ``seed`` and equals the original's first pass with that seed.
    """
    check_positive(n=n, size=size, channels=channels)
    noise = np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, channels))
    return ImageSet(_nchw(noise.astype(np.uint8)), ood_labels(n))


def read_gaussian_noise(
    folder: Path, split: str, n: int = NOISE_COUNT, size: int = 32, channels: int = 3, seed: int = 0
) -> ImageSet:
    """``n`` images of i.i.d. Gaussian noise N(128, 128²) clipped to [0, 255] and cast to uint8, labels -1.

    This is pytorch-ood's ``GaussianNoise`` (loc 128, scale 128) as MCHAD uses it, drawn image after image from
    ``numpy.random.default_rng(seed)``; fixed by ``seed`` instead of redrawn on every access.
    """
    check_positive(n=n, size=size, channels=channels)
    noise = np.random.default_rng(seed).normal(GAUSSIAN_MEAN, GAUSSIAN_STD, size=(n, size, size, channels))
    return ImageSet(_nchw(np.clip(noise, 0, 255).astype(np.uint8)), ood_labels(n))


# ----------------------------------------------------------------------------------------------- shapes
def read_shapes(
    folder: Path, split: str, n: int | None = None, size: int = 32, channels: int = 3, seed: int = 0
) -> ImageSet:
    """``n`` images of one of 10 shapes drawn with OpenCV, labels 0..9 (:data:`SHAPE_CLASSES`), balanced.

    Each image has a random uniform background colour, one shape of a contrasting random colour at a random
    position, size and rotation (anti-aliased), and mild Gaussian pixel noise (std 8). Labels are ``arange(n) % 10``
    shuffled. Train and test come from different random streams of ``seed``.

    Args:
        folder: ignored (the images are generated).
        split: ``"train"`` or ``"test"``.
        n: number of images; default 5,000 for train and 1,000 for test.
        size: image side in pixels (at least 8).
        channels: 3 (colour) or 1 (grey).
        seed: random seed.
    """
    rng = _split_rng(split, seed)
    count = SHAPE_COUNTS[split] if n is None else n
    check_positive(n=count, size=size)
    if size < 8 or channels not in (1, 3):
        raise ValueError(f"shapes need size >= 8 and channels 1 or 3, got size {size}, channels {channels}")
    labels = rng.permutation(np.arange(count) % len(SHAPE_CLASSES))
    shapes = np.stack([_draw_shape(int(label), size, channels, rng) for label in labels])
    noisy = rng.standard_normal(shapes.shape, dtype=np.float32) * np.float32(BACKGROUND_NOISE_STD) + shapes
    images = np.clip(np.rint(noisy, out=noisy), 0, 255, out=noisy).astype(np.uint8)
    return ImageSet(_nchw(images), torch.from_numpy(labels.astype(np.int64)))


def _draw_shape(label: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, channels) uint8 image of shape class ``label`` on a uniform background."""
    background = rng.integers(0, 256, channels)
    colour = rng.integers(0, 256, channels)
    while np.abs(colour - background).max() < MIN_CONTRAST:
        colour = rng.integers(0, 256, channels)
    radius = rng.uniform(0.22, 0.4) * size
    centre = rng.uniform(radius, size - radius, 2)
    angle = rng.uniform(0, 2 * np.pi)
    canvas = np.empty((size, size, channels), dtype=np.uint8)
    canvas[:] = background
    _draw(SHAPE_CLASSES[label], canvas, centre, radius, angle, tuple(int(value) for value in colour))
    return canvas


def _draw(
    name: str, canvas: np.ndarray, centre: np.ndarray, radius: float, angle: float, colour: tuple[int, ...]
) -> None:
    """Draw shape ``name`` (one of :data:`SHAPE_CLASSES`) of circumradius ``radius`` rotated by ``angle``."""
    thickness = max(1, round(radius / 8))
    line_type = cv2.LINE_AA
    direction = radius * np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    if name in ("disc", "ring"):
        filled = name == "disc"
        circle_radius = round(radius if filled else radius - thickness / 2)
        cv2.circle(canvas, _xy(centre), circle_radius, colour, cv2.FILLED if filled else thickness, line_type)
    elif name == "ellipse":
        axes = (round(radius), round(radius / 2.5))
        cv2.ellipse(canvas, _xy(centre), axes, np.degrees(angle), 0, 360, colour, cv2.FILLED, line_type)
    elif name == "line":
        cv2.line(canvas, _xy(centre - direction), _xy(centre + direction), colour, thickness, line_type)
    elif name == "cross":
        for arm in (direction, normal):
            cv2.line(canvas, _xy(centre - arm), _xy(centre + arm), colour, thickness, line_type)
    else:
        corners = {"square": [radius] * 4, "triangle": [radius] * 3, "star": [radius, 0.45 * radius] * 5}
        radii = corners[name.removesuffix(" outline")]
        angles = angle + 2 * np.pi * np.arange(len(radii)) / len(radii)
        offsets = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.asarray(radii)[:, None]
        points = [np.rint(centre + offsets).astype(np.int32)]
        if name.endswith(" outline"):
            cv2.polylines(canvas, points, True, colour, thickness, line_type)
        else:
            cv2.fillPoly(canvas, points, colour, line_type)


def _xy(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))
