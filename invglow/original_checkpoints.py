"""The original InvGlow code's trained models (boschresearch/hierarchical_anomaly_detection), loaded into ours.

The original saves whole model objects, ``th.save(model, path)``: ``main.py`` writes the Tiny-pretrained Glow to
``tiny_model.th``, and ``exp.run_exp`` writes ``<epoch>_model.th`` every ``n_epochs // 5`` epochs of every stage
(finetuned, outlier-loss, supervised, local and fully connected models). Such a pickle names the original's
classes; it is read here without importing that code or running any of it: the classes of ``invglow.invertible``,
``invglow.models`` and ``torch.nn.modules`` become inert stand-ins that only record their state, tensors are
rebuilt, and any other name is refused (:mod:`common.safe_pickle`). The stand-ins' tensors are then mapped onto
our models:

- Glow (``create_glow_model``, a graph of ``invglow.invertible.graph`` nodes, ``CatAsListNode`` on top): per
  scale k the nodes ``m0-flow-k`` (``InvertibleSequential(SubsampleSplitter, flow_block × K)``, each flow block
  ``InvertibleSequential(ActNorm, InvPermute, CouplingLayer)``), ``m0-act-k`` (``InvertibleSequential(Flatten2d,
  ActNorm)``, our per-scale prior) and ``m0-dist-k`` (a fixed standard normal, checked). ``block_type='dense'``
  (``Flatten2d`` in the flows, fixed orthogonal ``InvPermute``) gives our dense Glow.
- the local model (``create_patch_glow_model``, ``WrapForPatches`` on top): our :class:`PatchGlow`.
- the supervised model (``InvertibleSequential(CatChansNode(m0-act-*), MergeLogDets(InvertibleClassConditional))``):
  our :class:`ClassConditionalGlow`, one head per entry of ``module_list``, each of per-scale ``ActNorm`` and
  ``NClassIndependentDist`` (``class_means``, ``class_log_stds``).

Layer by layer: ``ActNorm`` ``loc``/``log_scale`` → ``bias``/``log_scale`` (the original's scale ``exp(s) + eps``
becomes ``s ← log(exp(s) + eps)``, the same function); LU ``InvPermute`` ``w_p, s_sign, l_mask, l_eye, w_l, w_u,
w_s`` → ``permutation, sign_s, lower_mask, eye, lower, upper, log_s``; the coupling net's ``Conv2d`` (conv +
ActNorm) and ``Conv2dZeros`` (``logs`` scaled by its ``logscale_factor``, ours by 3) → ``conv1/norm1``,
``conv2/norm2``, ``out``. Configurations the original could build but ours cannot (ELU coupling nets, shuffle or
identity permutations, exp-scaled couplings, flows without ActNorm) are refused by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import DataError
from common.safe_pickle import (
    TENSOR_GLOBALS,
    StandIn,
    attribute,
    children,
    load_torch_file,
    named_modules,
    own_tensors,
    restricted_unpickler,
)
from common.weight_mapping import Mapped, load_mapped
from invglow.config import InvGlowConfig
from invglow.flows import ZERO_CONV_LOG_SCALE_FACTOR
from invglow.models import ClassConditionalGlow, Glow, PatchGlow, build_model, mark_initialized

ORIGINAL_PACKAGES = ("invglow.invertible", "invglow.models", "torch.nn.modules")
"""Packages whose classes a pickled original model names: read as stand-ins."""

_INV = "invglow.invertible."
SEQUENTIAL = _INV + "sequential.InvertibleSequential"
CAT_AS_LIST = _INV + "graph.CatAsListNode"
CAT_CHANS_NODE = _INV + "graph.CatChansNode"
MERGE_LOG_DETS = _INV + "distribution.MergeLogDets"
FLATTEN = _INV + "view_as.Flatten2d"
VIEW_AS = _INV + "view_as.ViewAs"
SPLITTER = _INV + "splitter.SubsampleSplitter"
INV_PERMUTE = _INV + "inv_permute.InvPermute"
AFFINE_COEFS = _INV + "affine.AffineCoefs"
ADDITIVE_COEFS = _INV + "affine.AdditiveCoefs"
EVERY_SECOND_CHAN = _INV + "split_merge.EverySecondChan"
WRAP_FOR_PATCHES = "invglow.models.patch_glow.WrapForPatches"
RELU = "torch.nn.modules.activation.ReLU"

_UNPICKLER = restricted_unpickler(
    TENSOR_GLOBALS, "not a tensor, a container or a class of the original InvGlow code", ORIGINAL_PACKAGES
)

OurModel = Glow | PatchGlow | ClassConditionalGlow
Convert = Callable[[torch.Tensor], torch.Tensor]


class StructureError(ValueError):
    """The pickled model is not built the way the original's model functions build theirs."""


