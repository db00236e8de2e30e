"""A small MVTec-AD-layout dataset drawn with OpenCV: the demo scale's stand-in for MVTec AD.

Each category is a texture or an object with natural variation (position, rotation, brightness, noise); defective
test images carry one drawn defect (a scratch, a hole or a stain) and a ground-truth mask, all written exactly as
MVTec AD lays them out, so :func:`common.datasets.mvtec.read_mvtec` reads them like the real thing::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/<good | scratch | hole | stain>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png

Category names are MVTec's (the reader only accepts those). Everything is a pure function of the arguments: image
``i`` of (category, split, folder) comes from ``numpy.random.default_rng([seed, category, split, folder, i])``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from common.files import FileLock, new_folder_mode

Drawer = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
DEFECTS = ("scratch", "hole", "stain")
MARKER = ".synthetic-mvtec.json"


# ------------------------------------------------------------------------------------------------ normal images
def _carpet(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Woven texture: blurred colour noise on a fine periodic weave; the whole image is the region."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 2.0)
    y, x = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = np.sin(x * 0.8 + phase[0]) * np.sin(y * 0.8 + phase[1])
    value = 0.55 + 0.08 * weave + 0.12 * noise + rng.uniform(-0.04, 0.04)
    tint = np.array([0.55, 0.45, 0.85]) * rng.uniform(0.95, 1.05, 3)
    return _to_uint8(value[..., None] * tint), np.ones((size, size), np.uint8)


def _grid(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey metal grid: dark lines with a jittered pitch and offset on a noisy light background."""
    image = np.full((size, size), 150 + rng.integers(-10, 10), np.float32)
    pitch, offset = rng.uniform(15, 17), rng.uniform(0, 16, 2)
    for k in range(-1, int(size / pitch) + 2):
        for axis in range(2):
            position = int(k * pitch + offset[axis])
            start, end = ((position, 0), (position, size)) if axis == 0 else ((0, position), (size, position))
            cv2.line(image, start, end, 60, 3)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return _to_uint8(np.repeat(image[..., None], 3, axis=2) / 255), np.ones((size, size), np.uint8)


