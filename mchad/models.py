"""Networks and class centers of MCHAD and its baselines: pure ``nn.Module``s, no optimizer or I/O.

- :class:`WideResNet`: WRN-depth-k (Zagoruyko & Komodakis) in the layout of Hendrycks' WRN-40-2 used by the paper
  (reference mchad.md §2.2): its final linear layer emits the D-dimensional embedding. Parameter names follow that
  layout, so the pretrained file loads without renaming (:mod:`mchad.pretrained`).
- :class:`SmallResNet`: the small ResNet of the depth/width sweep (``WrappedResNet``, mchad.md §2.3).
- :class:`ClassCenters` (learnable, MCHAD / Center), :class:`ClassAnchors` (fixed, CAC) and
  :class:`RunningCenters` (running class means, II): each maps embeddings (B, D) to squared Euclidean distances
  (B, C).
- :class:`CenterNet`: backbone → optional BatchNorm (II) → embedding z; distances to the centers and logits.

Notation (mchad.md): z = f(x) ∈ R^D, centers μ_j (j = 1..C), D_ij = ||z_i − μ_j||² (squared).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from common.data_parallel import batch_dropout

WRN_WIDTHS = (16, 32, 64)  # channels of the three groups before widening; the stem has 16 (Zagoruyko & Komodakis)


class _WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3×3-BN-ReLU-dropout-conv3×3, plus a 1×1 shortcut when shapes change."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes and stride == 1
        # camelCase: the parameter name in the pretrained file.
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLUs on fresh BatchNorm outputs save one allocation each (BN's backward does not need them).
        activated = F.relu(self.bn1(x), inplace=True)
        # When the shape changes, the shortcut also starts from the activated input (Hendrycks' layout).
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        out = F.relu(self.bn2(self.conv1(activated)), inplace=True)
        if self.dropout > 0:  # F.dropout, with the mask of the global batch under data parallelism
            out = batch_dropout(out, p=self.dropout, training=self.training)
        return shortcut + self.conv2(out)


class _WideGroup(nn.Module):
    """``n_blocks`` blocks; the first changes the width and stride. ``layer`` matches the pretrained names."""

    def __init__(self, n_blocks: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                _WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
                for i in range(n_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` whose last linear layer emits ``n_outputs`` values (the embedding z).

    Stem conv 3×3 (16 channels), three groups of (depth − 4) / 6 pre-activation blocks with 16k, 32k, 64k channels
    (strides 1, 2, 2), BN, ReLU, global average pooling (= the original 8×8 average pool on 32×32 inputs), linear.
    Initialisation as the original: He-normal convolutions (fan-out), BN weight 1 / bias 0, linear bias 0.

    Args:
        n_outputs: size of the last layer: the embedding dimension D (MCHAD, Center, II), C (CAC, softmax).
        depth: 6n + 4 layers; the paper uses 40.
        widen_factor: k; the paper uses 2.
        dropout: dropout rate inside the blocks; the paper uses 0.3.
        in_channels: 3 (RGB) or 1 (grey demo data).

    Shapes: (B, in_channels, H, W) → (B, n_outputs), H and W divisible by 4.
    """

    def __init__(
        self, n_outputs: int, depth: int = 40, widen_factor: int = 2, dropout: float = 0.3, in_channels: int = 3
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen_factor < 1 or n_outputs < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"need widen_factor >= 1, n_outputs >= 1 and dropout in [0, 1), got {widen_factor}, {n_outputs}, "
                f"{dropout}"
            )
        n_blocks = (depth - 4) // 6
        widths = [WRN_WIDTHS[0], *(width * widen_factor for width in WRN_WIDTHS)]  # stem 16; groups 16k, 32k, 64k
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideGroup(n_blocks, widths[0], widths[1], 1, dropout)
        self.block2 = _WideGroup(n_blocks, widths[1], widths[2], 2, dropout)
        self.block3 = _WideGroup(n_blocks, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], n_outputs)
        self.n_features = widths[3]
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (B, 64k)."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        # avg_pool2d over the whole map: the original's avg_pool2d(8) on 32×32 inputs, summed in its order (a mean
        # over (2, 3) differs in the last float32 bits), and any input size works.
        out = F.relu(self.bn1(out), inplace=True)
        return F.avg_pool2d(out, out.shape[-2:]).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class _ResBlock(nn.Module):
    """conv-BN-ReLU (= a), conv-BN-ReLU, spatial dropout, plus a: the block of the sweep's ``WrappedResNet``."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = F.relu(self.bn1(self.conv1(x)))
        return first + self.dropout(F.relu(self.bn2(self.conv2(first))))


class SmallResNet(nn.Module):
    """The depth/width sweep's small ResNet: ``depth`` blocks of ``width`` channels at full resolution, global
    average pooling, linear layer to ``n_outputs`` (mchad.md §2.3, ``*-mchad-myresnet`` configs).

    Original quirk kept: the first block always uses dropout 0.3, whatever ``dropout`` says.

    Shapes: (B, in_channels, H, W) → (B, n_outputs).
    """

    FIRST_BLOCK_DROPOUT = 0.3  # the original passes no rate to the first block, so its default 0.3 applies

    def __init__(self, n_outputs: int, width: int = 16, depth: int = 3, dropout: float = 0.3, in_channels: int = 3):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {width}, {depth}")
        blocks = [_ResBlock(in_channels, width, self.FIRST_BLOCK_DROPOUT)]
        blocks += [_ResBlock(width, width, dropout) for _ in range(depth - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.blocks(x), 1).flatten(1))


def squared_distances(embeddings: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """D_ij = ||z_i − μ_j||² by the expansion ||z||² + ||μ||² − 2 z·μ, clamped at 0 (as the original code).

    Args:
        embeddings: z, (B, D).
        centers: μ, (C, D).

    Returns:
        (B, C) squared Euclidean distances.

    Raises:
        ValueError: the two disagree in D, or are not matrices.
    """
    if embeddings.ndim != 2 or centers.ndim != 2 or embeddings.shape[1] != centers.shape[1]:
        raise ValueError(
            f"embeddings (B, D) and centers (C, D) must agree in D: got embeddings {tuple(embeddings.shape)} and "
            f"centers {tuple(centers.shape)}"
        )
    cross = embeddings @ centers.T
    norms = embeddings.pow(2).sum(1, keepdim=True) + centers.pow(2).sum(1)
    return (norms - 2 * cross).clamp_min(0)


class ClassCenters(nn.Module):
    """Learnable class centers μ (C, D), drawn i.i.d. N(0, 1) and trained with the network (MCHAD, Center).

    Calling it maps z (B, D) to D (B, C), the squared Euclidean distances.
    """

    def __init__(self, n_classes: int, n_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(n_classes, n_dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return squared_distances(embeddings, self.centers)


class ClassAnchors(nn.Module):
    """CAC's fixed anchors ``magnitude · e_j`` (C, C), a buffer: the embedding dimension equals C."""

    def __init__(self, n_classes: int, magnitude: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("centers", magnitude * torch.eye(n_classes))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return squared_distances(embeddings, self.centers)


class RunningCenters(nn.Module):
    """II's class centers: the running mean of the batch class means since the last :meth:`reset` (buffers).

    ``update`` follows pytorch-ood's estimator, which the paper's II runs used (mchad.md §2.3): with t batches
    seen so far, each class present in the batch gets μ ← (m + t·μ) / (t + 1), m its batch mean; t counts every
    batch, including those without the class. The II model resets it at the start of every training epoch.
    """

    def __init__(self, n_classes: int, n_dim: int) -> None:
        super().__init__()
        self.register_buffer("centers", torch.zeros(n_classes, n_dim))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def reset(self) -> None:
        """Forget every center (zeros) and the batch count."""
        self.centers.zero_()
        self.batches_seen.zero_()

    @torch.no_grad()
    def update(self, batch_means: torch.Tensor, present: torch.Tensor) -> None:
        """Fold one batch's class means (C, D) into the running means of the ``present`` classes ((C,) bool)."""
        seen = self.batches_seen.to(self.centers.dtype)
        updated = (batch_means.detach() + seen * self.centers) / (seen + 1)
        self.centers.copy_(torch.where(present[:, None], updated, self.centers))
        self.batches_seen += 1

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return squared_distances(embeddings, self.centers)


class CenterOutput(NamedTuple):
    """What :class:`CenterNet` returns for a batch of B images."""

    embedding: torch.Tensor  # z, (B, D)
    distances: torch.Tensor | None  # squared distances to the C centers, (B, C); None without centers
    logits: torch.Tensor  # (B, C): the classifier's output, else −distances, else z itself (softmax model)


class CenterNet(nn.Module):
    """Backbone → optional BatchNorm1d (II) → embedding z → distances to class centers and logits.

    Args:
        backbone: maps images to z (B, D).
        centers: :class:`ClassCenters`, :class:`ClassAnchors` or :class:`RunningCenters`; None for the softmax
            baseline, whose backbone emits the logits.
        classifier: linear layer D → C giving the logits (Center baselines); default logits = −distances.
        embedding_norm: BatchNorm1d(D) applied to the backbone output (the II model).
    """

    def __init__(
        self,
        backbone: nn.Module,
        centers: nn.Module | None = None,
        classifier: nn.Module | None = None,
        embedding_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding_norm = embedding_norm
        self.centers = centers
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> CenterOutput:
        embedding = self.backbone(images)
        if self.embedding_norm is not None:
            embedding = self.embedding_norm(embedding)
        distances = None if self.centers is None else self.centers(embedding)
        if self.classifier is not None:
            logits = self.classifier(embedding)
        elif distances is not None:
            logits = -distances
        else:
            logits = embedding
        return CenterOutput(embedding, distances, logits)