def _is(obj: Any, original: str) -> bool:
    return isinstance(obj, StandIn) and obj.original == original


def _name(obj: Any) -> str:
    return obj.original if isinstance(obj, StandIn) else type(obj).__name__


def _child(obj: Any, *names: str) -> StandIn:
    """The sub-module at the path ``names`` below ``obj`` (e.g. ``"prev", "0", "module"``)."""
    for name in names:
        found = children(obj).get(name)
        if found is None:
            raise StructureError(f"{_name(obj)} has no sub-module {name!r}")
        obj = found
    return obj


def _sequence(obj: Any) -> list[StandIn]:
    """The modules of an ``InvertibleSequential`` (its ``sequential``), in order."""
    if not _is(obj, SEQUENTIAL):
        raise StructureError(f"expected an InvertibleSequential, found {_name(obj)}")
    return list(children(_child(obj, "sequential")).values())


def _last(obj: Any) -> StandIn:
    """The last module of an ``InvertibleSequential`` (the ActNorm of ``InvertibleSequential(Flatten2d, ActNorm)``)."""
    modules = _sequence(obj)
    if not modules:
        raise StructureError("an empty InvertibleSequential")
    return modules[-1]


def _expect(obj: Any, name: str, wanted: Any, where: str) -> None:
    value = attribute(obj, name)
    if value != wanted:
        raise StructureError(f"{where}: {_name(obj)} has {name}={value!r}; our Glow implements {name}={wanted!r}")


@dataclass(frozen=True)
class OriginalScale:
    """One scale of an original Glow: its flow, its prior (``InvertibleSequential(Flatten2d, ActNorm)``) and, in
    the unsupervised models, its distribution (``Unlabeled(NClassIndependentDist)``)."""

    flow: StandIn
    prior: StandIn
    dist: StandIn | None


@dataclass(frozen=True)
class OriginalModel:
    """What a pickled original model holds: its kind, its Glow's scales and, for the supervised model, per class
    and scale the head's (ActNorm, NClassIndependentDist)."""

    kind: str  # "full", "dense", "local" or "supervised"
    scales: list[OriginalScale]
    heads: list[list[tuple[StandIn, StandIn]]]


def _named_nodes(top: StandIn) -> dict[str, StandIn]:
    """The graph nodes below ``top`` that carry a ``name`` tag (``m0-flow-0``, ...)."""
    nodes = {}
    for _, module in named_modules(top):
        tags = attribute(module, "tags")
        if isinstance(tags, Mapping) and isinstance(tags.get("name"), str):
            nodes[tags["name"]] = module
    return nodes


def _glow_scales(top: StandIn, with_dist: bool) -> list[OriginalScale]:
    """The scales of the Glow graph below ``top``, from its ``m0-flow-k``, ``m0-act-k`` (and ``m0-dist-k``) nodes."""
    nodes = _named_nodes(top)
    scales = []
    while f"m0-flow-{len(scales)}" in nodes:
        k = len(scales)
        needed = [f"m0-act-{k}"] + ([f"m0-dist-{k}"] if with_dist else [])
        for name in needed:
            if name not in nodes:
                raise StructureError(f"the Glow graph has m0-flow-{k} but no {name} node")
        dist = _child(nodes[f"m0-dist-{k}"], "module") if with_dist else None
        scales.append(
            OriginalScale(_child(nodes[f"m0-flow-{k}"], "module"), _child(nodes[f"m0-act-{k}"], "module"), dist)
        )
    if not scales:
        raise StructureError("no m0-flow-0 node: not a Glow of the original's create_glow_model")
    return scales


def _class_heads(class_model: StandIn) -> list[list[tuple[StandIn, StandIn]]]:
    """Per class and scale, (ActNorm, NClassIndependentDist) of ``InvertibleClassConditional`` (``latent_model``)."""
    heads = []
    for class_node in children(_child(class_model, "module_list")).values():
        per_scale = children(_child(class_node, "prev", "0", "prev")).values()
        heads.append(
            [(_last(_child(node, "prev", "0", "module")), _child(node, "module", "dist")) for node in per_scale]
        )
    if len(heads) < 2 or len({len(per_scale) for per_scale in heads}) != 1:
        raise StructureError(f"class heads with {sorted({len(h) for h in heads})} scales for {len(heads)} classes")
    return heads


