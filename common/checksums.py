"""Checksum lists in ``sha256sum`` format (``<64 hex digits>  <file name>`` per line), as ``sha256sum -c`` reads.

``folder_locations.checksum_overrides()`` names such a list whose checksums replace the pinned ones of the weight
files it names (``python -m common.fixtures`` writes one for its stand-in weights).
"""

from __future__ import annotations

import re
from pathlib import Path

from common.errors import DataError

_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *]([^/\\]+)")


def read_sha256sums(path: Path) -> dict[str, str]:
    """File name → lowercase sha256 of a ``sha256sum``-format file (blank lines skipped).

    Raises:
        DataError: the file is missing or a line is not ``<64 hex digits>  <plain file name>``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(path, f"not a readable checksum list ({error})") from error
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.strip())
        if match is None:
            raise DataError(path, f"line {number} is not '<sha256>  <file name>': {line[:80]!r}")
        sums[match.group(2)] = match.group(1).lower()
    return sums
