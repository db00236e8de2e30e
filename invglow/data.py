"""Image sets of the InvGlow experiments (Schirrmeister et al., NeurIPS 2020), as uint8 (N, C, S, S) tensors at the
model's resolution.

Paper scale: 80M Tiny Images subset (``python invglow/create_tiny.py [--exclude-cifar]``), CIFAR-10/100, SVHN, LSUN,
CelebA, TinyImageNet through ``common.datasets``. Demo scale: everything is generated on the spot. A small binary in
the real Tiny Images format (3072-byte column-major records) is written into the folder of the pretraining cell and
cut by ``common.tiny_builder`` (the library behind ``invglow/create_tiny.py``) exactly as the real one;
in-distribution sets are procedurally drawn shapes (the CIFAR-10 stand-in) and coloured scikit-learn digits (the
SVHN stand-in); noise sets are extra OOD sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch

import folder_locations
from common.datasets import ImageSet, dataset_folder, load
from common.datasets.svhn import split_file
from common.datasets.tiny_images import BINARY_NAME, IMAGE_BYTES, SUBSET_NAME, read_tiny_subset, subset_files
from common.preflight import DataNeed, DatasetNeed
from common.smoke import evaluation_subset
from common.tiny_builder import CHUNK_SIZE, EXCLUDE_CIFAR_NAME, build_tiny_subset
from common.transforms import resize
from invglow.config import InvGlowConfig

TINY_TRAIN_FRACTION = 0.8  # first 80 % of the shuffled chunks train, the rest test (original datasets.py)
CONVERT_BATCH = 8192
"""Images :func:`to_size` converts at once: about 0.2 GB of float32 working memory for 3×32×32 images. Converting
the whole 1.56M-image Tiny subset at once took about 41 GB (RGB → grey) or two uint8 copies of it (RGB)."""
_GENERATED = ("shapes", "digits-rgb", "uniform-noise", "gaussian-noise")
_TEST_ONLY = ("lsun", "lsun-resize", "tinyimagenet", "tinyimagenet-resize", "celeba")  # evaluated on "test" only
DEMO_TINY_FOLDER = "data"
"""Sub-folder of a demo pretraining cell's folder that holds its generated Tiny binary and subset."""


def to_size(images: torch.Tensor, size: int, channels: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images at ``size × size`` with ``channels`` channels (grey → RGB by repetition, RGB → grey by luma).

    Resizing is bilinear with antialiasing (the original: torchvision Resize, bilinear). Only ``images[rows]`` are
    converted when ``rows`` is given. Images are converted :data:`CONVERT_BATCH` at a time into one contiguous
    tensor: the working memory stays at one batch whatever the number of images, and a memory-mapped source (the
    1.56M-image Tiny subset) is read once, without an intermediate copy.

    Raises:
        ValueError: ``images`` or ``channels`` is neither 1 (grey) nor 3 (RGB) channels.
    """
    if images.shape[1] not in (1, 3) or channels not in (1, 3):
        raise ValueError(f"images: expected 1 or 3 channels converted to 1 or 3, got {images.shape[1]} → {channels}")
    rows = torch.arange(len(images)) if rows is None else rows
    converted = torch.empty((len(rows), channels, size, size), dtype=images.dtype)
    for start in range(0, len(rows), CONVERT_BATCH):
        batch = rows[start : start + CONVERT_BATCH]
        converted[start : start + len(batch)] = _convert(images[batch], size, channels)
    return converted


def _convert(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.2989, 0.5870, 0.1140])[None, :, None, None]  # the original's grey Tiny weights
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if images.shape[-1] != size or images.shape[-2] != size:
        images = resize(images, size)
    return images


def colour_digits(split: str, n: int, seed: int) -> ImageSet:
    """scikit-learn digits at 32×32, each drawn in a random colour on a random background: (n, 3, 32, 32) uint8
    images and their digit labels."""
    digits = load("digits", split, size=32)
    grey = digits.images[:n].float() / 255
    rng = np.random.default_rng([seed, 7])
    background = torch.from_numpy(rng.integers(0, 256, (len(grey), 3, 1, 1))).float()
    offset = torch.from_numpy(rng.choice([-1, 1], (len(grey), 3, 1, 1)) * rng.integers(96, 160, (len(grey), 3, 1, 1)))
    foreground = (background + offset).clamp(0, 255)
    images = (background + (foreground - background) * grey).round().to(torch.uint8)
    return ImageSet(images, digits.labels[:n])


def smooth_noise(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 32, 32) uint8 low-frequency random images (4×4 uniform noise upsampled bilinearly)."""
    rng = np.random.default_rng([seed, 11])
    coarse = torch.from_numpy(rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8))
    return resize(coarse, 32)


