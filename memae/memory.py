"""The memory module of MemAE (Gong et al., ICCV 2019, Sec. 3) and C-MemAE's bank of class memories.

A memory is a learnable matrix ``M`` (N slots × C channels). Each query ``z`` (one C-vector: the whole latent of
a flat encoder, or the feature vector at one position of a feature map) is answered by the read-out

.. math::
    \\hat z = \\hat w M, \\qquad w_i = \\frac{\\exp d(z, m_i)}{\\sum_j \\exp d(z, m_j)}

with ``d`` the cosine similarity (paper) or the dot product (official code, ``similarity="dot"``), followed by
the paper's continuous hard shrinkage and an L1 re-normalisation:

.. math::
    \\hat w_i = \\frac{\\max(w_i - \\lambda, 0)\\, w_i}{|w_i - \\lambda| + \\epsilon}, \\qquad
    \\hat w \\leftarrow \\hat w / \\lVert \\hat w \\rVert_1.

The slots are ordinary parameters trained by back-propagation with the encoder and decoder (author, issue #17).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SIMILARITIES = ("cosine", "dot")
SELECTIONS = ("sum", "max")  # self-selection: summed similarity (C-MemAE code) or the best single slot
SHRINK_EPSILON = 1e-12  # ε of the hard shrinkage, as in the official code
NORM_FLOOR = 1e-12  # floor of the L1 norm: an all-zero ŵ stays zero (torch's F.normalize default)
DEFAULT_SHRINK_THRESHOLD = 0.0025  # official code's ShrinkThres; the paper recommends λ ∈ [1/N, 3/N] (Sec. 3)
RESIZE_RULES = ("scale", "keep")  # λ when a few-shot strategy changes N: λ·N kept (paper) or λ kept (C-MemAE code)
DEFAULT_RESIZE_RULE = "scale"


class BottleneckOutput(NamedTuple):
    """What a bottleneck gives the decoder, and what it tells about its addressing.

    Attributes:
        latent: the decoder's input, the shape of the encoding (B, C, *spatial).
        attention: addressing weights ŵ (B, N, *spatial) of the memory each sample used, or None (no memory).
        similarity: pre-softmax similarities d(z, m_i) (B, N, *spatial), detached, or None.
        selection: (B,) index of the memory each sample used (conditional memories), or None.
        selection_logits: (B, Y) summed similarity per memory (the self-selection criterion), or None.
    """

    latent: torch.Tensor
    attention: torch.Tensor | None = None
    similarity: torch.Tensor | None = None
    selection: torch.Tensor | None = None
    selection_logits: torch.Tensor | None = None


def hard_shrink(weights: torch.Tensor, threshold: float, epsilon: float = SHRINK_EPSILON) -> torch.Tensor:
    """Continuous hard shrinkage (Sec. 3): ``max(w − λ, 0) · w / (|w − λ| + ε)``, for non-negative ``w``.

    Above λ the result is ``w`` up to the ε term (gradient ≈ 1); at or below λ it is exactly 0.
    """
    return F.relu(weights - threshold) * weights / ((weights - threshold).abs() + epsilon)


def cosine_weight_bounds(num_slots: int) -> tuple[float, float]:
    """Smallest and largest softmax weight cosine similarities in [−1, 1] allow over ``num_slots`` slots.

    Returns:
        ``(1 / (1 + (N−1) e²), e² / (e² + N − 1))``: one slot at −1 and the others at +1, and the reverse.
    """
    e2 = math.exp(2.0)
    return 1.0 / (1.0 + (num_slots - 1) * e2), e2 / (e2 + num_slots - 1)


def check_shrink_threshold(threshold: float, num_slots: int, similarity: str) -> None:
    """Reject a λ that zeroes every weight; warn when cosine addressing makes it inert.

    Raises:
        ValueError: λ < 0, λ ≥ 1 (softmax weights are below 1), or, with cosine similarity, λ at or above the
            largest possible weight (every ŵ would be 0 and no gradient would reach the memory, issue #12).
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"shrink_threshold must be in [0, 1) (0 = no shrinkage), got {threshold}")
    if similarity != "cosine" or threshold == 0.0:
        return
    smallest, largest = cosine_weight_bounds(num_slots)
    if threshold >= largest:
        raise ValueError(
            f"shrink_threshold {threshold} is at or above the largest weight cosine addressing can give over "
            f"{num_slots} slots ({largest:.4g}): every addressing weight would be zero; the paper uses [1/N, 3/N]"
        )
    if threshold < smallest:
        warnings.warn(
            f"shrink_threshold {threshold} is below the smallest weight cosine addressing can give over "
            f"{num_slots} slots ({smallest:.4g}): the shrinkage never zeroes anything",
            stacklevel=3,
        )


