"""The Tiny model's per-image log-densities on the evaluated sets, computed once and reused.

Every finetuning cell scores its model against the Tiny model it started from (the likelihood ratio, and the
outlier-loss variants' ratio rows), so it needs the Tiny model's log-densities on its evaluation images. The Tiny
pretraining cell has them already: it evaluates the Tiny model on the Tiny test set and on every OOD set, and every
in-distribution set is one of them. It saves them per set (:data:`BASE_LIKELIHOODS` in its folder, beside
``model.pt``), each with a fingerprint of the images it scored, and a finetuning cell whose evaluation sets all
match (same images, in the same order) takes them instead of running the Tiny model again: a third of a finetuning
cell's evaluation. Where a set does not match or the file is absent (a run from before this file existed), the cell
computes them, once per cell, however many times it evaluates.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from common.files import torch_save_atomically
from invglow.data import EvalSets

BASE_LIKELIHOODS = "base-likelihoods.pt"
"""``{set name: {"fingerprint": str, "log_densities": (n, L) tensor}}`` in a Tiny pretraining cell's folder."""


def fingerprint(images: torch.Tensor) -> str:
    """SHA-256 of ``images``' shape, dtype and bytes: equal for the same images in the same order."""
    digest = hashlib.sha256(f"{tuple(images.shape)} {images.dtype}".encode())
    digest.update(images.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def save(folder: Path, evaluation: EvalSets, log_densities: torch.Tensor) -> Path:
    """Write the per-set ``log_densities`` (N, L) of ``evaluation``'s images to ``folder``/:data:`BASE_LIKELIHOODS`."""
    per_set = {}
    for index, name in enumerate(evaluation.names):
        chosen = evaluation.set_ids == index
        per_set[name] = {
            "fingerprint": fingerprint(evaluation.images[chosen]),
            "log_densities": log_densities[chosen].clone(),
        }
    return torch_save_atomically(per_set, Path(folder) / BASE_LIKELIHOODS)


def load(folder: Path, evaluation: EvalSets) -> torch.Tensor | None:
    """The (N, L) log-densities of ``evaluation``'s images saved in ``folder``, in their order; None unless the
    file holds every set of ``evaluation`` with the same images."""
    path = Path(folder) / BASE_LIKELIHOODS
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index, name in enumerate(evaluation.names):
        chosen = evaluation.set_ids == index
        entry = saved.get(name)
        if entry is None or entry["fingerprint"] != fingerprint(evaluation.images[chosen]):
            return None
        parts.append((chosen, entry["log_densities"]))
    found = torch.empty(len(evaluation.set_ids), *parts[0][1].shape[1:], dtype=parts[0][1].dtype)
    for chosen, values in parts:
        found[chosen] = values
    return found
