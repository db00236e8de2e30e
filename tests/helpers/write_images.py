"""Write small image datasets in their real on-disk layouts (OpenCV-encoded JPEG/PNG files).

Every writer takes ``root``, the data root the tests pass to ``common.datasets.load(..., root=root)``, writes below
``root/<dataset name>/`` exactly as the owners' archives unpack, and returns what it wrote. Images are given and
returned as uint8 RGB (H, W, 3) or grey (H, W) arrays; PNG is lossless, so a reader must give back the same values,
while JPEG (the real format of most of these sets) is lossy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Image folder of each ODIN set inside its archive, and the archive's file suffix.
ODIN_FOLDERS = {
    "lsun-crop": "LSUN/test",
    "lsun-resize": "LSUN_resize",
    "tinyimagenet-crop": "Imagenet/test",
    "tinyimagenet-resize": "Imagenet_resize",
    "isun": "iSUN/iSUN_patches",
}
ODIN_SUFFIXES = {"isun": ".jpeg"}  # the others are .jpg


def smooth_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``count`` smooth random RGB images (N, H, W, 3) uint8: 4×4 random colours upscaled bilinearly.

    Smooth images survive JPEG compression with errors of a few grey levels.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
    return np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in coarse])


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write RGB (H, W, 3) or grey (H, W) uint8 ``image`` to ``path`` (format from its suffix); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"OpenCV could not write {path}")
    return path


def write_garbage(path: Path) -> Path:
    """Write bytes that no image decoder accepts to ``path`` (an "unreadable image"); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image file\x00\x01\x02")
    return path


def write_image_folder(
    directory: Path, images: Sequence[np.ndarray], suffix: str = ".jpg", names: Sequence[str] | None = None
) -> list[Path]:
    """Write ``images`` into ``directory`` as ``<name><suffix>`` (default names ``00000``, ``00001``, ...)."""
    names = [f"{index:05d}" for index in range(len(images))] if names is None else names
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    return [write_image(directory / f"{name}{suffix}", image) for name, image in zip(names, images, strict=True)]


def write_odin_set(
    root: Path,
    name: str,
    images: Sequence[np.ndarray],
    suffix: str | None = None,
    names: Sequence[str] | None = None,
    nested: bool = False,
) -> list[Path]:
    """Write an ODIN OOD set (``lsun-crop``, ``lsun-resize``, ``tinyimagenet-crop``, ``tinyimagenet-resize``, ``isun``).

    Files go to ``root/<name>/<ODIN_FOLDERS[name]>/`` with the archive's suffix unless ``suffix`` is given;
    ``nested`` repeats the last folder once more (``LSUN_resize/LSUN_resize/``), as some copies unpack.
    """
    directory = root / name / ODIN_FOLDERS[name]
    if nested:
        directory = directory / directory.name
    return write_image_folder(directory, images, suffix or ODIN_SUFFIXES.get(name, ".jpg"), names)


def write_textures(root: Path, images_by_class: Mapping[str, Sequence[np.ndarray]], suffix: str = ".jpg") -> list[Path]:
    """Write DTD: ``root/textures/dtd/images/<class>/<class>_<index:04d><suffix>``; returns paths in writing order."""
    paths: list[Path] = []
    for texture_class, images in images_by_class.items():
        names = [f"{texture_class}_{index:04d}" for index in range(len(images))]
        paths += write_image_folder(root / "textures" / "dtd" / "images" / texture_class, images, suffix, names)
    return paths


def write_celeba(
    root: Path, images: Sequence[np.ndarray], partitions: Sequence[int], suffix: str = ".jpg"
) -> list[Path]:
    """Write aligned CelebA: ``img_align_celeba/000001<suffix>``, ... and ``list_eval_partition.txt``.

    ``partitions[i]`` is image i's split code (0 train, 1 valid, 2 test), written as ``<file name> <code>``.
    """
    folder = root / "celeba"
    names = [f"{index:06d}" for index in range(1, len(images) + 1)]
    paths = write_image_folder(folder / "img_align_celeba", images, suffix, names)
    lines = [f"{path.name} {code}\n" for path, code in zip(paths, partitions, strict=True)]
    (folder / "list_eval_partition.txt").write_text("".join(lines))
    return paths


@dataclass(frozen=True)
class MVTecImage:
    """One written MVTec AD image and what a reader must return for it.

    Attributes:
        path: the image file.
        image: uint8 RGB (H, W, 3) as read back (a grey file's value in all three channels).
        label: 0 good, 1 defective.
        defect_type: its folder name, "good" or the defect type.
        mask: uint8 (H, W), 1 on the defect (all 0 for good images; written as 0/255 PNG for defective ones).
    """

    path: Path
    image: np.ndarray
    label: int
    defect_type: str
    mask: np.ndarray


def write_mvtec_category(
    root: Path,
    category: str,
    train_good: int = 3,
    test_good: int = 2,
    defects: Mapping[str, int] | None = None,
    size: tuple[int, int] = (40, 48),
    grey: bool = False,
    seed: int = 0,
) -> dict[str, list[MVTecImage]]:
    """Write one MVTec AD category below ``root/mvtec/<category>/`` as PNG files.

    Good images are one smooth random pattern plus small pixel noise; a defective image is a good one with a
    rectangle of contrasting colour, which is its mask (``ground_truth/<defect>/<stem>_mask.png``).

    Args:
        root: the data root.
        category: folder name (any string; readers check it against the 15 categories).
        train_good: number of ``train/good`` images.
        test_good: number of ``test/good`` images.
        defects: number of test images per defect type (default ``{"crack": 2, "scratch": 1}``).
        size: (H, W) of every image.
        grey: write single-channel images (like grid, screw and zipper).
        seed: random seed.

    Returns:
        ``{"train": [...], "test": [...]}``, each in reader order (defect-type folder, then file name).
    """
    defects = {"crack": 2, "scratch": 1} if defects is None else defects
    rng = np.random.default_rng(seed)
    pattern = smooth_images(1, *size, seed=seed)[0].astype(np.int16)
    folder = root / "mvtec" / category
    counts = {("train", "good"): train_good, ("test", "good"): test_good}
    counts.update({("test", defect): count for defect, count in defects.items()})
    written: dict[str, list[MVTecImage]] = {"train": [], "test": []}
    for (split, defect_type), count in sorted(counts.items()):
        for index in range(count):
            noisy = np.clip(pattern + rng.integers(-6, 7, pattern.shape), 0, 255).astype(np.uint8)
            mask = np.zeros(size, dtype=np.uint8)
            if defect_type != "good":
                top, left = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
                mask[top : top + size[0] // 3, left : left + size[1] // 4] = 1
                noisy[mask == 1] = 255 - noisy[mask == 1]
                write_image(folder / "ground_truth" / defect_type / f"{index:03d}_mask.png", mask * 255)
            pixels = cv2.cvtColor(noisy, cv2.COLOR_RGB2GRAY) if grey else noisy
            path = write_image(folder / split / defect_type / f"{index:03d}.png", pixels)
            rgb = np.repeat(pixels[:, :, None], 3, axis=2) if grey else pixels
            written[split].append(MVTecImage(path, rgb, int(defect_type != "good"), defect_type, mask))
    return written
