"""Re-exports :mod:`common.fixtures.write_svhn`, where the writers live (`python -m common.fixtures` uses them)."""

from common.fixtures.write_svhn import (
    save_svhn,
    write_svhn,
)

__all__ = [
    "save_svhn",
    "write_svhn",
]
