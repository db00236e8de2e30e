"""Re-exports :mod:`common.fixtures.write_idx`, where the writers live (`python -m common.fixtures` uses them)."""

from common.fixtures.write_idx import (
    IDX_TYPE_CODES,
    SPLIT_PREFIXES,
    idx_bytes,
    save_idx_dataset,
    write_idx,
    write_idx_dataset,
)

__all__ = [
    "IDX_TYPE_CODES",
    "SPLIT_PREFIXES",
    "idx_bytes",
    "save_idx_dataset",
    "write_idx",
    "write_idx_dataset",
]
