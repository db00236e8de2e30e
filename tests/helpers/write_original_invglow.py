"""Pickles in the format of the original InvGlow code's ``th.save(model, path)``, for the loader's tests.

The classes below stand in for the original's (boschresearch/hierarchical_anomaly_detection): each has the
original's module path and class name and registers the same sub-modules, parameters, buffers and attributes as
the original's constructor, and nothing else (no forward). While :func:`original_classes` is active they are
importable under the original's module names, so that ``torch.save`` writes a pickle that names
``invglow.invertible.graph.Node``, ``invglow.models.glow.Conv2d``, ... exactly as the original's files do. The
builders lay the modules out as ``create_glow_model``, ``create_patch_glow_model`` and ``exp.run_exp``'s
class-conditional model do; every tensor comes from a ``TensorFactory``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

TensorFactory = Callable[[tuple[int, ...]], torch.Tensor]


def random_tensors(seed: int = 0) -> TensorFactory:
    """Distinct small random values (N(0, 0.1²)), reproducible."""
    generator = torch.Generator().manual_seed(seed)
    return lambda shape: 0.1 * torch.randn(shape, generator=generator)


def shared_zeros(largest: int) -> TensorFactory:
    """Views of one zero storage of ``largest`` values: ``torch.save`` writes that storage once, so even the paper
    model's pickle stays small."""
    storage = torch.zeros(largest)
    return lambda shape: storage[: torch.Size(shape).numel()].view(shape)


def _parameter(tensor: TensorFactory, *shape: int) -> nn.Parameter:
    return nn.Parameter(tensor(shape))


class _Node(nn.Module):
    def __init__(self, prev: Any, module: nn.Module | None, name: str | None = None) -> None:
        super().__init__()
        self.prev = None if prev is None else nn.ModuleList(prev if isinstance(prev, list) else [prev])
        self.next: list[nn.Module] = []
        self.module = module
        self.cur_out = self.cur_out_log_det = self.cur_in = self.cur_in_log_det = None
        self.tags = {} if name is None else {"name": name}
        for previous in self.prev or []:
            previous.next.append(self)


class Node(_Node):
    pass


class SelectNode(_Node):
    def __init__(self, prev: nn.Module, index: int, name: str | None = None) -> None:
        super().__init__(prev, None, name)
        self.index = index


class CatChansNode(_Node):
    def __init__(self, prev: list[nn.Module]) -> None:
        super().__init__(prev, None)
        self.n_chans = None


class CatAsListNode(_Node):
    pass


class InvertibleSequential(nn.Module):
    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.sequential = nn.Sequential(*modules)
        self.accepts_condition = True


class ActNorm(nn.Module):
    def __init__(self, channels: int, tensor: TensorFactory, eps: float = 1e-8) -> None:
        super().__init__()
        self.loc = _parameter(tensor, 1, channels, 1, 1)
        self.log_scale = _parameter(tensor, 1, channels, 1, 1)
        self.initialize_this_forward, self.initialized = False, True
        self.scale_fn, self.eps, self.verbose_init, self.init_eps = "exp", eps, True, 1e-6


class InvPermute(nn.Module):
    def __init__(self, channels: int, fixed: bool, use_lu: bool, tensor: TensorFactory) -> None:
        super().__init__()
        self.use_lu, self.fixed = use_lu, fixed
        if use_lu:
            self.register_buffer("w_p", torch.eye(channels)[torch.randperm(channels)])
            self.register_buffer("u_mask", torch.triu(torch.ones(channels, channels), 1))
            self.register_buffer("l_mask", self.u_mask.t().clone())
            self.register_buffer("s_sign", torch.sign(torch.randn(channels)))
            self.register_buffer("l_eye", torch.eye(channels))
            self.w_l = _parameter(tensor, channels, channels)
            self.w_s = _parameter(tensor, channels)
            self.w_u = _parameter(tensor, channels, channels)
        elif fixed:
            weight = torch.linalg.qr(torch.randn(channels, channels))[0]
            self.register_buffer("weight", weight)
            self.register_buffer("weight_inverse", weight.inverse())
            self.register_buffer("fixed_log_det", torch.slogdet(weight.double())[1].float())
        else:
            self.weight = _parameter(tensor, channels, channels)


class ChunkChansIn2:
    def __init__(self, swap_dims: bool) -> None:
        self.swap_dims = swap_dims


class EverySecondChan:
    pass


class CouplingLayer(nn.Module):
    def __init__(self, coef_extractor: nn.Module, modifier: nn.Module) -> None:
        super().__init__()
        self.split_merger = ChunkChansIn2(swap_dims=True)
        self.coef_extractor = coef_extractor
        self.modifier = modifier
        self.condition_merger = None
        self.accepts_condition = False


