"""Re-exports :mod:`common.fixtures.write_tinyimagenet`, where the writer lives (`python -m common.fixtures`)."""

from common.fixtures.write_tinyimagenet import (
    BOX,
    WrittenImage,
    write_tinyimagenet,
)

__all__ = [
    "BOX",
    "WrittenImage",
    "write_tinyimagenet",
]
