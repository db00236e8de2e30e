"""Writing files so that a reader never sees half of one: write beside the target, then rename over it.

The atomic writers give the new file the mode an ordinary ``open`` would (``0o666`` less the umask, not the
``0o600`` of ``mkstemp``), so a group sharing a runs folder can read it, and ``fsync`` the file before the
rename and the folder after it, so that after a power cut the file is either the old one or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# What torch's zip writer says when the file system takes fewer bytes than it wrote (a full disk).
_SHORT_WRITE_MESSAGES = ("unexpected pos", "file write failed", "No space left on device")


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (UTF-8) with :func:`write_bytes_atomically`."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    An interruption leaves either the old file or the new one, never a partial file or a stray temporary. The
    file gets the umask's mode and reaches the disk before it is renamed (module docstring).

    Raises:
        OSError: the file could not be written (e.g. the disk is full); the error names ``path``.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, new_file_mode())
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    fsync_folder(path.parent)
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
        os.fchmod(descriptor, new_file_mode())
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(value, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if is_disk_full(error):
            raise OSError(errno.ENOSPC, f"the disk is full; {path} was not written", str(path)) from error
        raise
    fsync_folder(path.parent)
    return path


def umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``; elsewhere set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)  # no way to read it without setting it: restore it at once
    os.umask(current)
    return current


def new_file_mode() -> int:
    """The mode ``open`` gives a new file: ``0o666`` less the umask (``mkstemp`` would give ``0o600``)."""
    return 0o666 & ~umask()


def new_folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777`` less the umask (``mkdtemp`` would give ``0o700``)."""
    return 0o777 & ~umask()


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems do not sync folders; the rename itself is still atomic
    finally:
        os.close(descriptor)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full: ENOSPC / EDQUOT, or torch's short write."""
    if isinstance(error, OSError):
        return error.errno in _DISK_FULL_ERRNOS
    if isinstance(error, RuntimeError):
        return any(message in str(error) for message in _SHORT_WRITE_MESSAGES)
    return False


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
