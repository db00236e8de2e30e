"""``--set KEY=VALUE`` and ``--show-config``: a resolved configuration overridden and printed through OmegaConf.

An experiment's configuration is a tree of frozen dataclasses; OmegaConf's structured configs check every override
against the field's annotation (``int``, ``float``, ``str | None``, ``Literal[...]``, tuples, nested dataclasses)
and the tree is converted back to the same dataclasses, whose ``__post_init__`` checks run again.

- KEY is a dotted path into the tree; a tuple's items are numbered from 0 (``datasets.0.epochs``) and a mapping's
  keys are used as they are (``methods.Digits 0-5.0.margin``).
- VALUE is YAML: ``3``, ``1e-3``, ``true``, ``null``, ``additive``, ``[svhn, lsun]``, ``{hidden: 64}``.
- A tuple is replaced whole (``data.ood=[svhn, lsun]``): its items cannot be set one by one.
- Overrides apply in the order given, after ``--scale``, ``--seeds`` and ``--epochs``.

Dataset fields are declared with ``field(metadata=dataset_field(SPLIT, ...))``; they hold a dataset name, a tuple of
names, or a tuple of (table name, dataset name) pairs. An override may put there a dataset registered in
:data:`common.datasets.DATASETS` that has every split the field reads (an in-distribution set needs train and test,
an OOD test set test), or a name the configuration already holds in a dataset field (a paper's generated demo
stand-ins, such as InvGlow's ``digits-rgb``).

OmegaConf is imported on first use, so that ``python main.py --help`` does not load it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from common.errors import UsageError

Config = TypeVar("Config")
DATASET_SPLITS = "dataset_splits"
"""The ``dataclasses.field`` metadata key of a field that holds dataset names: the splits it reads."""
_SCALARS = {
    int: "an int",
    float: "a number",
    bool: "true or false",
    str: "a string",
    typing.Any: "any value",
    object: "any value",
}


def dataset_field(*splits: str) -> dict[str, tuple[str, ...]]:
    """The metadata of a field holding dataset names that reads ``splits`` of each (``field(metadata=...)``)."""
    return {DATASET_SPLITS: splits}


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """``config`` with each ``KEY=VALUE`` of ``overrides`` applied, as the same (frozen) dataclasses.

    Raises:
        UsageError: one line naming the override and what was expected: no ``=``, an unknown key, a value of the
            wrong type, not YAML, refused by the configuration's own checks, or not a dataset of the suite.
    """
    tree = _writable(config)
    for item in overrides:
        _merge(tree, item, config)
    result = _to_object(tree, overrides)
    _check_datasets(config, result)
    return result


def show_config(config: Any) -> str:
    """``config`` as YAML, the form ``--set`` takes its keys and values in."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _writable(config: Any) -> Any:
    """The structured config of ``config``, with the read-only flag of its frozen dataclasses lifted."""
    from omegaconf import DictConfig, OmegaConf

    def lift(node: Any) -> None:
        OmegaConf.set_readonly(node, False)
        for child in node.values() if isinstance(node, DictConfig) else node:
            if OmegaConf.is_config(child):
                lift(child)

    tree = OmegaConf.structured(config)
    lift(tree)
    return tree


