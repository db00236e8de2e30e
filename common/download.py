"""Checksummed, resumable downloads and safe archive extraction (standard library only, plus tqdm).

``download`` streams a URL to ``<destination>.part``, resumes that partial file with an HTTP Range request on
the next call, verifies md5 / sha256 and only then renames it into place, so a destination that exists is
always complete. ``extract`` unpacks tar and zip archives after refusing any member that could write outside
the destination (absolute paths, ``..``, links, device files) and any archive that would unpack to more than
expected, staging everything in a hidden folder beside the destination. That folder is the extraction's
journal: it exists from the first byte unpacked until the last top-level entry is moved into place, so an
extraction killed at any point (even between the moves of a multi-folder archive) is seen by
:func:`extraction_interrupted`, and the next extraction of the same archive removes it first. Both serve datasets
and pretrained weights alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from common.errors import DataError, DownloadError, MissingDataError

CHUNK_BYTES = 1 << 20
USER_AGENT = "ood-repro (python urllib)"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
# Python >= 3.10.12 / 3.11.4 ship tarfile extraction filters; "data" is a second line of defence behind our own
# member checks (which are what protect older interpreters).
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
# Unpacked-size cap when the caller gives none: real image archives unpack to 1-2× their size; a "bomb" to 1000×.
MAX_EXPANSION = 50
MIN_UNPACKED_LIMIT = 64 << 20
_STAGING_SUFFIX = ".extracting"


def download(
    url: str,
    destination: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``destination``, resuming a previous partial download, and verify its checksum.

    Bytes go to ``<destination>.part``; an existing ``.part`` is resumed with an HTTP Range request (a server
    that ignores the range restarts it from zero). After the checksum matches, the file is renamed atomically.
    If ``destination`` already exists and matches the checksum (or no checksum is given), nothing is fetched.

    Args:
        url: Address of the file (http, https or file).
        destination: Path of the finished file; its folder is created.
        md5: Expected hex md5 digest, or None.
        sha256: Expected hex sha256 digest, or None.
        progress: Show a tqdm bar (bytes, speed, total from Content-Length).
        timeout: Seconds to wait for the server on connect and on every read.

    Returns:
        ``destination`` as a Path.

    Raises:
        DownloadError: the server could not be reached or failed mid-way (the ``.part`` file is kept for the
            next call to resume), or the checksum did not match (the ``.part`` file is deleted).
    """
    destination = Path(destination)
    if destination.is_file() and _checksum_problem(destination, md5, sha256) is None:
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(destination)
    _fetch_into_part(url, part, destination, progress=progress, timeout=timeout)
    problem = _checksum_problem(part, md5, sha256)
    if problem is not None:
        part.unlink()
        raise DownloadError(destination, f"the file downloaded from {url} is corrupt: {problem}; deleted it")
    os.replace(part, destination)
    return destination


def partial_path(destination: str | Path) -> Path:
    """The ``<destination>.part`` file an unfinished download of ``destination`` is kept in."""
    destination = Path(destination)
    return destination.with_name(destination.name + ".part")


