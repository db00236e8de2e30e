"""Writing files so that a reader never sees half of one: write beside the target, then rename over it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    An interruption leaves either the old file or the new one, never a partial file or a stray temporary.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | Path, content: Any) -> Path:
    """Write ``content`` as indented JSON (other values as text) with :func:`write_text_atomically`."""
    return write_text_atomically(path, json.dumps(content, indent=2, default=str) + "\n")
