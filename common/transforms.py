"""Image transforms applied to whole batches at once, on whichever device the batch lives on.

Every function takes a batch ``images`` of shape (N, C, H, W) and returns the transformed batch; none loops over
samples in Python. Random transforms take an explicit ``torch.Generator`` and draw their random numbers on the
generator's device, then move them to the images' device: with a CPU generator the draws, and so the crops, flips
and noise, are the same whether the batch is on the CPU or a GPU.

The augmentations are the ones the four papers use: random crop with padding and horizontal flip (MCHAD's
CIFAR training transform), resizing and centre crops (evaluation sets, MemAE, Gaussian AD), per-channel
normalisation, and InvGlow's uniform dequantization ``x = u/256 − 0.5 + U[0, 1/256)`` with bin centres
(``+ 1/512``) for the final, noise-free evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

PaddingMode = Literal["constant", "reflect"]
ResizeMode = Literal["nearest", "bilinear", "bicubic", "area"]

_N_LEVELS = 256  # 8-bit images: InvGlow's n_bits = 8, bin width 1/256 (reference invglow.md §2.2)


def _check_batch(images: torch.Tensor) -> tuple[int, int, int, int]:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (N, C, H, W), got {shape}")
    n, c, h, w = images.shape
    return n, c, h, w


def _check_uint8(images: torch.Tensor) -> None:
    _check_batch(images)
    if images.dtype != torch.uint8:
        raise ValueError(f"images: expected dtype torch.uint8, got {images.dtype}")


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"size: expected positive sizes, got {size}")
    return height, width


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """U[0, 1) numbers drawn on the generator's device, then moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _offsets(count: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` integers uniform in [0, count) drawn on the generator's device, then moved to ``device``."""
    return torch.randint(0, count, (n,), generator=generator, device=generator.device).to(device)


def _pad_for_crop(
    images: torch.Tensor, size: int | tuple[int, int], padding: int, padding_mode: PaddingMode
) -> tuple[torch.Tensor, int, int]:
    """Check the crop arguments and pad the batch once: (padded images, crop height, crop width)."""
    _, _, height, width = _check_batch(images)
    crop_height, crop_width = _size_pair(size)
    if padding < 0:
        raise ValueError(f"padding: expected >= 0, got {padding}")
    if padding_mode not in ("constant", "reflect"):
        raise ValueError(f"padding_mode: expected 'constant' or 'reflect', got {padding_mode!r}")
    if padding_mode == "reflect" and padding >= min(height, width):
        raise ValueError(f"padding: reflect padding must be smaller than the image ({height}×{width}), got {padding}")
    if crop_height > height + 2 * padding or crop_width > width + 2 * padding:
        raise ValueError(
            f"size: crop {crop_height}×{crop_width} exceeds the padded image "
            f"{height + 2 * padding}×{width + 2 * padding}"
        )
    padded = F.pad(images, (padding,) * 4, mode=padding_mode) if padding else images
    return padded, crop_height, crop_width


def _gather_crops(
    padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, crop_height: int, crop_width: int
) -> torch.Tensor:
    """Crop (top[i], left[i]) of every sample i at once, as one ``index_select`` of the crops' N·C·h pixel rows."""
    n, channels, height, width = padded.shape
    device = padded.device
    # Output row r of channel c of sample i starts at flat offset ((i·C + c)·H + top[i] + r)·W + left[i].
    planes = torch.arange(n * channels, device=device).view(n, channels, 1) * height
    rows = planes + top.view(n, 1, 1) + torch.arange(crop_height, device=device)
    starts = (rows * width + left.view(n, 1, 1)).flatten()
    every_row = padded.reshape(-1).unfold(0, crop_width, 1)  # every_row[s] = flat[s : s + w], a view
    return every_row.index_select(0, starts).view(n, channels, crop_height, crop_width)


