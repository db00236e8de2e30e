"""Error types shared by the suite: each says what was expected and where."""

from __future__ import annotations

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


class DownloadError(DataError):
    """A download failed or its checksum did not match."""


class UsageError(ValueError):
    """A command-line option or a run folder that cannot be used as asked; the message says what and why.

    ``main.py`` prints it as one line and exits with status 2.
    """
