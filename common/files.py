"""Writing files so that a reader never sees half of one: write beside the target, then rename over it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from datetime import datetime
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


def torch_save_atomically(value: Any, path: str | Path) -> Path:
    """``torch.save`` ``value`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    import torch  # here, so that the plain file helpers above do not load torch

    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(value, handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class FileLock:
    """An exclusive ``flock`` on a file; the operating system releases it when the process ends, however it ends.

    The file says who holds it (process id, host, since when), for messages. As a context manager it waits for the
    lock. Needs a file system with working ``flock`` (local disks, NFSv4, Lustre mounted with ``flock``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._descriptor: int | None = None

    def __enter__(self) -> FileLock:
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self, wait: bool = False) -> bool:
        """Take the lock; without ``wait``, return False at once if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            return False
        os.ftruncate(descriptor, 0)
        started = datetime.now().isoformat(timespec="seconds")
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        self._descriptor = descriptor
        return True

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a process about to lock it)."""
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None

    def holder(self) -> str:
        """Who holds or last held the lock, as its file says."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def is_held_elsewhere(self) -> bool:
        """Whether another process holds the lock now; asked with a shared lock, so a runner is not disturbed."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)  # closing drops the shared lock
        return False
