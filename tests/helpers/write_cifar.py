"""Re-exports :mod:`common.fixtures.write_cifar`, where the writers live (`python -m common.fixtures` uses them)."""

from common.fixtures.write_cifar import (
    CIFAR10_LABEL_NAMES,
    FINE_PER_COARSE,
    N_TRAIN_BATCHES,
    py2_pickle_bytes,
    save_cifar10,
    save_cifar100,
    write_cifar10,
    write_cifar100,
    write_py2_pickle,
)

__all__ = [
    "CIFAR10_LABEL_NAMES",
    "FINE_PER_COARSE",
    "N_TRAIN_BATCHES",
    "py2_pickle_bytes",
    "save_cifar10",
    "save_cifar100",
    "write_cifar10",
    "write_cifar100",
    "write_py2_pickle",
]
