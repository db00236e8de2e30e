"""Re-exports :mod:`common.fixtures.write_lsun`, where the writers live (`python -m common.fixtures` uses them)."""

from common.fixtures.write_lsun import (
    LOSSLESS,
    encode,
    image_key,
    lsun_folder,
    write_lsun_category,
    write_lsun_values,
)

__all__ = [
    "LOSSLESS",
    "encode",
    "image_key",
    "lsun_folder",
    "write_lsun_category",
    "write_lsun_values",
]