def check_resize_rule(rule: str) -> None:
    """Raise a clear error when ``rule`` is not one of :data:`RESIZE_RULES`."""
    if rule not in RESIZE_RULES:
        raise ValueError(f"threshold_on_resize must be one of {', '.join(RESIZE_RULES)}, got {rule!r}")


def resized_threshold(threshold: float, num_slots: int, new_slots: int, rule: str = DEFAULT_RESIZE_RULE) -> float:
    """λ of a memory that had ``threshold`` over ``num_slots`` slots and is re-made with ``new_slots`` slots.

    ``"scale"`` (paper, Sec. 3: λ ∈ [1/N, 3/N]) keeps λ·N, so λ = 1/N becomes 1/N′ and λ = 0 stays 0; a single
    slot gets 0, since its weight is always 1 (shrinkage is the identity for any λ < 1, and 1/N′ = 1 would zero
    it). ``"keep"`` (C-MemAE code) keeps λ for every N′. An unchanged N keeps λ under both rules.
    """
    check_resize_rule(rule)
    if rule == "keep" or new_slots == num_slots:
        return threshold
    return 0.0 if new_slots == 1 else threshold * num_slots / new_slots


class MemoryModule(nn.Module):
    """One memory of N slots × C channels with sparse soft addressing (Sec. 3).

    Works on flat latents (B, C) and on feature maps (B, C, *spatial), where every position is its own query
    against the same memory (as the official code does for the 3-D video model).

    Args:
        num_slots: N, the number of slots.
        slot_dim: C, the channels of a slot; must equal the encoder's output channels.
        shrink_threshold: λ of the hard shrinkage; 0 turns shrinkage and re-normalisation off (MemAE-nonSpar). Kept in a
            buffer, so it travels with the checkpoint (the official code does not save it).
        similarity: ``"cosine"`` (paper) or ``"dot"`` (official code).

    Shapes:
        z (B, C, *spatial) → ``BottleneckOutput(latent (B, C, *spatial), attention (B, N, *spatial), similarity)``.
    """

    def __init__(
        self,
        num_slots: int,
        slot_dim: int,
        shrink_threshold: float = DEFAULT_SHRINK_THRESHOLD,
        similarity: str = "cosine",
    ) -> None:
        super().__init__()
        if num_slots < 1 or slot_dim < 1:
            raise ValueError(f"num_slots and slot_dim must be positive, got {num_slots} and {slot_dim}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
        check_shrink_threshold(shrink_threshold, num_slots, similarity)
        self.similarity = similarity
        bound = 1.0 / math.sqrt(slot_dim)  # uniform(−1/√C, 1/√C), as the official code initialises it
        self.memory = nn.Parameter(torch.empty(num_slots, slot_dim).uniform_(-bound, bound))
        self.register_buffer("shrink_threshold", torch.tensor(float(shrink_threshold), dtype=torch.float64))

    @property
    def num_slots(self) -> int:
        """N, the number of slots."""
        return self.memory.shape[0]

    @property
    def slot_dim(self) -> int:
        """C, the channels of a slot."""
        return self.memory.shape[1]

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, slot_dim={self.slot_dim}, "
            f"shrink_threshold={float(self.shrink_threshold)}, similarity={self.similarity!r}"
        )

    def check_latent(self, z: torch.Tensor) -> None:
        """Raise a clear error when ``z`` is not (B, C, *spatial) with C = the slot width."""
        if z.ndim < 2 or z.shape[1] != self.slot_dim:
            raise ValueError(
                f"latent of shape {tuple(z.shape)} does not match the memory: expected (B, {self.slot_dim}, ...) "
                f"with {self.slot_dim} channels, the width of the {self.num_slots} memory slots"
            )

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """Similarities d(z, m_i) of queries (P, C) to every slot: (P, N)."""
        if self.similarity == "cosine":
            return F.normalize(queries, dim=1) @ F.normalize(self.memory, dim=1).T
        return queries @ self.memory.T

    def address(self, similarity: torch.Tensor) -> torch.Tensor:
        """Addressing weights ŵ (P, N) from similarities (P, N): softmax, then shrinkage and L1 norm if λ > 0."""
        weights = similarity.softmax(dim=1)
        threshold = float(self.shrink_threshold)
        if threshold > 0:
            weights = F.normalize(hard_shrink(weights, threshold), p=1, dim=1, eps=NORM_FLOOR)
        return weights

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """Read the memory for every query position of ``z`` (B, C, *spatial) or (B, C)."""
        self.check_latent(z)
        queries = z.movedim(1, -1).reshape(-1, self.slot_dim)
        similarity = self.scores(queries)
        weights = self.address(similarity)
        readout = (weights @ self.memory).reshape(*z.shape[:1], *z.shape[2:], self.slot_dim).movedim(-1, 1)
        return BottleneckOutput(readout, _slots_first(weights, z), _slots_first(similarity.detach(), z))