def _merge(tree: Any, item: str, config: Any) -> None:
    """Apply one ``KEY=VALUE`` to ``tree``; ``config`` (the dataclasses) names the expected type on an error."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    key, equals, value = item.partition("=")
    if not equals or not key.strip():
        raise UsageError(f"--set {item}: expected KEY=VALUE, e.g. --set train.batch_size=64")
    try:
        tree.merge_with_dotlist([f"{key.strip()}={value}"])
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, TypeError, LookupError) as error:
        raise UsageError(f"--set {item}: {_explain(error, key.strip(), value, config)}") from None


def _explain(error: Exception, key: str, value: str, config: Any) -> str:
    """Why ``key=value`` could not be set, in words: what the key is or the field takes."""
    import yaml
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ConfigTypeError

    if isinstance(error, yaml.YAMLError):
        return f"{value!r} is not a YAML value (quote text holding [ ] {{ }} , or :)"
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)):
        return f"no key {key}; {_keys_near(config, key)}"
    if isinstance(error, ConfigTypeError) and "immutable" in str(error):
        whole = _tuple_key(getattr(error, "full_key", "") or key)
        return f"{whole} is a tuple, set whole: --set {whole}=[...]"
    expected = _expected(config, key)
    return f"{key} expects {expected}" if expected else _first_line(error)


def _to_object(tree: Any, overrides: Sequence[str]) -> Any:
    """The dataclasses of ``tree``; a check of their own (``__post_init__``) that fails is a UsageError."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_object(tree)
    except (ValueError, TypeError) as error:
        flags = " ".join(f"--set {item}" for item in overrides)
        raise UsageError(f"{flags}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _tuple_key(full_key: str) -> str:
    """The tuple holding OmegaConf's ``full_key`` (``datasets[0].mean[1]`` → ``datasets.0.mean``)."""
    dotted = re.sub(r"\[(\d+)\]", r".\1", full_key)
    return dotted.rsplit(".", 1)[0]


def _walk(config: Any, parts: Sequence[str]) -> Any:
    """The object at ``parts`` of the dataclass tree ``config``; LookupError when there is none."""
    node = config
    for part in parts:
        if dataclasses.is_dataclass(node):
            if part not in {item.name for item in dataclasses.fields(node)}:
                raise LookupError(part)
            node = getattr(node, part)
        elif isinstance(node, Mapping):
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit():
            node = node[int(part)]
        else:
            raise LookupError(part)
    return node


def _keys_near(config: Any, key: str) -> str:
    """What the deepest existing part of ``key`` holds: ``"keys of glow: channels, image_size, ..."``."""
    parts = key.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        try:
            node = _walk(config, parts[:depth])
        except LookupError:
            continue
        where = ".".join(parts[:depth]) or "the configuration"
        if dataclasses.is_dataclass(node):
            return f"keys of {where}: {', '.join(item.name for item in dataclasses.fields(node))}"
        if isinstance(node, Mapping):
            return f"keys of {where}: {', '.join(map(str, node))}"
        if isinstance(node, Sequence) and not isinstance(node, str):
            return f"{where} has items 0 to {len(node) - 1}"
        return f"{where} is {type(node).__name__}, not a tree of keys"
    return "--show-config prints the keys"


def _expected(config: Any, key: str) -> str | None:
    """What the field at ``key`` takes, from its annotation (None: not a dataclass field)."""
    *parents, name = key.split(".")
    try:
        owner = _walk(config, parents)
    except LookupError:
        return None
    if not dataclasses.is_dataclass(owner):
        return None
    annotation = typing.get_type_hints(type(owner)).get(name)
    return None if annotation is None else _describe(annotation)


def _describe(annotation: Any) -> str:
    """A type annotation in words: ``int | None`` → ``"an int or null"``, ``Literal["a", "b"]`` → ``"one of a, b"``."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return f"one of {', '.join(map(str, arguments))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(argument) for argument in arguments)
    if origin is list or (origin is tuple and arguments[-1:] == (Ellipsis,)):
        return f"a list of {_plural(_describe(arguments[0]))}"
    if origin is tuple:
        return f"[{', '.join(_describe(argument) for argument in arguments)}]"
    if origin is dict:
        return f"a mapping to {_plural(_describe(arguments[1]))}"
    if dataclasses.is_dataclass(annotation):
        return f"a {annotation.__name__} mapping"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(description: str) -> str:
    """``"an int"`` → ``"ints"``, ``"one of a, b"`` → ``"values from a, b"``; other descriptions are kept."""
    if description.startswith("one of "):
        return "values from " + description.removeprefix("one of ")
    for article in ("a ", "an "):
        if description.startswith(article) and " " not in description[len(article) :]:
            return description[len(article) :] + "s"
    return description


def _check_datasets(original: Any, config: Any) -> None:
    """Refuse a dataset field of ``config`` naming a dataset that is neither registered with the field's splits nor
    already in a dataset field of ``original``."""
    from common.datasets import DATASETS

    known = {name for _, _, names in _dataset_fields(original) for name in names}
    for key, splits, names in _dataset_fields(config):
        for name in (name for name in names if name not in known):
            if name not in DATASETS:
                raise UsageError(f"--set {key}: {name!r} is not a dataset of the suite (`python main.py list`)")
            missing = [split for split in splits if split not in DATASETS[name].splits]
            if missing:
                raise UsageError(
                    f"--set {key}: dataset {name} has no {' or '.join(missing)} split (splits: "
                    f"{', '.join(DATASETS[name].splits)}); {key} reads {', '.join(splits)}"
                )


def _dataset_fields(node: Any, prefix: str = "") -> Iterator[tuple[str, tuple[str, ...], list[str]]]:
    """(dotted key, splits read, dataset names) of every dataset field in the dataclass tree ``node``."""
    if dataclasses.is_dataclass(node):
        for item in dataclasses.fields(node):
            key, value = f"{prefix}{item.name}", getattr(node, item.name)
            if DATASET_SPLITS in item.metadata:
                yield key, item.metadata[DATASET_SPLITS], _names(value)
            else:
                yield from _dataset_fields(value, f"{key}.")
    elif isinstance(node, Mapping):
        for name, value in node.items():
            yield from _dataset_fields(value, f"{prefix}{name}.")
    elif isinstance(node, (tuple, list)):
        for index, value in enumerate(node):
            yield from _dataset_fields(value, f"{prefix}{index}.")


def _names(value: Any) -> list[str]:
    """The dataset names of a dataset field: a name, names, or (table name, dataset name) pairs; None: none."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [item if isinstance(item, str) else item[-1] for item in value]