def _wood(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Wood grain: wavy sinusoidal stripes with low-frequency distortion."""
    x = np.mgrid[0:size, 0:size][1].astype(np.float32)
    warp = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 12) * 60
    stripes = np.sin((x + warp + rng.uniform(0, 50)) * rng.uniform(0.18, 0.22))
    value = 0.5 + 0.12 * stripes + rng.normal(0, 0.02, (size, size))
    colour = np.array([0.35, 0.6, 0.8]) * rng.uniform(0.95, 1.05)  # BGR brown
    return _to_uint8(value[..., None] * colour / 0.6), np.ones((size, size), np.uint8)


def _bottle(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A bottle seen from above: concentric rings on a dark background, slightly shifted."""
    image = np.full((size, size, 3), 20, np.float32)
    centre = (size // 2 + int(rng.integers(-6, 7)), size // 2 + int(rng.integers(-6, 7)))
    radius = int(size * rng.uniform(0.36, 0.39))
    region = np.zeros((size, size), np.uint8)
    cv2.circle(region, centre, radius, 1, -1)
    for fraction, shade in ((1.0, 110), (0.8, 70), (0.55, 140), (0.3, 40)):
        cv2.circle(image, centre, int(radius * fraction), (shade * 0.8, shade, shade * 0.7), -1, cv2.LINE_AA)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return _to_uint8(image / 255), region


def _metal_nut(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A rotated hexagonal nut with a round hole on a light background."""
    image = np.full((size, size, 3), 200, np.float32)
    angle = rng.uniform(0, np.pi / 3)
    centre = np.array([size / 2, size / 2]) + rng.uniform(-5, 5, 2)
    radius = size * 0.33
    corners = [
        centre + radius * np.array([np.cos(angle + k * np.pi / 3), np.sin(angle + k * np.pi / 3)]) for k in range(6)
    ]
    region = np.zeros((size, size), np.uint8)
    polygon = np.round(np.array(corners)).astype(np.int32)
    cv2.fillPoly(region, [polygon], 1)
    cv2.fillPoly(image, [polygon], (90, 95, 100), cv2.LINE_AA)
    hole = (int(centre[0]), int(centre[1]))
    cv2.circle(image, hole, int(radius * 0.4), (200, 200, 200), -1, cv2.LINE_AA)
    cv2.circle(region, hole, int(radius * 0.4), 0, -1)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return _to_uint8(image / 255), region


CATEGORIES: dict[str, Drawer] = {
    "carpet": _carpet,
    "grid": _grid,
    "wood": _wood,
    "bottle": _bottle,
    "metal_nut": _metal_nut,
}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ defects
def _point_in(region: np.ndarray, rng: np.random.Generator, margin: int) -> tuple[int, int]:
    """A random pixel (x, y) of ``region`` at least ``margin`` pixels from the border."""
    inner = np.zeros_like(region)
    inner[margin:-margin, margin:-margin] = region[margin:-margin, margin:-margin]
    ys, xs = np.nonzero(inner)
    index = rng.integers(len(ys))
    return int(xs[index]), int(ys[index])


def add_defect(
    image: np.ndarray, region: np.ndarray, defect: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one ``defect`` ("scratch", "hole" or "stain") inside ``region``; returns the image and its 0/255 mask."""
    size = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    x, y = _point_in(region, rng, margin=size // 6)
    out = image.copy()
    if defect == "scratch":
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.08, 0.2) * size
        end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
        shift = rng.choice([-1, 1]) * rng.uniform(40, 70)
        colour = tuple(float(c) for c in np.clip(image[y, x].astype(float) + shift, 0, 255))
        cv2.line(out, (x, y), end, colour, 1, cv2.LINE_AA)
        cv2.line(mask, (x, y), end, 255, 2)
    elif defect == "hole":
        radius = int(rng.uniform(0.015, 0.035) * size)
        cv2.circle(out, (x, y), radius, (30, 30, 30), -1, cv2.LINE_AA)
        cv2.circle(mask, (x, y), radius + 1, 255, -1)
    elif defect == "stain":
        axes = (int(rng.uniform(0.04, 0.08) * size), int(rng.uniform(0.02, 0.05) * size))
        cv2.ellipse(mask, (x, y), axes, rng.uniform(0, 180), 0, 360, 255, -1)
        shade = 0.4 * cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 3)[..., None]
        colour = rng.uniform(0, 1, 3) * np.array([60.0, 120.0, 160.0])
        out = np.clip(out * (1 - shade) + shade * colour, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"defect: expected one of {', '.join(DEFECTS)}, got {defect!r}")
    return out, (mask * (region > 0)).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ writer
def write_synthetic_mvtec(
    root: str | Path,
    categories: Sequence[str] = tuple(CATEGORIES),
    n_train: int = 40,
    n_test_good: int = 12,
    n_test_defect: int = 6,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the dataset below ``root`` (skipped per category when the same arguments already wrote it).

    Each category is written into a temporary folder and then moved into place, so an interrupted run never
    leaves a half-written category.

    Args:
        root: the dataset folder (what :func:`read_mvtec` calls ``folder``).
        categories: names from :data:`CATEGORIES`.
        n_train: good training images per category.
        n_test_good: good test images per category.
        n_test_defect: test images per defect type and category.
        size: image side in pixels.
        seed: seed of every random choice.

    Returns:
        ``root``.
    """
    root = Path(root)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"categories: unknown {unknown}; known: {', '.join(CATEGORIES)}")
    if min(n_train, n_test_good, n_test_defect) < 1 or size < 64:
        raise ValueError("n_train, n_test_good and n_test_defect must be ≥ 1 and size ≥ 64")
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".lock"):  # processes sharing the data root write one category at a time
        for category in categories:
            settings = {
                "n_train": n_train,
                "n_test_good": n_test_good,
                "n_test_defect": n_test_defect,
                "size": size,
                "seed": seed,
                "category": category,
            }
            _write_if_changed(root / category, settings)
    return root


def _write_if_changed(target: Path, settings: dict) -> None:
    """(Re)write the category folder ``target`` unless its marker records the same settings."""
    if (target / MARKER).is_file() and json.loads((target / MARKER).read_text()) == settings:
        return
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{settings['category']}-"))
    os.chmod(staging, new_folder_mode())  # as any new folder (mkdtemp makes it 0700)
    _write_category(staging, settings["category"], settings)
    (staging / MARKER).write_text(json.dumps(settings))
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def _write_category(folder: Path, category: str, settings: dict) -> None:
    draw, size, seed = CATEGORIES[category], settings["size"], settings["seed"]
    category_id = list(CATEGORIES).index(category)

    def normal(split: int, kind: int, index: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        rng = np.random.default_rng([seed, category_id, split, kind, index])
        return (*draw(rng, size), rng)

    _save_all(folder / "train" / "good", [normal(0, 0, i)[0] for i in range(settings["n_train"])])
    _save_all(folder / "test" / "good", [normal(1, 0, i)[0] for i in range(settings["n_test_good"])])
    for kind, defect in enumerate(DEFECTS, start=1):
        pairs = [_defective(*normal(1, kind, i), defect) for i in range(settings["n_test_defect"])]
        _save_all(folder / "test" / defect, [image for image, _ in pairs])
        _save_all(folder / "ground_truth" / defect, [mask for _, mask in pairs], suffix="_mask")


def _defective(
    image: np.ndarray, region: np.ndarray, rng: np.random.Generator, defect: str
) -> tuple[np.ndarray, np.ndarray]:
    return add_defect(image, region, defect, rng)


def _save_all(folder: Path, images: list[np.ndarray], suffix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        if not cv2.imwrite(str(folder / f"{index:03d}{suffix}.png"), image):
            raise OSError(f"{folder / f'{index:03d}{suffix}.png'}: OpenCV could not write the image")