def crop_at(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    size: int | tuple[int, int],
    padding: int = 0,
    padding_mode: PaddingMode = "constant",
) -> torch.Tensor:
    """Crop each sample at its own offset after padding the whole batch once.

    Sample ``i`` of the result is ``pad(images[i])[:, top[i] : top[i] + h, left[i] : left[i] + w]``. All crops are
    cut by one ``index_select`` of pixel rows, with no loop over samples. Checking the offsets' range
    synchronises with the device; :func:`random_crop` skips that check.

    Args:
        images: (N, C, H, W), any dtype.
        top: (N,) integer row offsets into the padded image, in ``[0, H + 2·padding − h]``.
        left: (N,) integer column offsets into the padded image, in ``[0, W + 2·padding − w]``.
        size: crop size ``h`` (square) or ``(h, w)``.
        padding: pixels added on every side before cropping.
        padding_mode: ``"constant"`` pads with zeros; ``"reflect"`` mirrors without repeating the edge pixel
            (needs ``padding < H`` and ``padding < W``).

    Returns:
        (N, C, h, w), same dtype and device as ``images``.
    """
    padded, crop_height, crop_width = _pad_for_crop(images, size, padding, padding_mode)
    n, _, height, width = padded.shape
    for name, offsets, count in (("top", top, height - crop_height + 1), ("left", left, width - crop_width + 1)):
        if offsets.shape != (n,) or offsets.is_floating_point():
            raise ValueError(f"{name}: expected {n} integer offsets, got {offsets.dtype} {tuple(offsets.shape)}")
        if n and (offsets.min() < 0 or offsets.max() >= count):
            raise ValueError(f"{name}: offsets must lie in [0, {count - 1}] for this crop and padding")
    return _gather_crops(padded, top.to(images.device), left.to(images.device), crop_height, crop_width)