def generated_set(name: str, split: str, n: int, seed: int) -> ImageSet:
    """One demo set at 32×32 RGB: ``shapes``, ``digits-rgb`` (labels 0..9), ``uniform-noise`` or ``gaussian-noise``
    (labels −1)."""
    stream = seed * 2 + (split == "test")
    if name == "shapes":
        return load("shapes", split, n=n, size=32, seed=seed)
    if name == "digits-rgb":
        return colour_digits(split, n, stream)
    if name in ("uniform-noise", "gaussian-noise"):
        return load(name, "test", n=n, seed=stream + 100)
    raise KeyError(f"unknown generated set {name!r}; generated sets: {', '.join(_GENERATED)}")


def write_demo_tiny_binary(path: Path, n_images: int, seed: int) -> Path:
    """A Tiny Images-format binary of ``n_images`` generated 32×32 images (a third each shapes, coloured digits,
    smooth noise, in random order), each record the column-major (32, 32, 3) array as in ``tiny_images.bin``."""
    third = n_images // 3
    shapes = load("shapes", "train", n=third, size=32, seed=seed + 1000).images
    digits = colour_digits("train", third, seed + 1000).images  # at most the 1,347 training digits
    images = torch.cat([shapes, digits, smooth_noise(n_images - len(shapes) - len(digits), seed)])
    images = images[torch.from_numpy(np.random.default_rng(seed).permutation(n_images))]
    hwc = images.permute(0, 2, 3, 1).numpy()
    temporary = path.with_suffix(".partial")
    with open(temporary, "wb") as handle:
        for image in hwc:
            handle.write(image.tobytes(order="F"))
    temporary.replace(path)
    return path


def demo_tiny_chunks(n_images: int) -> int:
    """Chunks of :data:`CHUNK_SIZE` images cut from a demo binary of ``n_images``: every chunk start but the last,
    as the original."""
    return -(-n_images // CHUNK_SIZE) - 1


def tiny_train_chunks(n_chunks: int) -> int:
    """Chunks of a Tiny subset of ``n_chunks`` chunks that train: the first 80 % (the rest test)."""
    return round(n_chunks * TINY_TRAIN_FRACTION)


def build_demo_tiny(folder: Path, n_images: int, seed: int) -> Path:
    """Write the demo binary into ``folder`` (if absent) and cut it as ``create_tiny.py`` cuts the real one;
    returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / BINARY_NAME
    if not binary.is_file() or binary.stat().st_size != n_images * IMAGE_BYTES:
        write_demo_tiny_binary(binary, n_images, seed)
    n_chunks = demo_tiny_chunks(n_images)
    build_tiny_subset(binary, folder, name=SUBSET_NAME, n_chunks=n_chunks, expected_images=None, progress=False)
    return folder


def prepare_tiny(config: InvGlowConfig, folder: Path, seed: int) -> None:
    """Demo scale: generate the Tiny subset a pretraining cell trains on into its ``folder`` (nothing to do at the
    paper scale, whose subset ``create_tiny.py`` wrote once). Under several processes (a data-parallel
    pretraining) rank 0 writes it while the others wait."""
    if config.scale != "demo":
        return
    if idist.get_rank() == 0:
        build_demo_tiny(folder / DEMO_TINY_FOLDER / "tiny-images", config.data.demo_tiny_images, seed)
    if idist.get_world_size() > 1:
        idist.barrier()


def tiny_split_rows(n_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (train, test) of a chunked Tiny subset of ``n_images``: chunks of :data:`CHUNK_SIZE` rows
    shuffled by ``seed``, the first 80 % train (by chunk)."""
    n_chunks = n_images // CHUNK_SIZE
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n_chunks))
    n_train = tiny_train_chunks(n_chunks)
    rows = (order[:, None] * CHUNK_SIZE + torch.arange(CHUNK_SIZE)).flatten()
    return rows[: n_train * CHUNK_SIZE], rows[n_train * CHUNK_SIZE :]


