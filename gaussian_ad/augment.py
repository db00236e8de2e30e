"""Training-image augmentation of the original code's ``--augment`` (note §1.10), approximated with torch ops.

Approximation (labelled as such in every table): albumentations 0.4.3 / imgaug ops are replaced by batch torch
equivalents with the same probabilities and ranges where they exist — half of the images are left untouched; of
the others: blur (3×3 box) p .2; brightness −0.1..+0.2 / contrast ±0.2 p .3; saturation ±10 % p .3 (for
HueSaturationValue); Gaussian noise σ 0.01–0.03 (×255) p .2; horizontal flip p .5 and rot90 p .5 where the
category allows them; shift ±5 %, scale −5..+10 %, rotation ±15° (±45° for the "rotate45" categories) p .2, or no
shift/scale/rotation for categories without a free background edge. CLAHE, sharpen, emboss, median and motion
blur and the hue shift are not reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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

    @classmethod
    def for_category(cls, category: str) -> Switches:
        """The switches of an MVTec AD category."""
        return cls(
            flip=category not in NO_FLIP,
            rotate90=category not in NO_ROTATE90,
            rotate45=category in ROTATE45,
            background_edge=category not in NO_BACKGROUND_EDGE,
        )


def _chosen(count: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(count, generator=generator) < p


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _pixel_ops(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, brightness/contrast, saturation and noise on float images in [0, 1] (N, 3, H, W)."""
    n = x.shape[0]
    blur = _chosen(n, 0.2, generator)
    if blur.any():
        x[blur] = F.avg_pool2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    tone = _chosen(n, 0.3, generator)[:, None, None, None]
    brightness = _uniform(n, -0.1, 0.2, generator)[:, None, None, None]
    contrast = _uniform(n, 0.8, 1.2, generator)[:, None, None, None]
    x = torch.where(tone, x * contrast + brightness, x)
    saturate = _chosen(n, 0.3, generator)[:, None, None, None]
    grey = x.mean(dim=1, keepdim=True)
    x = torch.where(saturate, grey + (x - grey) * _uniform(n, 0.9, 1.1, generator)[:, None, None, None], x)
    noisy = _chosen(n, 0.2, generator)[:, None, None, None]
    sigma = _uniform(n, 0.01, 0.03, generator)[:, None, None, None]
    return torch.where(noisy, x + sigma * torch.randn(x.shape, generator=generator), x)


def _geometric_ops(x: torch.Tensor, switches: Switches, generator: torch.Generator) -> torch.Tensor:
    """Flip, rot90 and shift-scale-rotate (reflecting borders) on (N, C, H, W), H = W."""
    n = x.shape[0]
    if switches.flip:
        flip = _chosen(n, 0.5, generator)
        x[flip] = x[flip].flip(-1)
    if switches.rotate90:
        turns = torch.where(_chosen(n, 0.5, generator), torch.randint(1, 4, (n,), generator=generator), 0)
        for k in (1, 2, 3):
            x[turns == k] = torch.rot90(x[turns == k], k, dims=(2, 3))
    affine = _chosen(n, 0.2, generator)
    if switches.background_edge and affine.any():
        m = int(affine.sum())
        limit = math.radians(45 if switches.rotate45 else 15)
        angle, scale = _uniform(m, -limit, limit, generator), 1 + _uniform(m, -0.05, 0.1, generator)
        shift = _uniform(2 * m, -0.1, 0.1, generator).view(m, 2)  # ±5 % of the side = ±0.1 in [−1, 1] units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x[affine].shape), align_corners=False)
        x[affine] = F.grid_sample(x[affine], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x


def augment(images: torch.Tensor, switches: Switches, generator: torch.Generator) -> torch.Tensor:
    """One augmentation pass over uint8 images (N, 3, H, W), returning uint8 (module docstring lists the ops)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images: expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    touched = _chosen(images.shape[0], 0.5, generator)
    out = images.clone()
    if touched.any():
        x = images[touched].float().div_(255)
        x = _geometric_ops(_pixel_ops(x, generator), switches, generator)
        out[touched] = x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return out