class AffineCoefs(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.splitter = EverySecondChan()


class AdditiveCoefs(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class AffineModifier(nn.Module):
    def __init__(self, scale: str = "sigmoid") -> None:
        super().__init__()
        self.sigmoid_or_exp_scale, self.add_first, self.eps = scale, True, 0


class SubsampleSplitter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stride, self.chunk_chans_first, self.checkerboard, self.cat_at_end = (2, 2), True, False, True
        self.via_reshape = True


class ChunkChans(nn.Module):
    def __init__(self, n_parts: int) -> None:
        super().__init__()
        self.n_parts = n_parts


class ChunkByIndices(nn.Module):
    def __init__(self, indices: tuple[int, ...]) -> None:
        super().__init__()
        self.indices = tuple(indices)


class CatChans(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n_chans = None


class Flatten2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dims_before = torch.Size([64, 3, 8, 8])  # set by the original's forward


class ViewAs(nn.Module):
    def __init__(self, dims_before: tuple[int, ...], dims_after: tuple[int, ...]) -> None:
        super().__init__()
        self.dims_before, self.dims_after = dims_before, dims_after


class NClassIndependentDist(nn.Module):
    def __init__(self, n_dims: int, trainable: bool, tensor: TensorFactory) -> None:
        super().__init__()
        if trainable:
            self.class_means = _parameter(tensor, 1, n_dims)
            self.class_log_stds = _parameter(tensor, 1, n_dims)
        else:
            self.register_buffer("class_means", torch.zeros(1, n_dims))
            self.register_buffer("class_log_stds", torch.zeros(1, n_dims))
        self.truncate_to = None


class Unlabeled(nn.Module):
    def __init__(self, dist: nn.Module) -> None:
        super().__init__()
        self.dist = dist


class MergeLogDets(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class InvertibleClassConditional(nn.Module):
    def __init__(self, modules: list[nn.Module], i_classes: list[int]) -> None:
        super().__init__()
        self.module_list = nn.ModuleList(modules)
        self.i_classes = i_classes


class Conv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, tensor: TensorFactory) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False, device="meta")
        self.conv.weight = _parameter(tensor, c_out, c_in, kernel, kernel)
        self.actnorm = ActNorm(c_out, tensor, eps=0)
        self.do_actnorm = True


class Conv2dZeros(nn.Module):
    def __init__(self, c_in: int, c_out: int, tensor: TensorFactory, logscale_factor: float = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, device="meta")
        self.conv.weight = _parameter(tensor, c_out, c_in, 3, 3)
        self.conv.bias = _parameter(tensor, c_out)
        self.logscale_factor = logscale_factor
        self.logs = _parameter(tensor, c_out, 1, 1)


class WrapForPatches(nn.Module):
    def __init__(self, model: nn.Module, patch_size: int) -> None:
        super().__init__()
        self.model, self.patch_size = model, patch_size


ORIGINAL_MODULES = {
    "invglow.invertible.graph": (Node, SelectNode, CatChansNode, CatAsListNode),
    "invglow.invertible.sequential": (InvertibleSequential,),
    "invglow.invertible.actnorm": (ActNorm,),
    "invglow.invertible.inv_permute": (InvPermute,),
    "invglow.invertible.coupling": (CouplingLayer,),
    "invglow.invertible.affine": (AffineCoefs, AdditiveCoefs, AffineModifier),
    "invglow.invertible.split_merge": (ChunkChansIn2, EverySecondChan),
    "invglow.invertible.splitter": (SubsampleSplitter,),
    "invglow.invertible.branching": (ChunkChans, ChunkByIndices, CatChans),
    "invglow.invertible.view_as": (Flatten2d, ViewAs),
    "invglow.invertible.distribution": (NClassIndependentDist, Unlabeled, MergeLogDets),
    "invglow.invertible.categorical_mixture": (InvertibleClassConditional,),
    "invglow.models.glow": (Conv2d, Conv2dZeros),
    "invglow.models.patch_glow": (WrapForPatches,),
}


@contextmanager
def original_classes() -> Iterator[None]:
    """The classes above importable under the original's module names (for ``torch.save`` to name them)."""
    saved = {name: sys.modules.get(name) for name in ORIGINAL_MODULES}
    homes = {cls: cls.__module__ for classes in ORIGINAL_MODULES.values() for cls in classes}
    try:
        for name, classes in ORIGINAL_MODULES.items():
            module = sys.modules[name] = types.ModuleType(name)
            module.__file__ = __file__  # where the classes' source is (legacy torch.save stores it)
            for cls in classes:
                cls.__module__ = name
                setattr(module, cls.__name__, cls)
        yield
    finally:
        for cls, home in homes.items():
            cls.__module__ = home
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def save_original(model: nn.Module, path: Path, legacy: bool = False) -> Path:
    """``th.save(model, path)`` as the original does, naming the original's classes (``legacy``: the pre-1.6
    format)."""
    with original_classes():
        torch.save(model, path, _use_new_zipfile_serialization=not legacy)
    return path


def _conv_block(c_in: int, c_out: int, hidden: int, tensor: TensorFactory) -> nn.Sequential:
    relu = nn.ReLU()  # one instance at both places, as the original's get_conv_block
    return nn.Sequential(
        Conv2d(c_in, hidden, 3, tensor),
        relu,
        Conv2d(hidden, hidden, 1, tensor),
        relu,
        Conv2dZeros(hidden, c_out, tensor),
    )


def _dense_block(c_in: int, c_out: int, hidden: int, tensor: TensorFactory) -> nn.Sequential:
    relu = nn.ReLU()
    layers = [nn.Linear(c_in, hidden, device="meta"), relu, nn.Linear(hidden, hidden, device="meta"), relu]
    layers.append(nn.Linear(hidden, c_out, device="meta"))
    for layer in layers[::2]:
        layer.weight = _parameter(tensor, *layer.weight.shape)
        layer.bias = _parameter(tensor, *layer.bias.shape)
    return nn.Sequential(*layers)


def flow_block(
    channels: int, hidden: int, tensor: TensorFactory, coupling: str = "affine", lu: bool = True, dense: bool = False
) -> InvertibleSequential:
    """``flow_block``: ActNorm, InvPermute (fixed orthogonal when dense), coupling with its net."""
    out = channels if coupling == "affine" else channels // 2
    block = (_dense_block if dense else _conv_block)(channels // 2, out, hidden, tensor)
    coefs = AffineCoefs(block) if coupling == "affine" else AdditiveCoefs(block)
    permute = InvPermute(channels, fixed=dense, use_lu=lu and not dense, tensor=tensor)
    return InvertibleSequential(ActNorm(channels, tensor, eps=0), permute, CouplingLayer(coefs, AffineModifier()))


def _scale_flow(c: int, h: int, w: int, steps: int, hidden: int, tensor: TensorFactory, **kind: Any) -> nn.Module:
    dense = kind.get("dense", False)
    width = c * h * w if dense else c
    blocks = [flow_block(width, hidden, tensor, **kind) for _ in range(steps)]
    if dense:
        blocks = [Flatten2d(), *blocks, ViewAs((-1, width), (-1, c, h, w))]
    return InvertibleSequential(SubsampleSplitter(), *blocks)


def _prior(n_dims: int, tensor: TensorFactory) -> tuple[nn.Module, nn.Module]:
    """(``InvertibleSequential(Flatten2d, ActNorm)``, ``Unlabeled(NClassIndependentDist)``) of one scale."""
    return InvertibleSequential(Flatten2d(), ActNorm(n_dims, tensor)), Unlabeled(
        NClassIndependentDist(n_dims, False, tensor)
    )


def original_glow(channels: int, size: int, steps: int, hidden: int, tensor: TensorFactory, **kind: Any) -> nn.Module:
    """``create_glow_model`` with L = 3 (``kind``: coupling, lu, dense): the ``CatAsListNode`` on top."""
    c, h, w = channels, size, size
    dist_nodes, previous = [], None
    for k in range(3):
        c, h, w = c * 4, h // 2, w // 2
        flow = Node(previous, _scale_flow(c, h, w, steps, hidden, tensor, **kind), name=f"m0-flow-{k}")
        if k < 2:
            chunks = Node(flow, ChunkChans(2))
            factored, previous, c = SelectNode(chunks, 0), SelectNode(chunks, 1, name=f"m0-in-flow-{k + 1}"), c // 2
        else:
            factored = flow
        act, dist = _prior(c * h * w, tensor)
        dist_nodes.append(Node(Node(factored, act, name=f"m0-act-{k}"), dist, name=f"m0-dist-{k}"))
    return CatAsListNode(dist_nodes, None, name="m0-full")


def original_patch_glow(channels: int, steps: int, hidden: int, tensor: TensorFactory) -> nn.Module:
    """``create_patch_glow_model``: one scale on 8 × 8 patches, wrapped in ``WrapForPatches``."""
    c = channels * 4
    act, dist = _prior(c * 4 * 4, tensor)
    model = InvertibleSequential(_scale_flow(c, 4, 4, steps, hidden, tensor), act, dist)
    return WrapForPatches(model, 8)


def _latent_model(sizes: list[int], tensor: TensorFactory) -> nn.Module:
    """``latent_model``: per scale a SelectNode of the re-chunked latents, ActNorm and a trainable Gaussian."""
    rechunk = Node(None, ChunkByIndices((sizes[0], sizes[0] + sizes[1])))
    nodes = []
    for i, size in enumerate(sizes):
        act = InvertibleSequential(Flatten2d(), ActNorm(size, tensor))
        nodes.append(Node(Node(SelectNode(rechunk, i), act), Unlabeled(NClassIndependentDist(size, True, tensor))))
    return CatAsListNode(nodes, None)


def original_supervised(glow: nn.Module, sizes: list[int], n_classes: int, tensor: TensorFactory) -> nn.Module:
    """``run_exp``'s supervised model on ``glow`` (an :func:`original_glow`): its ``m0-act-k`` nodes, concatenated,
    feed one ``latent_model`` per class (``sizes``: the latent size of each scale)."""
    acts = [node.prev[0] for node in glow.prev]
    for act in acts:
        act.next = []
    classes = [Node(_latent_model(sizes, tensor), CatChans()) for _ in range(n_classes)]
    return InvertibleSequential(
        CatChansNode(acts), MergeLogDets(InvertibleClassConditional(classes, list(range(n_classes))))
    )