def tiny_images(config: InvGlowConfig, folder: Path, seed: int, split: str) -> torch.Tensor:
    """The ``"train"`` or ``"test"`` uint8 Tiny images at the model's size and channels (:func:`tiny_split_rows`),
    read from the memory-mapped subset of ``folder_locations.tiny_images_root()`` (demo: the one
    :func:`prepare_tiny` wrote into the pretraining cell's ``folder``): ``tiny_subset``, or
    ``tiny_subset_exclude_cifar`` with ``config.exclude_cifar_from_tiny``. Only that split's rows are converted."""
    root = folder / DEMO_TINY_FOLDER if config.scale == "demo" else None
    name = EXCLUDE_CIFAR_NAME if config.exclude_cifar_from_tiny else SUBSET_NAME
    subset = read_tiny_subset(dataset_folder("tiny-images-subset", root), "train", name=name)
    rows = dict(zip(("train", "test"), tiny_split_rows(len(subset.images), seed), strict=True))
    return to_size(subset.images, config.glow.image_size, config.glow.channels, rows[split])


def source_split(name: str, split: str) -> str:
    """The ``common.datasets`` split that ``split`` of set ``name`` is read from (``"test"`` for test-only sets)."""
    return "test" if name in _TEST_ONLY else split


def image_set(name: str, split: str, config: InvGlowConfig, seed: int) -> ImageSet:
    """Set ``name``: uint8 images at the model's size and channels, and labels (−1 for OOD-only sets).

    Sets are kept in memory once read (per data root), so the cells of one process read each file once.
    """
    root = None if config.scale == "demo" else folder_locations.data_root()
    return _image_set(name, split, config, seed, root)


@lru_cache(maxsize=32)
def _image_set(name: str, split: str, config: InvGlowConfig, seed: int, root: Path | None) -> ImageSet:
    if root is None:
        n = config.data.demo_train if split == "train" else config.data.demo_test
        images, labels = generated_set(name, split, n, seed)
    else:
        images, labels = load(name, source_split(name, split), root=root)
    return ImageSet(to_size(images, config.glow.image_size, config.glow.channels), labels)


@dataclass(frozen=True)
class EvalSets:
    """Images (uint8) of the in-distribution test set (id 0) and the OOD sets (ids 1, ...), concatenated."""

    names: tuple[str, ...]
    images: torch.Tensor
    set_ids: torch.Tensor


def eval_sets(in_name: str, in_images: torch.Tensor, ood: dict[str, torch.Tensor], batch_size: int) -> EvalSets:
    """Concatenate ``in_images`` (id 0) with every OOD set except ``in_name`` itself; in a smoke run, two evaluation
    batches (of ``batch_size``) of each (``common.smoke``)."""
    others = {name: images for name, images in ood.items() if name != in_name}
    names = (in_name, *others)
    parts = [part[evaluation_subset(len(part), batch_size)] for part in (in_images, *others.values())]
    ids = torch.cat([torch.full((len(part),), index, dtype=torch.int64) for index, part in enumerate(parts)])
    return EvalSets(names, torch.cat(parts), ids)


def ood_test_sets(config: InvGlowConfig, seed: int) -> dict[str, torch.Tensor]:
    """The test images (uint8) of every OOD set of ``config``, by name."""
    return {name: image_set(name, "test", config, seed).images for name in config.data.ood}


def evaluation_sets(in_name: str, config: InvGlowConfig, seed: int, batch_size: int) -> EvalSets:
    """The test set of ``in_name`` (id 0) and every other OOD set of ``config`` (see :func:`eval_sets`)."""
    in_images = image_set(in_name, "test", config, seed).images
    return eval_sets(in_name, in_images, ood_test_sets(config, seed), batch_size)


def read_every_set(config: InvGlowConfig, seed: int) -> None:
    """Read every in-distribution training and test set and every OOD test set of ``config``: a missing file
    stops a run before the days of training that come before the set is used."""
    for name in config.data.in_distribution:
        image_set(name, "train", config, seed)
        image_set(name, "test", config, seed)
    ood_test_sets(config, seed)


def set_needs(config: InvGlowConfig) -> list[DataNeed]:
    """The dataset files :func:`read_every_set` reads at the paper scale (of SVHN, the files of the splits it
    reads); none at the demo scale, whose sets are generated."""
    if config.scale == "demo":
        return []
    needs: list[DataNeed] = []
    for name in dict.fromkeys((*config.data.in_distribution, *config.data.ood)):
        splits = ("train", "test") if name in config.data.in_distribution else ("test",)
        needs.append(DatasetNeed(name, tuple(map(split_file, splits)) if name == "svhn" else ()))
    return needs


def tiny_needs(config: InvGlowConfig) -> list[DataNeed]:
    """The files of the Tiny subset :func:`tiny_images` reads at the paper scale; none at the demo scale."""
    if config.scale == "demo":
        return []
    files = subset_files(Path(), EXCLUDE_CIFAR_NAME if config.exclude_cifar_from_tiny else SUBSET_NAME)
    return [DatasetNeed("tiny-images-subset", (str(files.images), str(files.manifest)))]