def parse_original(top: Any) -> OriginalModel:
    """The kind and the parts of the unpickled original model ``top``."""
    if _is(top, CAT_AS_LIST):
        scales = _glow_scales(top, with_dist=True)
        dense = any(_is(module, FLATTEN) for module in _sequence(scales[0].flow))
        return OriginalModel("dense" if dense else "full", scales, [])
    if _is(top, WRAP_FOR_PATCHES):
        parts = _sequence(_child(top, "model"))
        if len(parts) != 3:
            raise StructureError(f"the patch model has {len(parts)} parts (the original's: flow, ActNorm, dist)")
        return OriginalModel("local", [OriginalScale(*parts)], [])
    if _is(top, SEQUENTIAL):
        parts = _sequence(top)
        if len(parts) == 2 and _is(parts[0], CAT_CHANS_NODE) and _is(parts[1], MERGE_LOG_DETS):
            heads = _class_heads(_child(parts[1], "module"))
            return OriginalModel("supervised", _glow_scales(parts[0], with_dist=False), heads)
    raise StructureError(f"{_name(top)} on top: not a model of the original's Glow, patch or class-conditional kind")


class Collector:
    """Collects the mapping (our key → the original's name, tensor) from stand-in modules; the tensors of the
    original model not taken are left over (extra)."""

    def __init__(self, top: StandIn, ours: Mapping[str, torch.Tensor]) -> None:
        modules = named_modules(top)
        self._paths = {id(module): path for path, module in modules}
        self._left = {self._join(path, name) for path, module in modules for name in own_tensors(module)}
        self._ours = ours
        self.mapped: Mapped = {}
        self.missing: dict[str, str] = {}

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{name}" if path else name

    def name(self, module: StandIn, tensor: str) -> str:
        """The original's state-dict name of ``module``'s ``tensor``."""
        return self._join(self._paths.get(id(module), _name(module)), tensor)

    def read(self, module: StandIn, tensor: str) -> torch.Tensor | None:
        """``module``'s ``tensor``, now taken (None if absent)."""
        self._left.discard(self.name(module, tensor))
        return own_tensors(module).get(tensor)

    def take(self, key: str, module: StandIn, tensor: str, convert: Convert | None = None) -> None:
        """Map ``module``'s ``tensor`` (converted) to our ``key``; a tensor of another shape but as many values as
        ours is reshaped to ours (the original's flattened or singleton-padded layouts)."""
        value = self.read(module, tensor)
        if value is None:
            self.missing[key] = self.name(module, tensor)
            return
        value = value if convert is None else convert(value)
        self.mapped[key] = (self.name(module, tensor), self._fitted(key, value))

    def take_rows(self, key: str, sources: list[tuple[StandIn, str]], convert: Convert | None = None) -> None:
        """Map the tensors ``sources`` (one per class, flattened) to the rows of our ``key``."""
        values = [self.read(module, tensor) for module, tensor in sources]
        name = f"{self.name(*sources[0])} (one per class, {len(sources)} classes)"
        if any(value is None for value in values):
            self.missing[key] = name
            return
        if len({value.numel() for value in values}) != 1:
            raise StructureError(f"{name}: sizes {sorted({value.numel() for value in values})} differ between classes")
        rows = torch.stack([value.reshape(-1) if convert is None else convert(value).reshape(-1) for value in values])
        self.mapped[key] = (name, rows)

    def _fitted(self, key: str, value: torch.Tensor) -> torch.Tensor:
        ours = self._ours.get(key)
        if ours is not None and ours.shape != value.shape and ours.numel() == value.numel():
            return value.reshape(ours.shape)
        return value

    def leftover(self) -> list[str]:
        """The original's tensors no key of ours took."""
        return sorted(self._left)


def _eps_folded(eps: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The original ActNorm's scale ``exp(s) + eps`` as our ``exp(s')``: ``s' = log(exp(s) + eps)``."""
    return (lambda s: s) if eps == 0 else (lambda s: torch.log(torch.exp(s) + eps))


def _actnorm_eps(actnorm: StandIn, where: str) -> float:
    _expect(actnorm, "scale_fn", "exp", where)
    eps = attribute(actnorm, "eps", 0.0)
    if not isinstance(eps, (int, float)) or eps < 0:
        raise StructureError(f"{where}: ActNorm eps={eps!r}")
    return float(eps)


