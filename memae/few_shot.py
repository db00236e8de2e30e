"""C-MemAE's memory-initialisation strategies for few-shot transfer to a new normal class (reference note §3.8).

Each strategy takes a pretrained model (a single-memory MemAE or a conditional C-MemAE) and the k training images
of the new class, and returns the model to fine-tune: a copy, the pretrained one is left untouched. Encodings are
computed in eval mode, batched and without gradients (the C-MemAE code encoded in train mode, which updated the
BatchNorm statistics on the few shots, and in one unbatched pass). A strategy that changes the number of slots N
sets λ by the rule ``threshold_on_resize`` (:func:`memae.memory.resized_threshold`): λ·N is kept by default
(paper), so λ = 1/N becomes 1/N′; C-MemAE kept λ as it was (``"keep"``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from memae.memory import DEFAULT_RESIZE_RULE, ConditionalMemory, MemoryModule, resized_threshold
from memae.models import Autoencoder

ENCODE_BATCH = 256


@dataclass(frozen=True)
class Strategy:
    """A few-shot strategy: its label in the table, which pretrained model it starts from, whether it trains.

    ``apply(model, shots, threshold_on_resize)`` returns the model to fine-tune.
    """

    label: str
    source: str  # "single" (MemAE of one class) or "conditional" (C-MemAE of a group)
    trains: bool
    apply: Callable[[Autoencoder, torch.Tensor, str], Autoencoder]


def _single_memory(model: Autoencoder) -> MemoryModule:
    if not isinstance(model.bottleneck, MemoryModule):
        raise ValueError(f"this strategy needs a single-memory MemAE, got a {type(model.bottleneck).__name__}")
    return model.bottleneck


def _conditional_memory(model: Autoencoder) -> ConditionalMemory:
    if not isinstance(model.bottleneck, ConditionalMemory):
        raise ValueError(f"this strategy needs a conditional C-MemAE, got a {type(model.bottleneck).__name__}")
    return model.bottleneck


@torch.no_grad()
def encode_queries(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """Every query vector of the encodings of ``images``: (k · positions, C), in eval mode and batches."""
    if len(images) == 0:
        raise ValueError("no few-shot images to encode")
    model.eval()
    encodings = torch.cat([model.encoder(chunk) for chunk in images.split(ENCODE_BATCH)])
    return encodings.movedim(1, -1).reshape(-1, encodings.shape[1])


def memory_like(
    template: MemoryModule,
    num_slots: int,
    slots: torch.Tensor | None = None,
    threshold_on_resize: str = DEFAULT_RESIZE_RULE,
) -> MemoryModule:
    """A new memory with ``template``'s width and similarity, ``num_slots`` slots (random, or ``slots``) and
    ``template``'s λ, re-scaled by ``threshold_on_resize`` when ``num_slots`` differs from its N."""
    threshold = resized_threshold(float(template.shrink_threshold), template.num_slots, num_slots, threshold_on_resize)
    memory = MemoryModule(num_slots, template.slot_dim, threshold, template.similarity)
    memory = memory.to(template.memory.device)
    if slots is not None:
        with torch.no_grad():
            memory.memory.copy_(slots)
    return memory


def _replaced(model: Autoencoder, bottleneck: MemoryModule) -> Autoencoder:
    new = copy.deepcopy(model)
    new.bottleneck = bottleneck
    return new


def transfer(model: Autoencoder, images: torch.Tensor, threshold_on_resize: str = DEFAULT_RESIZE_RULE) -> Autoencoder:
    """ "Transfer Learning": fine-tune the pretrained encoder, decoder and memory as they are."""
    _single_memory(model)
    return copy.deepcopy(model)


def delete_memory(
    model: Autoencoder, images: torch.Tensor, threshold_on_resize: str = DEFAULT_RESIZE_RULE
) -> Autoencoder:
    """ "Delete Memory": keep encoder and decoder, re-draw the memory uniformly (same N)."""
    memory = _single_memory(model)
    return _replaced(model, memory_like(memory, memory.num_slots))


def copy_samples(
    model: Autoencoder, images: torch.Tensor, threshold_on_resize: str = DEFAULT_RESIZE_RULE
) -> Autoencoder:
    """ "Copy Samples": a new memory whose slots are the encodings of the few shots (N = k · positions)."""
    queries = encode_queries(model, images)
    return _replaced(model, memory_like(_single_memory(model), len(queries), queries, threshold_on_resize))


def copy_best_fitting(
    model: Autoencoder, images: torch.Tensor, threshold_on_resize: str = DEFAULT_RESIZE_RULE
) -> Autoencoder:
    """ "Copy Best Fitting from Conditional Memory": per few-shot query, the slot of any of the Y memories with the
    highest pre-softmax similarity; those slots (duplicates kept) form a new single memory (N = k · positions)."""
    bank = _conditional_memory(model)
    queries = encode_queries(model, images)
    slots = torch.cat([memory.memory.detach() for memory in bank.memories])
    similarity = torch.cat([memory.scores(queries) for memory in bank.memories], dim=1)
    best = slots[similarity.argmax(dim=1)]
    return _replaced(model, memory_like(bank.memories[0], len(queries), best, threshold_on_resize))


def conditional_to_deleted(
    model: Autoencoder, images: torch.Tensor, threshold_on_resize: str = DEFAULT_RESIZE_RULE
) -> Autoencoder:
    """ "Delete Memory" for a C-MemAE: one fresh random single memory with the same N replaces the bank."""
    template = _conditional_memory(model).memories[0]
    return _replaced(model, memory_like(template, template.num_slots))


def freeze(model: Autoencoder, images: torch.Tensor, threshold_on_resize: str = DEFAULT_RESIZE_RULE) -> Autoencoder:
    """ "Freeze": the pretrained single-memory model evaluated on the new class without training."""
    _single_memory(model)
    frozen = copy.deepcopy(model)
    frozen.requires_grad_(False)
    return frozen


STRATEGIES: dict[str, Strategy] = {
    "transfer": Strategy("Transfer Learning", "single", True, transfer),
    "delete_memory": Strategy("Delete Memory", "single", True, delete_memory),
    "copy_samples": Strategy("Copy Samples", "single", True, copy_samples),
    "conditional_copy_best_fitting": Strategy(
        "Copy Best Fitting from Conditional Memory", "conditional", True, copy_best_fitting
    ),
    "conditional_to_deleted": Strategy("Delete Memory (from C-MemAE)", "conditional", True, conditional_to_deleted),
    "freeze": Strategy("Freeze", "single", False, freeze),
}
