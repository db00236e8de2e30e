"""Reading pickles from elsewhere without running their code.

Unpickling calls whatever global a pickle names, so a file that did not come from this suite is read with a
:class:`RestrictedUnpickler`: its ``find_class`` returns only

- the objects of an allow-list (the functions that rebuild tensors or arrays, plain containers), and
- for the classes of code that is never imported (another project's models, a training framework's records),
  an inert :class:`StandIn` subclass that only records the arguments and the state the pickle hands it;

any other name is refused before anything is called, with an error naming it. :func:`load_torch_file` reads a
``torch.save`` file (zip or legacy format) this way, onto the CPU. The stand-ins of ``nn.Module`` objects hold the
module's ``__dict__``; :func:`children`, :func:`own_tensors` and :func:`named_modules` read it.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
import warnings
from collections import OrderedDict
from collections.abc import Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import torch

from common.errors import DataError, MissingDataError

TENSOR_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
}
"""What a ``torch.save`` of tensors, parameters and ``nn.Module`` state needs (storages are resolved by torch)."""

PLAIN_TYPES: dict[tuple[str, str], type] = {
    ("builtins", t.__name__): t for t in (dict, list, tuple, int, float, str, bool)
}
"""Built-in data types, as records of other libraries name them (e.g. omegaconf's ``object_type``)."""


class StandIn:
    """An inert record of a pickled object whose class is not imported: ``args`` from its construction (NEWOBJ or
    REDUCE) and ``state`` from BUILD (an ``nn.Module``'s ``__dict__``); it runs no code of that class."""

    original: ClassVar[str] = ""  # "module.Name" as the pickle spells it

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        instance = super().__new__(cls)
        instance.args, instance.state = args, {}
        return instance

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.original}>"


@cache
def stand_in_class(module: str, name: str) -> type[StandIn]:
    """The stand-in class for ``module.name`` (one per name, so that ``type(a) is type(b)`` compares classes)."""
    return type(name, (StandIn,), {"original": f"{module}.{name}", "__module__": __name__})


def _within(module: str, packages: Collection[str]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def python3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 spelling of a global that a protocol-2 pickle names as Python 2 did (``__builtin__.set``), as
    ``pickle.Unpickler.find_class`` translates it."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves the names of ``allowed`` and stands in for the classes of ``stand_in_packages``; refuses the rest.

    Subclasses set the three class attributes (:func:`restricted_unpickler` makes them).
    """

    allowed: ClassVar[Mapping[tuple[str, str], Any]] = {}
    stand_in_packages: ClassVar[tuple[str, ...]] = ()
    refusal: ClassVar[str] = "not an allowed name"

    def find_class(self, module: str, name: str) -> Any:
        module, name = python3_name(module, name)
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if _within(module, self.stand_in_packages):
            return stand_in_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: {self.refusal}")


def restricted_unpickler(
    allowed: Mapping[tuple[str, str], Any], refusal: str, stand_in_packages: Collection[str] = ()
) -> type[RestrictedUnpickler]:
    """A :class:`RestrictedUnpickler` subclass: ``allowed`` maps (module, name) to the object to return,
    ``stand_in_packages`` (e.g. ``"invglow.invertible"``) name the packages whose classes become stand-ins, and
    ``refusal`` ends the error for any other name ("refusing to load os.system: <refusal>")."""
    attributes = {"allowed": dict(allowed), "stand_in_packages": tuple(stand_in_packages), "refusal": refusal}
    return type("RestrictedUnpickler", (RestrictedUnpickler,), attributes)


def _pickle_module(unpickler: type[pickle.Unpickler]) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose every read goes through ``unpickler``."""
    module = types.ModuleType("restricted_pickle")

    def load(file: BinaryIO, **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    module.Unpickler, module.load = unpickler, load
    return module


def load_torch_file(path: str | Path, unpickler: type[pickle.Unpickler]) -> Any:
    """The object ``torch.save`` wrote to ``path``, unpickled by ``unpickler``, its tensors on the CPU.

    Raises:
        MissingDataError: no such file.
        DataError: a refused name (the message names it) or a file torch cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(path)
    try:
        with warnings.catch_warnings():  # legacy files: stand-in classes have no source to compare with the saved one
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code for container")
            return torch.load(path, map_location="cpu", pickle_module=_pickle_module(unpickler), weights_only=False)
    except pickle.UnpicklingError as error:
        raise DataError(path, str(error)) from error
    # A damaged file fails with almost any exception type (RuntimeError, EOFError, KeyError, ...).
    except Exception as error:
        raise DataError(path, f"not a readable torch file ({type(error).__name__}: {error})") from error


def _state(obj: Any) -> Mapping[str, Any]:
    state = obj.state if isinstance(obj, StandIn) else None
    return state if isinstance(state, Mapping) else {}


def attribute(obj: Any, name: str, default: Any = None) -> Any:
    """The attribute ``name`` a stand-in's pickled state holds, or ``default``."""
    return _state(obj).get(name, default)


def children(obj: Any) -> dict[str, StandIn]:
    """The sub-modules (``_modules``) of a stand-in ``nn.Module``, in registration order, without empty slots."""
    modules = _state(obj).get("_modules")
    if not isinstance(modules, Mapping):
        return {}
    return {str(name): child for name, child in modules.items() if isinstance(child, StandIn)}


def own_tensors(obj: Any) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a stand-in ``nn.Module`` itself (not of its sub-modules)."""
    tensors: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        values = _state(obj).get(kind)
        if isinstance(values, Mapping):
            tensors.update({str(k): v for k, v in values.items() if isinstance(v, torch.Tensor)})
    return tensors


def named_modules(obj: StandIn, prefix: str = "") -> list[tuple[str, StandIn]]:
    """``obj`` and every stand-in module under it with the first state-dict path that reaches it, in the order of
    ``nn.Module.named_modules`` (a module shared by several parents is listed once)."""
    found: list[tuple[str, StandIn]] = []
    seen: set[int] = set()
    pending = [(prefix, obj)]
    while pending:
        path, module = pending.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append((path, module))
        pending += [(f"{path}.{name}" if path else name, child) for name, child in reversed(children(module).items())]
    return found