def verify_checksum(path: str | Path, md5: str | None = None, sha256: str | None = None) -> None:
    """Check that file ``path`` has the given md5 and/or sha256 hex digest (read in chunks).

    Raises:
        MissingDataError: ``path`` does not exist.
        DataError: a digest differs; the message names the file, the expected and the actual digest.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(path)
    problem = _checksum_problem(path, md5, sha256)
    if problem is not None:
        raise DataError(path, problem)


def extract(archive: str | Path, destination: str | Path, *, max_bytes: int | None = None) -> list[Path]:
    """Unpack a tar (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) or .zip archive into folder ``destination``.

    Every member is checked before anything is written: absolute paths, ``..`` components, symbolic and hard
    links and device / special files are refused, and so is an archive whose members add up to more than
    ``max_bytes`` (each member is written up to its recorded size and no further) or than the free disk space.
    Members are unpacked into the hidden folder ``.<destination>.<archive>.<random>.extracting`` beside
    ``destination`` and then moved in; a top-level entry already present in ``destination`` is replaced. Two
    processes extracting the same archive take turns (an ``flock`` on the archive); a staging folder left by a
    killed extraction of this archive is removed first.

    Args:
        archive: the archive file.
        destination: the folder receiving its top-level entries (created if needed).
        max_bytes: the most the members may add up to; default ``MAX_EXPANSION`` × the archive's size, at least
            ``MIN_UNPACKED_LIMIT``.

    Returns:
        The paths of the regular files now in ``destination``, in archive order.

    Raises:
        MissingDataError: ``archive`` does not exist.
        DataError: the archive has an unknown suffix, is unreadable, holds a refused member (named in the
            message) or too many bytes; nothing is extracted then.
    """
    archive, destination = Path(archive), Path(destination)
    if not archive.is_file():
        raise MissingDataError(archive)
    unpack = _archive_unpacker(archive)
    if max_bytes is None:
        max_bytes = max(MAX_EXPANSION * archive.stat().st_size, MIN_UNPACKED_LIMIT)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(archive):
        for stale in _staging_folders(archive, destination):
            shutil.rmtree(stale, ignore_errors=True)
        prefix = f".{destination.name}.{archive.name}."
        staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=_STAGING_SUFFIX, dir=destination.parent))
        moving = False
        try:
            try:
                names = unpack(archive, staging, max_bytes)
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as error:
                raise DataError(archive, f"is not a readable archive ({error}); nothing was extracted") from error
            destination.mkdir(exist_ok=True)
            moving = True
            for entry in sorted(staging.iterdir()):
                _replace(entry, destination / entry.name)
            moving = False
        finally:
            if not moving:  # stopped among the moves (Ctrl-C): kept, it shows the moves did not finish
                shutil.rmtree(staging, ignore_errors=True)
    return [destination.joinpath(*PurePosixPath(name).parts) for name in names]


def extraction_interrupted(archive: str | Path, destination: str | Path) -> bool:
    """Whether an extraction of ``archive`` into ``destination`` is unfinished: killed, or still running elsewhere.

    True when a staging folder of that archive (or one of the older, archive-less kind) is beside ``destination``:
    ``destination`` may then hold only part of the archive (a multi-folder archive moves its top-level entries one
    at a time). Extracting again is then the safe answer: :func:`extract` waits for a running extraction of the
    same archive, removes what a killed one left and unpacks everything.
    """
    return bool(_staging_folders(Path(archive), Path(destination)))


def _staging_folders(archive: Path, destination: Path) -> list[Path]:
    """Staging folders of ``archive`` beside ``destination``, and those without an archive name (older ones)."""
    random = r"[a-z0-9_]{8}"
    ours = re.compile(re.escape(f".{destination.name}.{archive.name}.") + random + re.escape(_STAGING_SUFFIX))
    legacy = re.compile(re.escape(f".{destination.name}.") + random + re.escape(_STAGING_SUFFIX))
    if not destination.parent.is_dir():
        return []
    return sorted(
        entry
        for entry in destination.parent.iterdir()
        if (ours.fullmatch(entry.name) or legacy.fullmatch(entry.name)) and entry.is_dir() and not entry.is_symlink()
    )


@contextlib.contextmanager
def _exclusive(archive: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``archive`` (opened read-only, so the archive itself is never changed)."""
    descriptor = os.open(archive, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _fetch_into_part(url: str, part: Path, destination: Path, *, progress: bool, timeout: float) -> None:
    """Append the missing bytes of ``url`` to ``part`` (or rewrite it when the server ignores the range)."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            return  # "range not satisfiable": the .part already holds every byte; the checksum decides
        raise _unreachable(url, destination, f"HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _unreachable(url, destination, str(getattr(error, "reason", error))) from error
    with response:
        start = _resume_start(response, offset, url, destination)
        length = response.headers.get("Content-Length")
        expected = start + int(length) if length is not None else None
        received = _stream(response, part, start, expected, url, destination, progress)
    if expected is not None and received < expected:
        raise _interrupted(url, part, destination, received, expected, "the server closed the connection")


def _resume_start(response: http.client.HTTPResponse, offset: int, url: str, destination: Path) -> int:
    """Byte position the response body starts at: ``offset`` for 206 Partial Content, else 0."""
    if response.status != 206:
        return 0
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != offset:
        reported = response.headers.get("Content-Range")
        raise DownloadError(
            destination, f"{url} answered the request for bytes {offset}- with Content-Range {reported!r}"
        )
    return offset


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    start: int,
    expected: int | None,
    url: str,
    destination: Path,
    progress: bool,
) -> int:
    """Write the response body to ``part`` from byte ``start`` on; returns the size ``part`` reached."""
    received = start
    bar = tqdm(total=expected, initial=start, unit="B", unit_scale=True, desc=destination.name, disable=not progress)
    with open(part, "ab" if start else "wb") as file, bar:
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (http.client.HTTPException, OSError) as error:
                raise _interrupted(url, part, destination, received, expected, str(error)) from error
            if not chunk:
                return received
            file.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))


def _unreachable(url: str, destination: Path, reason: str) -> DownloadError:
    return DownloadError(
        destination, f"could not download {url} ({reason}); download it by hand and save it as {destination}"
    )


def _interrupted(
    url: str, part: Path, destination: Path, received: int, expected: int | None, reason: str
) -> DownloadError:
    of_total = f" of {expected}" if expected is not None else ""
    return DownloadError(
        destination,
        f"the download of {url} stopped after {received}{of_total} bytes ({reason}); the partial file {part} "
        f"is kept and the next attempt resumes it (or download it by hand and save it as {destination})",
    )


def _checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """None if ``path`` matches every given digest, else a sentence naming expected and actual digests."""
    expected = {name: digest.lower() for name, digest in (("md5", md5), ("sha256", sha256)) if digest}
    if not expected:
        return None
    hashes = {name: hashlib.new(name, usedforsecurity=False) for name in expected}
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            for hashed in hashes.values():
                hashed.update(chunk)
    wrong = [
        f"{name} is {hashes[name].hexdigest()}, expected {digest}"
        for name, digest in expected.items()
        if hashes[name].hexdigest() != digest
    ]
    return f"{path.name}: checksum mismatch, {'; '.join(wrong)}" if wrong else None


def _archive_unpacker(archive: Path) -> Callable[[Path, Path, int], list[str]]:
    name = archive.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return _unpack_tar
    if name.endswith(ZIP_SUFFIXES):
        return _unpack_zip
    known = ", ".join(TAR_SUFFIXES + ZIP_SUFFIXES)
    raise DataError(archive, f"unknown archive type; expected a name ending in one of {known}")


def _unpack_tar(archive: Path, staging: Path, max_bytes: int) -> list[str]:
    """Check every member, then extract them all into ``staging``; returns the regular files' names.

    tarfile writes exactly a member's recorded size, so checking the recorded sizes caps what is written.
    """
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            problem = _path_problem(member.name)
            if problem is None and (member.issym() or member.islnk()):
                problem = f"is a link to {member.linkname!r}"
            elif problem is None and not (member.isfile() or member.isdir()):
                problem = "is a device, FIFO or other special file"
            _refuse_if(problem, archive, member.name)
        _check_unpacked_size(archive, staging, [(m.name, m.size) for m in members if m.isfile()], max_bytes)
        tar.extractall(staging, members=members, **_TAR_FILTER)
    return [member.name for member in members if member.isfile()]


def _unpack_zip(archive: Path, staging: Path, max_bytes: int) -> list[str]:
    """Check every member, then extract them all into ``staging``; returns the regular files' names.

    zipfile inflates a member up to its recorded size and no further (then checks its CRC), so checking the
    recorded sizes caps what is written.
    """
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for member in members:
            problem = _path_problem(member.filename)
            kind = stat.S_IFMT(member.external_attr >> 16)  # unix mode, 0 when the archiver recorded none
            if problem is None and kind == stat.S_IFLNK:
                problem = "is a symbolic link"
            elif problem is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                problem = "is a device, FIFO or other special file"
            _refuse_if(problem, archive, member.filename)
        sizes = [(member.filename, member.file_size) for member in members if not member.is_dir()]
        _check_unpacked_size(archive, staging, sizes, max_bytes)
        zipped.extractall(staging, members=members)
    return [member.filename for member in members if not member.is_dir()]


def _check_unpacked_size(archive: Path, staging: Path, sizes: list[tuple[str, int]], max_bytes: int) -> None:
    """Refuse (before anything is written) members adding up to more than ``max_bytes`` or the free disk space."""
    total = sum(size for _, size in sizes)
    if total > max_bytes:
        largest = max(sizes, key=lambda item: item[1])
        raise DataError(
            archive,
            f"its members unpack to {total:,} bytes (the largest, {largest[0]!r}, to {largest[1]:,}), more than "
            f"the {max_bytes:,} expected: a damaged or hostile archive; nothing was extracted",
        )
    free = shutil.disk_usage(staging).free
    if total > free:
        raise DataError(
            archive, f"unpacks to {total:,} bytes but only {free:,} are free on {staging.parent}; nothing was extracted"
        )


def _path_problem(name: str) -> str | None:
    """Why member name ``name`` could write outside the destination, or None if it stays inside."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(name).drive:
        return "has an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "leaves the destination through '..'"
    return None


def _refuse_if(problem: str | None, archive: Path, member: str) -> None:
    if problem is not None:
        raise DataError(archive, f"refusing member {member!r}: it {problem}; nothing was extracted")


def _replace(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, first removing whatever ``target`` holds."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(source, target)
