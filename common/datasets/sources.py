"""Where each dataset comes from: URLs and checksums published by its owners, or instructions to place it."""

from __future__ import annotations


def how_to_get(name: str) -> str:
    """One sentence telling the user how to obtain dataset ``name`` (download command or manual placement)."""
    return f"Place the files of {name!r} there as their owners distribute them."