def random_crop(
    images: torch.Tensor,
    size: int | tuple[int, int],
    padding: int = 0,
    padding_mode: PaddingMode = "constant",
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """Pad the batch, then cut one crop per sample at a uniformly random offset (torchvision ``RandomCrop``).

    Offsets are drawn on the generator's device, rows first: ``top = torch.randint(0, H + 2·padding − h + 1, (N,))``,
    then ``left = torch.randint(0, W + 2·padding − w + 1, (N,))``; the crop is then :func:`crop_at`'s.

    Args:
        images: (N, C, H, W), any dtype.
        size: crop size ``h`` (square) or ``(h, w)``.
        padding: pixels added on every side before cropping.
        padding_mode: ``"constant"`` (zeros) or ``"reflect"``.
        generator: source of the offsets.

    Returns:
        (N, C, h, w), same dtype and device as ``images``.
    """
    padded, crop_height, crop_width = _pad_for_crop(images, size, padding, padding_mode)
    n, _, height, width = padded.shape
    top = _offsets(height - crop_height + 1, n, generator, images.device)
    left = _offsets(width - crop_width + 1, n, generator, images.device)
    return _gather_crops(padded, top, left, crop_height, crop_width)


def random_horizontal_flip(images: torch.Tensor, p: float = 0.5, *, generator: torch.Generator) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``.

    Sample ``i`` is flipped iff ``torch.rand(N)[i] < p`` (drawn on the generator's device).

    Args:
        images: (N, C, H, W), any dtype.
        p: flip probability in [0, 1].
        generator: source of the flip decisions.

    Returns:
        (N, C, H, W), same dtype and device as ``images``.
    """
    n = _check_batch(images)[0]
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    flip = _uniform((n,), generator, images.device) < p
    # Stack the batch and its mirror image; sample i comes from row i or, when flipped, row n + i. Copying whole
    # samples this way is about twice as fast as torch.where with a per-sample mask.
    source = torch.arange(n, device=images.device) + n * flip
    return torch.cat((images, images.flip(-1))).index_select(0, source)


def resize(
    images: torch.Tensor,
    size: int | tuple[int, int],
    mode: ResizeMode = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize every sample to ``size`` with ``F.interpolate``.

    Uses ``align_corners=False`` (pixel centres at half-integers, as PIL, OpenCV and torchvision do) and, for
    bilinear and bicubic, ``antialias`` (a filter widened by the scale factor when shrinking, like PIL and
    torchvision's ``Resize``). Shrinking therefore matches ``cv2.INTER_AREA`` only approximately: antialiased
    bilinear weights the footprint with a triangle, INTER_AREA with a box; ``mode="area"`` is that box average and
    equals ``cv2.INTER_AREA`` for integer shrink factors. uint8 input is interpolated in float32, then rounded and
    clamped back to uint8.

    Args:
        images: (N, C, H, W), uint8 or floating.
        size: output ``h`` (square) or ``(h, w)``.
        mode: ``"nearest"``, ``"bilinear"``, ``"bicubic"`` or ``"area"``.
        antialias: low-pass filter when shrinking (bilinear and bicubic only; ignored otherwise).

    Returns:
        (N, C, h, w), same dtype and device as ``images``.
    """
    _check_batch(images)
    if mode not in ("nearest", "bilinear", "bicubic", "area"):
        raise ValueError(f"mode: expected 'nearest', 'bilinear', 'bicubic' or 'area', got {mode!r}")
    smooth = mode in ("bilinear", "bicubic")
    values = images.float() if images.dtype == torch.uint8 else images
    resized = F.interpolate(
        values,
        size=_size_pair(size),
        mode=mode,
        align_corners=False if smooth else None,
        antialias=antialias and smooth,
    )
    if images.dtype == torch.uint8:
        return resized.round_().clamp_(0, 255).to(torch.uint8)
    return resized


def center_crop(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Cut the central ``h × w`` window of every sample.

    The top offset is ``round((H − h) / 2)`` with Python's rounding, as torchvision's ``CenterCrop`` computes it
    (same for the left offset).

    Args:
        images: (N, C, H, W), any dtype.
        size: crop ``h`` (square) or ``(h, w)``; at most the image size.

    Returns:
        (N, C, h, w), a view of ``images``.
    """
    _, _, height, width = _check_batch(images)
    crop_height, crop_width = _size_pair(size)
    if crop_height > height or crop_width > width:
        raise ValueError(f"size: crop {crop_height}×{crop_width} exceeds the image {height}×{width}")
    top = round((height - crop_height) / 2)
    left = round((width - crop_width) / 2)
    return images[:, :, top : top + crop_height, left : left + crop_width]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels to float32 in [0, 1] (``u / 255``, as torchvision's ``ToTensor``).

    Args:
        images: (N, C, H, W) uint8.

    Returns:
        (N, C, H, W) float32.
    """
    _check_uint8(images)
    return images.float().div_(255)


def normalize(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], *, inplace: bool = False
) -> torch.Tensor:
    """Standardise each channel: ``(x − mean[c]) / std[c]``.

    Args:
        images: (N, C, H, W) floating.
        mean: C per-channel means.
        std: C positive per-channel standard deviations.
        inplace: overwrite ``images`` instead of allocating the result (for a batch nothing else holds, such as
            :func:`to_float`'s output inside a :class:`BatchPipeline`).

    Returns:
        (N, C, H, W), same dtype and device as ``images``.
    """
    channels = _check_batch(images)[1]
    if not images.is_floating_point():
        raise ValueError(f"images: expected a floating dtype (apply to_float first), got {images.dtype}")
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean, std: expected {channels} values each, got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise ValueError(f"std: expected positive values, got {tuple(std)}")
    mean_tensor = torch.tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
    std_tensor = torch.tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
    centred = images.sub_(mean_tensor) if inplace else images.sub(mean_tensor)
    return centred.div_(std_tensor)


def dequantize(images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """InvGlow's training input: ``u/256 − 0.5 + U[0, 1/256)``, uniform noise filling each pixel's bin.

    The result lies in [−0.5, 0.5] (0.5 itself only through float32 rounding of noise just below 1/256). The
    noise is not centred (InvGlow's ``UniNoise``): its mean is ``1/512``, so the expected value is the bin centre
    :func:`bin_centres` returns. Noise is drawn as ``torch.rand(images.shape)`` on the generator's device; a
    generator on the images' device avoids a copy.

    Args:
        images: (N, C, H, W) uint8.
        generator: source of the noise.

    Returns:
        (N, C, H, W) float32.
    """
    _check_uint8(images)
    noise = _uniform(tuple(images.shape), generator, images.device)
    return images.float().add_(noise).div_(_N_LEVELS).sub_(0.5)


def bin_centres(images: torch.Tensor) -> torch.Tensor:
    """InvGlow's noise-free evaluation input: the centre of each pixel's bin, ``u/256 − 0.5 + 1/512``.

    Args:
        images: (N, C, H, W) uint8.

    Returns:
        (N, C, H, W) float32 in (−0.5, 0.5).
    """
    _check_uint8(images)
    return images.float().add_(0.5).div_(_N_LEVELS).sub_(0.5)


class BatchPipeline:
    """Apply batch transforms in order; the ``transform`` of :class:`common.loaders.TensorBatchLoader`.

    Random steps bind their generator with ``functools.partial``; seed it alike on every rank (the loader transforms
    the whole global batch on every rank, each keeping its block, so each sample gets its one-process draws)::

        generator = torch.Generator().manual_seed(seed)
        train_transform = BatchPipeline([
            partial(random_crop, size=32, padding=4, generator=generator),
            partial(random_horizontal_flip, generator=generator),
            to_float,
            partial(normalize, mean=CIFAR10_MEAN, std=CIFAR10_STD, inplace=True),
        ])
    """

    def __init__(self, steps: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.steps = tuple(steps)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Run every step on ``images`` (N, C, H, W) and return the last step's output."""
        for step in self.steps:
            images = step(images)
        return images

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.steps)!r})"
