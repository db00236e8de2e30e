"""Write CIFAR-10 / CIFAR-100 "python version" folders exactly as Krizhevsky distributes them.

The real batches are Python 2 cPickle files (protocol 2): byte strings are py2 ``str`` (opcodes ``U``/``T``,
which Python 3 reads as ``bytes`` with ``encoding="bytes"``) and the ``b"data"`` array is rebuilt through
``numpy.core.multiarray._reconstruct``. Python 3's pickler would write neither, so :func:`py2_pickle_bytes`
emits those opcodes itself.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_LABEL_NAMES = b"airplane automobile bird cat deer dog frog horse ship truck".split()
N_TRAIN_BATCHES = 5
FINE_PER_COARSE = 5
"""The writer's fine -> coarse map is ``fine // 5`` (100 fine classes, 20 superclasses, 5 each, as in CIFAR-100)."""


def py2_pickle_bytes(obj: Any) -> bytes:
    """Pickle ``obj`` as Python 2's cPickle (protocol 2) did: dicts, lists, ints, byte strings, None, uint8 arrays."""
    out: list[bytes] = [b"\x80\x02"]
    _emit(obj, out)
    out.append(b".")
    return b"".join(out)


def write_py2_pickle(path: Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` in Python 2 cPickle format (see :func:`py2_pickle_bytes`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_pickle_bytes(obj))


def save_cifar10(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``folder/cifar-10-batches-py/``: data_batch_1..5 (train split in 5 parts), test_batch, batches.meta.

    Args:
        folder: the dataset folder.
        splits: "train" and/or "test" -> (images uint8 (N, 3, 32, 32) RGB, labels (N,) in 0..9).
    """
    batches = folder / "cifar-10-batches-py"
    batch_size = 0
    for split, (images, labels) in splits.items():
        names = [f"data_batch_{i}" for i in range(1, N_TRAIN_BATCHES + 1)] if split == "train" else ["test_batch"]
        kind = "training" if split == "train" else "testing"
        parts = np.array_split(np.arange(len(images)), len(names))
        for number, (name, part) in enumerate(zip(names, parts, strict=True), start=1):
            batch = _batch_dict(f"{kind} batch {number} of {len(names)}", images[part], {b"labels": labels[part]})
            write_py2_pickle(batches / name, batch)
            batch_size = max(batch_size, len(part))
    meta = {b"num_cases_per_batch": batch_size, b"label_names": CIFAR10_LABEL_NAMES, b"num_vis": 3072}
    write_py2_pickle(batches / "batches.meta", meta)


def save_cifar100(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Write ``folder/cifar-100-python/``: the files train, test and meta.

    Args:
        folder: the dataset folder.
        splits: "train" and/or "test" -> (images uint8 (N, 3, 32, 32), fine labels (N,), coarse labels (N,)).
    """
    for split, (images, fine, coarse) in splits.items():
        kind = "training" if split == "train" else "testing"
        batch = _batch_dict(f"{kind} batch 1 of 1", images, {b"fine_labels": fine, b"coarse_labels": coarse})
        write_py2_pickle(folder / "cifar-100-python" / split, batch)
    meta = {
        b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(100 // FINE_PER_COARSE)],
    }
    write_py2_pickle(folder / "cifar-100-python" / "meta", meta)


def write_cifar10(folder: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write random CIFAR-10 train and test splits into ``folder``.

    Returns:
        split -> (images uint8 (N, 3, 32, 32), labels int64 (N,) in 0..9): what ``common.datasets.load`` must give.
    """
    rng = np.random.default_rng(seed)
    splits = {
        split: (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.int64))
        for split, n in (("train", n_train), ("test", n_test))
    }
    save_cifar10(folder, splits)
    return splits


def write_cifar100(
    folder: Path, n_train: int, n_test: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Write random CIFAR-100 train and test splits into ``folder``.

    Returns:
        split -> (images uint8 (N, 3, 32, 32), fine labels int64 (N,) in 0..99, coarse labels int64 (N,) in
        0..19, equal to ``fine // 5``).
    """
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n, dtype=np.int64)
        splits[split] = (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), fine, fine // FINE_PER_COARSE)
    save_cifar100(folder, splits)
    return splits


def _batch_dict(batch_label: str, images: np.ndarray, labels: dict[bytes, np.ndarray]) -> dict[bytes, Any]:
    """One batch: b"batch_label", the label lists, b"data" (rows of R, G, B planes), b"filenames"."""
    return {
        b"batch_label": batch_label.encode(),
        **{key: [int(label) for label in values] for key, values in labels.items()},
        b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1),
        b"filenames": [f"image_s_{i:06d}.png".encode() for i in range(len(images))],
    }


def _emit(obj: Any, out: list[bytes]) -> None:
    """Append the protocol-2 opcodes building ``obj`` to ``out``."""
    if obj is None:
        out.append(b"N")
    elif isinstance(obj, bool):
        out.append(b"\x88" if obj else b"\x89")
    elif isinstance(obj, int):
        out.append(b"J" + struct.pack("<i", obj))
    elif isinstance(obj, bytes):
        out.append(b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<I", len(obj)))
        out.append(obj)
    elif isinstance(obj, tuple):
        out.append(b"(")
        for item in obj:
            _emit(item, out)
        out.append(b"t")
    elif isinstance(obj, list):
        out.append(b"](")
        for item in obj:
            _emit(item, out)
        out.append(b"e")
    elif isinstance(obj, dict):
        out.append(b"}(")
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out.append(b"u")
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        _emit_uint8_array(obj, out)
    else:
        raise TypeError(f"cannot write {type(obj).__name__} in the CIFAR pickle format")


def _emit_uint8_array(array: np.ndarray, out: list[bytes]) -> None:
    """numpy 1.x's reduction of a uint8 array: ``_reconstruct(ndarray, (0,), b"b")``, then BUILD with its state
    ``(1, shape, dtype("u1"), False, raw bytes)``."""
    out.append(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
    _emit((0,), out)
    _emit(b"b", out)
    out.append(b"\x87R(")  # TUPLE3, REDUCE; MARK of the state tuple
    _emit(1, out)
    _emit(array.shape, out)
    out.append(b"cnumpy\ndtype\n")
    _emit((b"u1", 0, 1), out)
    out.append(b"R")
    _emit((3, b"|", None, None, None, -1, -1, 0), out)
    out.append(b"b")  # BUILD: dtype.__setstate__
    _emit(False, out)
    _emit(np.ascontiguousarray(array).tobytes(), out)
    out.append(b"tb")  # TUPLE, BUILD: ndarray.__setstate__
