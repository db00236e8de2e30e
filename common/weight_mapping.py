"""Copying another code's trained tensors into our models, or saying in one line what does not fit.

A loader of another code's files builds a *mapping*: for each of our state-dict keys, the file's name for the
tensor and the tensor itself (already converted to our layout). :func:`load_mapped` checks it against the model —
every key of ours has a tensor of our shape, and the file has no tensor left over — and copies it in, or raises
one :class:`~common.errors.DataError` listing what could not be mapped. :func:`load_renamed` does both steps for
files whose tensors differ from ours only by name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import torch
from torch import nn

from common.errors import DataError

Mapped = dict[str, tuple[str, torch.Tensor]]
"""Our state-dict key → (the file's name for the tensor, the tensor in our layout)."""

OPTIONAL_SUFFIX = "num_batches_tracked"
"""BatchNorm's batch counter: absent from files of old torch versions and unused by a trained model."""

MAX_LISTED = 3  # problems named in the one-line error; the rest are counted


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, tensor.shape)) + ")"


def as_state_dict(obj: object, path: object) -> dict[str, torch.Tensor]:
    """``obj`` as a state dict (names → tensors), DataParallel's ``module.`` prefixes removed.

    Raises:
        DataError: ``obj`` is not a mapping of names to tensors (the message names the first entry that is not).
    """
    expected = "expected a state dict (tensor names → tensors)"
    if not isinstance(obj, Mapping):
        raise DataError(path, f"{expected}, found a {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DataError(path, f"{expected}, found {key!r}: {type(value).__name__}")
    return {key.removeprefix("module."): value for key, value in obj.items()}


def mapping_problems(
    ours: Mapping[str, torch.Tensor], mapped: Mapped, missing: Mapping[str, str], extra: Collection[str]
) -> list[str]:
    """What keeps ``mapped`` from loading into a model with state dict ``ours``: the file's ``missing`` tensors (our
    key → the file's name it should have had) and ``extra`` ones, tensors for keys we do not have, shape mismatches
    and our other keys without a tensor."""
    problems = [f"missing tensor {name}" for key, name in missing.items() if not key.endswith(OPTIONAL_SUFFIX)]
    problems += [f"extra tensor {name}" for name in extra]
    for key, (name, tensor) in mapped.items():
        if key not in ours:
            problems.append(f"extra tensor {name} (our model has no {key})")
        elif tensor.shape != ours[key].shape:
            problems.append(f"tensor {name} has shape {_shape(tensor)}, our {key} needs {_shape(ours[key])}")
    unmapped = [key for key in ours if key not in mapped and key not in missing and not key.endswith(OPTIONAL_SUFFIX)]
    return problems + [f"no tensor in the file for our {key}" for key in unmapped]


def load_mapped(
    model: nn.Module,
    mapped: Mapped,
    path: object,
    missing: Mapping[str, str] | None = None,
    extra: Collection[str] = (),
    ours_only: Collection[str] = (),
) -> None:
    """Copy ``mapped`` into ``model``; keys in ``ours_only`` have no counterpart in the file and keep their values.

    Raises:
        DataError: one line naming ``path`` and the first problems of :func:`mapping_problems` (and how many more).
    """
    ours = {key: value for key, value in model.state_dict().items() if key not in ours_only}
    problems = mapping_problems(ours, mapped, missing or {}, extra)
    if problems:
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        listed = "; ".join(problems[:MAX_LISTED])
        raise DataError(path, f"cannot map onto our {type(model).__name__}: {listed}{more}")
    model.load_state_dict({key: tensor for key, (_, tensor) in mapped.items()}, strict=False)


def load_renamed(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    original_key: Callable[[str], str | None],
    path: object,
    ignored: Collection[str] = (),
) -> None:
    """Load the file's state dict ``state`` into ``model``, our key ``k`` taking the file's ``original_key(k)``
    (None: ours only, kept as built); the file's ``ignored`` keys (e.g. a loss's constants) are not extra."""
    names = {key: original_key(key) for key in model.state_dict()}
    wanted = {key: name for key, name in names.items() if name is not None}
    mapped = {key: (name, state[name]) for key, name in wanted.items() if name in state}
    missing = {key: name for key, name in wanted.items() if name not in state}
    extra = sorted(set(state) - set(wanted.values()) - set(ignored))
    ours_only = [key for key, name in names.items() if name is None]
    load_mapped(model, mapped, path, missing, extra, ours_only)
