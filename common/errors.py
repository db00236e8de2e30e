"""Error types shared by the suite: each says what was expected and where."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or of the wrong shape.

    The message always names the file and what was expected of it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self._arguments: tuple = (path, problem)
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple:
        # Rebuilt from the constructor's own arguments (a cell's error travels from a worker process as a pickle).
        return type(self), self._arguments


class MissingDataError(DataError, FileNotFoundError):
    """A required file is absent; the message says which file to put where (and where it comes from)."""

    def __init__(self, path: str | Path, how_to_get: str = "") -> None:
        hint = f" {how_to_get}" if how_to_get else ""
        super().__init__(path, f"file not found.{hint}")
        self._arguments = (path, how_to_get)


class MissingFilesError(MissingDataError):
    """Several required files are absent: ``paths`` are all of them, ``path`` the first; the message (several lines)
    says where each goes and how to get it."""

    def __init__(self, paths: Sequence[str | Path], listing: str) -> None:
        ValueError.__init__(self, listing)  # the listing as it is, not "<path>: <problem>"
        self.paths = tuple(Path(path) for path in paths)
        self.path = self.paths[0]
        self._arguments = (paths, listing)


class DownloadError(DataError):
    """A download failed or its checksum did not match."""


class UsageError(ValueError):
    """A command-line option or a run folder that cannot be used as asked; the message says what and why.

    ``main.py`` prints it as one line and exits with status 2.
    """