def _slots_first(rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-query rows (P, N) back to the layout of ``z``: (B, N, *spatial)."""
    return rows.reshape(*z.shape[:1], *z.shape[2:], rows.shape[1]).movedim(-1, 1)


class ConditionalMemory(nn.Module):
    """C-MemAE's bank of Y memories behind one encoder and decoder; each sample reads exactly one of them.

    The memory is chosen by ``condition`` (a memory index per sample: the class's position in the target group)
    or, when ``condition`` is None, by self-selection: the memory whose slots have the largest similarity to the
    query summed over all slots and positions (``selection="sum"``, C-MemAE code), or the memory holding the single
    most similar slot, similarities summed over positions (``"max"``, an alternative the C-MemAE code mentions but
    does not implement). Gradients reach only the chosen memory.

    Args:
        num_memories: Y, one memory per class of the target group (at least 1).
        num_slots, slot_dim, shrink_threshold, similarity: as for :class:`MemoryModule`, shared by all memories.
    """

    def __init__(
        self,
        num_memories: int,
        num_slots: int,
        slot_dim: int,
        shrink_threshold: float = DEFAULT_SHRINK_THRESHOLD,
        similarity: str = "cosine",
    ) -> None:
        super().__init__()
        if num_memories < 1:
            raise ValueError(f"num_memories must be positive, got {num_memories}")
        self.memories = nn.ModuleList(
            MemoryModule(num_slots, slot_dim, shrink_threshold, similarity) for _ in range(num_memories)
        )

    @property
    def num_memories(self) -> int:
        """Y, the number of memories."""
        return len(self.memories)

    def forward(
        self, z: torch.Tensor, condition: torch.Tensor | None = None, selection: str = "sum"
    ) -> BottleneckOutput:
        """Read memory ``condition[b]`` for sample b, or the self-selected one when ``condition`` is None.

        Args:
            z: encoding (B, C, *spatial).
            condition: (B,) memory indices in [0, Y), or None for self-selection.
            selection: self-selection criterion, ``"sum"`` or ``"max"`` (see the class docstring).
        """
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        outputs = [memory(z) for memory in self.memories]
        logits = torch.stack([_selection_logit(out.similarity, selection) for out in outputs], dim=1)
        if condition is None:
            selection = logits.argmax(dim=1)
        else:
            if condition.shape != z.shape[:1] or not bool(((condition >= 0) & (condition < len(outputs))).all()):
                raise ValueError(
                    f"condition must hold one memory index in [0, {len(outputs)}) per sample ({z.shape[0]}), "
                    f"got {condition.tolist()}"
                )
            selection = condition

        def pick(index: int) -> torch.Tensor:
            stacked = torch.stack([out[index] for out in outputs], dim=1)
            return stacked[torch.arange(len(selection), device=z.device), selection]

        return BottleneckOutput(pick(0), pick(1), pick(2), selection, logits)


def _selection_logit(similarity: torch.Tensor, selection: str) -> torch.Tensor:
    """Per-sample self-selection score of one memory from its similarities (B, N, *spatial): (B,)."""
    if selection == "sum":
        return similarity.flatten(1).sum(dim=1)
    return similarity.amax(dim=1).reshape(len(similarity), -1).sum(dim=1)