def map_actnorm(collector: Collector, key: str, actnorm: StandIn, where: str) -> None:
    """The original ``ActNorm`` (``loc``, ``log_scale``) onto our ActNorm at ``key``."""
    eps = _actnorm_eps(actnorm, where)
    collector.take(f"{key}.bias", actnorm, "loc")
    collector.take(f"{key}.log_scale", actnorm, "log_scale", _eps_folded(eps))


def map_permutation(collector: Collector, key: str, permute: StandIn, where: str) -> None:
    """The original ``InvPermute`` onto our InvConv1x1 (LU or plain) or FixedOrthogonal at ``key``."""
    if not _is(permute, INV_PERMUTE):
        raise StructureError(f"{where}: {_name(permute)} permutation (ours: InvPermute, 'invconv' or 'invconvfixed')")
    if attribute(permute, "use_lu"):
        names = {"permutation": "w_p", "sign_s": "s_sign", "lower_mask": "l_mask", "eye": "l_eye"}
        names |= {"lower": "w_l", "upper": "w_u", "log_s": "w_s"}
        collector.read(permute, "u_mask")  # the transpose of l_mask
    elif attribute(permute, "fixed"):
        names = {"weight": "weight", "log_abs_det": "fixed_log_det"}
        collector.read(permute, "weight_inverse")  # recomputed by our inverse
    else:
        names = {"weight": "weight"}
    for ours, original in names.items():
        collector.take(f"{key}.{ours}", permute, original)


def _map_conv_net(collector: Collector, key: str, layers: list[StandIn], where: str) -> None:
    """``get_conv_block``: Conv2d(+ActNorm), ReLU, Conv2d(+ActNorm), ReLU, Conv2dZeros → our CouplingNet."""
    for number, index in ((1, 0), (2, 2)):
        collector.take(f"{key}.conv{number}.weight", _child(layers[index], "conv"), "weight")
        map_actnorm(collector, f"{key}.norm{number}", _child(layers[index], "actnorm"), where)
    zeros = layers[4]
    factor = attribute(zeros, "logscale_factor")
    if not isinstance(factor, (int, float)):
        raise StructureError(f"{where}: Conv2dZeros logscale_factor={factor!r}")
    collector.take(f"{key}.out.conv.weight", _child(zeros, "conv"), "weight")
    collector.take(f"{key}.out.conv.bias", _child(zeros, "conv"), "bias")
    collector.take(f"{key}.out.logs", zeros, "logs", lambda logs: logs * (factor / ZERO_CONV_LOG_SCALE_FACTOR))


def _map_dense_net(collector: Collector, key: str, layers: list[StandIn]) -> None:
    """``get_dense_block``: Linear, ReLU, Linear, ReLU, Linear → our DenseCouplingNet."""
    for index in (0, 2, 4):
        for tensor in ("weight", "bias"):
            collector.take(f"{key}.net.{index}.{tensor}", layers[index], tensor)


def map_coupling(collector: Collector, key: str, coupling: StandIn, dense: bool, where: str) -> None:
    """The original ``CouplingLayer`` (sigmoid scale, add first, first half conditioning) onto ours at ``key``."""
    _expect(attribute(coupling, "split_merger"), "swap_dims", True, where)
    modifier = _child(coupling, "modifier")
    for name, wanted in (("sigmoid_or_exp_scale", "sigmoid"), ("add_first", True), ("eps", 0)):
        _expect(modifier, name, wanted, where)
    coefs = _child(coupling, "coef_extractor")
    if _is(coefs, AFFINE_COEFS) and not _is(attribute(coefs, "splitter"), EVERY_SECOND_CHAN):
        raise StructureError(f"{where}: affine coefficients split by {_name(attribute(coefs, 'splitter'))}")
    if not (_is(coefs, AFFINE_COEFS) or _is(coefs, ADDITIVE_COEFS)):
        raise StructureError(f"{where}: {_name(coefs)} coupling coefficients")
    layers = list(children(_child(coefs, "module")).values())
    if len(layers) != 5 or not (_is(layers[1], RELU) and _is(layers[3], RELU)):
        raise StructureError(f"{where}: coupling net {[_name(layer) for layer in layers]} (ours: 3 layers with ReLU)")
    if dense:
        _map_dense_net(collector, f"{key}.net", layers)
    else:
        _map_conv_net(collector, f"{key}.net", layers, where)


