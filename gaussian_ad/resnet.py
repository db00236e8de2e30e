"""ResNet-18/34/50 exposing the five feature levels of the original code's ResNet wrapper (Table VII).

Written from He et al. 2016 ("Deep Residual Learning", Table 1) with torchvision's module and parameter names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``, …), so torchvision's original
ImageNet weight files (``resnet18-f37072fd.pth``, ``resnet34-b627a593.pth``, ``resnet50-0676ba61.pth``, the
``IMAGENET1K_V1`` weights of torchvision 0.4.2 used by the paper) load with ``strict=True``. The bottleneck puts
its stride on the 3×3 convolution, as torchvision does ("ResNet v1.5").

Levels (reference note §1.3, paper L1..L5 = code indices 0..4): the stem output after conv1 / bn / relu / max-pool,
then the output of each of the four stages ``layer1`` … ``layer4``, each globally average-pooled. Input 224 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gaussian_ad.backbones import load_weights, locate_weights

TORCHVISION_URL = "https://download.pytorch.org/models/"
RESOLUTION = 224  # the original code's input size for every ResNet (note §1.2)
STAGE_WIDTHS = (64, 128, 256, 512)
N_CLASSES = 1000


@dataclass(frozen=True)
class ResNetSpec:
    """One torchvision ResNet: block type, blocks per stage and the weight file (8 hex digits = sha256 prefix)."""

    bottleneck: bool
    blocks: tuple[int, int, int, int]
    weights: str


RESNETS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(False, (2, 2, 2, 2), "resnet18-f37072fd.pth"),
    "resnet34": ResNetSpec(False, (3, 4, 6, 3), "resnet34-b627a593.pth"),
    "resnet50": ResNetSpec(True, (3, 4, 6, 3), "resnet50-0676ba61.pth"),
}


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, width, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride), 1×1 expand ×4, with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, width * self.expansion, 1)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, 4·width, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (1×1 conv + BN, torchvision's ``downsample.0/1``) where the shape changes, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class ResNetFeatures(nn.Module):
    """ResNet trunk returning the five levels (stem after max-pool, layer1..layer4), globally average-pooled.

    The classifier ``fc`` is built so that torchvision's weight files load strictly and the parameter count is
    torchvision's; it is not used by :meth:`forward`.

    Args:
        name: a key of :data:`RESNETS`.
    """

    def __init__(self, name: str = "resnet18") -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"name: unknown ResNet {name!r}; known: {', '.join(RESNETS)}")
        self.name, self.spec, self.image_size = name, RESNETS[name], RESOLUTION
        block = Bottleneck if self.spec.bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels, self.channels = 64, [64]
        for index, (width, count) in enumerate(zip(STAGE_WIDTHS, self.spec.blocks, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = []
            for repeat in range(count):
                blocks.append(block(in_channels, width, stride if repeat == 0 else 1))
                in_channels = width * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            self.channels.append(in_channels)
        self.fc = nn.Linear(in_channels, N_CLASSES)

    def stages(self) -> list[nn.Sequential]:
        """``layer1`` … ``layer4``."""
        return [getattr(self, f"layer{index}") for index in range(1, 5)]

    def unbuilt(self, key: str) -> bool:
        """No state-dict key belongs to a part this model leaves out (used by :func:`load_weights`)."""
        return False

    def forward(self, images: torch.Tensor, pool: bool = True) -> list[torch.Tensor]:
        """Levels L1..L5 of normalised images (N, 3, H, W).

        Returns:
            One tensor per level: (N, C_l) pooled, or the (N, C_l, H_l, W_l) maps with ``pool=False``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        levels = [x]
        for stage in self.stages():
            x = stage(x)
            levels.append(x)
        return [level.mean(dim=(2, 3)) for level in levels] if pool else levels


def resnet_weights_path(name: str, *, allow_download: bool = True, progress: bool = True) -> Path:
    """torchvision's weight file of ``name``: the weights folder, torch's hub cache, else downloaded."""
    if name not in RESNETS:
        raise ValueError(f"name: unknown ResNet {name!r}; known: {', '.join(RESNETS)}")
    return locate_weights(RESNETS[name].weights, TORCHVISION_URL, allow_download=allow_download, progress=progress)


def pretrained_resnet(name: str, path: Path | None = None) -> ResNetFeatures:
    """A frozen, eval-mode :class:`ResNetFeatures` with torchvision's ImageNet weights (file ``path`` if given)."""
    model = ResNetFeatures(name)
    load_weights(model, path or resnet_weights_path(name))
    return model.eval().requires_grad_(False)