def map_scale(collector: Collector, key: str, scale: OriginalScale, k: int) -> None:
    """Scale ``k``'s flow steps and prior onto our Glow at ``key`` (``""`` or ``"glow."``)."""
    modules = _sequence(scale.flow)
    if not modules or not _is(modules[0], SPLITTER) or not attribute(modules[0], "via_reshape"):
        raise StructureError(f"scale {k}: the flow does not start with a reshaping SubsampleSplitter (our squeeze)")
    _expect(modules[0], "stride", (2, 2), f"scale {k}")
    dense = any(_is(module, FLATTEN) for module in modules)
    steps = [module for module in modules[1:] if not (_is(module, FLATTEN) or _is(module, VIEW_AS))]
    for i, step in enumerate(steps):
        where = f"scale {k}, flow step {i}"
        layers = _sequence(step)
        if len(layers) != 3:
            raise StructureError(f"{where}: {len(layers)} layers (ours: ActNorm, permutation, coupling)")
        map_actnorm(collector, f"{key}scales.{k}.{i}.layers.0", layers[0], where)
        map_permutation(collector, f"{key}scales.{k}.{i}.layers.1", layers[1], where)
        map_coupling(collector, f"{key}scales.{k}.{i}.layers.2", layers[2], dense, where)
    map_actnorm(collector, f"{key}priors.{k}.norm", _last(scale.prior), f"scale {k} prior")
    if scale.dist is not None:
        _check_standard_normal(collector, _child(scale.dist, "dist"), k)


def _check_standard_normal(collector: Collector, dist: StandIn, k: int) -> None:
    """The original's per-scale ``NClassIndependentDist`` (buffers) must be the N(0, I) our prior ends with."""
    for name in ("class_means", "class_log_stds"):
        value = collector.read(dist, name)
        if value is None or value.ndim != 2 or value.shape[0] != 1 or bool(value.any()):
            raise StructureError(f"scale {k}: the prior's {name} is not one zero vector (ours: a standard normal)")


def map_heads(collector: Collector, heads: list[list[tuple[StandIn, StandIn]]]) -> None:
    """The supervised model's per-class heads onto :class:`ClassConditionalGlow`'s per-scale (C, D) parameters."""
    for k in range(len(heads[0])):
        actnorms = [per_scale[k][0] for per_scale in heads]
        dists = [per_scale[k][1] for per_scale in heads]
        eps = {_actnorm_eps(actnorm, f"class head of scale {k}") for actnorm in actnorms}
        if len(eps) != 1:
            raise StructureError(f"class heads of scale {k}: ActNorms with different eps {sorted(eps)}")
        collector.take_rows(f"head_bias.{k}", [(actnorm, "loc") for actnorm in actnorms])
        collector.take_rows(f"head_log_scale.{k}", [(a, "log_scale") for a in actnorms], _eps_folded(eps.pop()))
        collector.take_rows(f"mean.{k}", [(dist, "class_means") for dist in dists])
        collector.take_rows(f"log_std.{k}", [(dist, "class_log_stds") for dist in dists])


def map_model(collector: Collector, original: OriginalModel, prefix: str) -> None:
    """Every scale of the original's Glow onto ours at ``prefix`` and, if any, its class heads."""
    for k, scale in enumerate(original.scales):
        map_scale(collector, prefix, scale, k)
    if original.heads:
        map_heads(collector, original.heads)


def build_ours(original: OriginalModel, config: InvGlowConfig) -> OurModel:
    """Our model of the original's kind, shaped by ``config``."""
    if original.kind == "supervised":
        return ClassConditionalGlow(build_model(config, "full"), len(original.heads))
    return build_model(config, original.kind)


def load_original(path: str | Path, config: InvGlowConfig) -> OurModel:
    """Our model (:class:`Glow`, dense Glow, :class:`PatchGlow` or :class:`ClassConditionalGlow`, as the file
    holds) with the weights of the original's pickled model at ``path``, shaped by ``config``.

    Raises:
        MissingDataError: no such file.
        DataError: the pickle names a class outside the original's packages (refused before anything runs), is
            not one of the original's models, or its tensors do not fit ours (one line naming the file and the
            missing, extra or mis-shaped tensors).
    """
    top = load_torch_file(path, _UNPICKLER)
    try:
        original = parse_original(top)
    except StructureError as error:
        raise DataError(path, f"not a model of the original InvGlow code: {error}") from error
    model = build_ours(original, config)
    collector = Collector(top, model.state_dict())
    try:
        map_model(collector, original, "" if isinstance(model, Glow) else "glow.")
    except StructureError as error:
        raise DataError(path, f"a model of the original InvGlow code that ours cannot hold: {error}") from error
    ours_only = [key for key in model.state_dict() if key.endswith(".initialized")]
    load_mapped(model, collector.mapped, path, collector.missing, collector.leftover(), ours_only)
    mark_initialized(model)
    return model
