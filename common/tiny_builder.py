"""InvGlow's random subset of 80M Tiny Images, cut from the raw binary: streamed, resumable and atomic.

Reproduces the selection of ``invglow/create_tiny.py`` in boschresearch/hierarchical_anomaly_detection:

- chunks are 64 consecutive images of the binary (file order is sorted by keyword, so a chunk is usually one
  noun); chunk starts are 0, 64, 128, ... and the last start is always dropped (the original drops it whatever
  the size; for the real binary its chunk is incomplete), giving ceil(N / 64) - 1 = 1,239,094 starts;
- the starts are shuffled by ``np.random.RandomState(20191203).choice(starts, len(starts), replace=False)``,
  which equals ``starts[np.random.RandomState(20191203).permutation(len(starts))]``;
- the first 24,415 chunks are kept: 1,562,560 images;
- optional CIFAR exclusion (the original's ``*.exclude_cifar.npy`` set; the paper did not use it): a chunk holding
  any image listed in the index files (``80mn_cifar_idxs.txt`` for CIFAR-10, ``cifar_indexes`` for CIFAR-100, one
  1-based index per line, 0 = not found) is skipped, and the first 24,415 *surviving* chunks of the same
  permutation are kept.

Output in ``out_dir`` for a subset called ``name`` (read back by
:func:`common.datasets.tiny_images.read_tiny_subset`):

- ``<name>.npy``: uint8 (N, 3072) records, N = n_chunks × chunk_size, byte for byte as in the binary (each image
  column-major), so building is a plain copy; the reader views them as (N, 3, 32, 32) without copying;
- ``<name>_indices.npy``: int64 (N,), the 0-based index of each image in the binary;
- ``<name>.json``: manifest (count, chunk size, number of chunks, seed, order, source file and its image count,
  exclusion files and how many images they list).

Chunks are stored in ascending order of their start, chunk k in rows [k * chunk_size, (k + 1) * chunk_size): the
order in which the original's training code listed its one-file-per-chunk output (``sorted(glob(...))``) before
drawing chunks at random, and the order that reads the binary front to back.

While building, the outputs are ``<name>.npy.partial`` and ``<name>_indices.npy.partial``, plus a progress marker
``<name>.progress.json`` rewritten after every batch of chunks (after the batch is written and synced to the disk).
A re-run that selects the same images resumes after the last recorded batch, also after a power cut. The final
names appear only when the subset is complete (``os.replace``, manifest last); a complete subset is recognised and not
rebuilt. Memory use is two batch buffers (``batch_chunks`` chunks), whatever the size of the binary.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common.datasets.tiny_images import (
    IMAGE_BYTES,
    SUBSET_NAME,
    TINY_IMAGES_COUNT,
    SubsetFiles,
    binary_image_count,
    read_tiny_subset,
    subset_files,
)
from common.errors import DataError, MissingDataError
from common.files import is_disk_full, write_json_atomically

CHUNK_SIZE = 64
N_CHUNKS = 24_415
SEED = 20191203
EXCLUDE_CIFAR_NAME = "tiny_subset_exclude_cifar"
CIFAR_INDEX_FILES = ("80mn_cifar_idxs.txt", "cifar_indexes")
_INDEX_FILES_HINT = (
    "80mn_cifar_idxs.txt and cifar_indexes ship with boschresearch/hierarchical_anomaly_detection; copy them there."
)

logger = logging.getLogger(__name__)


def chunk_starts(
    n_images: int,
    *,
    n_chunks: int = N_CHUNKS,
    chunk_size: int = CHUNK_SIZE,
    seed: int = SEED,
    excluded: np.ndarray | None = None,
) -> np.ndarray:
    """First image index of each selected chunk, in the original's permutation order.

    Args:
        n_images: number of images in the binary.
        n_chunks: number of chunks to keep.
        chunk_size: images per chunk.
        seed: seed of the ``np.random.RandomState`` that shuffles the chunk starts.
        excluded: 0-based image indices whose chunks are skipped (and replaced by later ones), or None.

    Returns:
        int64 array of at most ``n_chunks`` starts; fewer when the binary has too few (surviving) chunks.
    """
    n_starts = -(-n_images // chunk_size) - 1  # as the original: the last start is dropped, complete or not
    order = np.random.RandomState(seed).permutation(n_starts)
    if excluded is not None and len(excluded):
        touched = np.zeros(n_starts, dtype=bool)
        chunk_ids = excluded // chunk_size
        touched[chunk_ids[chunk_ids < n_starts]] = True
        order = order[~touched[order]]
    return order[:n_chunks].astype(np.int64) * chunk_size


def read_excluded_indices(files: Sequence[Path], n_images: int) -> np.ndarray:
    """Sorted unique 0-based indices listed in CIFAR index files (1-based, one per line, 0 = not found).

    Raises:
        MissingDataError: a file does not exist.
        DataError: a file holds something else than integers in 0..n_images.
    """
    parts = [np.zeros(0, dtype=np.int64)]
    for path in files:
        if not path.is_file():
            raise MissingDataError(path, _INDEX_FILES_HINT)
        try:
            one_based = np.loadtxt(path, dtype=np.int64, ndmin=1)
        except ValueError as error:
            raise DataError(path, f"expected one integer image index per line ({error})") from error
        if len(one_based) and (one_based.min() < 0 or one_based.max() > n_images):
            raise DataError(path, f"holds indices outside 0..{n_images:,} (1-based, 0 = not found)")
        parts.append(one_based[one_based > 0] - 1)
    return np.unique(np.concatenate(parts))


def build_tiny_subset(
    binary: Path,
    out_dir: Path,
    *,
    name: str = SUBSET_NAME,
    n_chunks: int = N_CHUNKS,
    chunk_size: int = CHUNK_SIZE,
    seed: int = SEED,
    exclude_files: Sequence[Path] = (),
    expected_images: int | None = TINY_IMAGES_COUNT,
    batch_chunks: int = 256,
    progress: bool = True,
) -> Path:
    """Write (or finish, or find complete) the subset ``name`` of the Tiny Images ``binary`` in ``out_dir``.

    Args:
        binary: ``tiny_images.bin`` or a file in its format.
        out_dir: folder receiving the subset files (created if needed).
        name: the subset's name, the stem of its files.
        n_chunks: number of chunks to keep (24,415 in the original).
        chunk_size: consecutive images per chunk (64).
        seed: seed of the chunk permutation (20191203).
        exclude_files: CIFAR index files whose images' chunks are skipped; empty for no exclusion.
        expected_images: number of images ``binary`` must hold (the selection depends on it); None accepts any.
        batch_chunks: chunks written between two progress records.
        progress: show a tqdm bar (bytes, MB/s).

    Returns:
        Path of the images file ``<out_dir>/<name>.npy``.

    Raises:
        DataError: the binary is truncated or too small for ``n_chunks``, an index file is malformed, or
            ``out_dir`` already holds a different subset called ``name``.
    """
    if min(n_chunks, chunk_size, batch_chunks) < 1:
        raise ValueError(
            f"n_chunks, chunk_size and batch_chunks must be >= 1; got {n_chunks}, {chunk_size}, {batch_chunks}"
        )
    n_images = binary_image_count(binary, expected_images)
    excluded = read_excluded_indices(exclude_files, n_images)
    starts = chunk_starts(n_images, n_chunks=n_chunks, chunk_size=chunk_size, seed=seed, excluded=excluded)
    if len(starts) < n_chunks:
        needed = n_chunks * chunk_size + 1
        raise DataError(
            binary,
            f"{n_images:,} images give {len(starts):,} usable chunks of {chunk_size}"
            f"{' outside the excluded images' if len(excluded) else ''}, but n_chunks={n_chunks:,} are needed"
            f" (at least {needed:,} images = {needed * IMAGE_BYTES:,} bytes)",
        )
    starts = np.sort(starts)
    indices = (starts[:, None] + np.arange(chunk_size)).ravel()
    files = subset_files(out_dir, name)
    if _is_complete(files, indices):
        return files.images
    out_dir.mkdir(parents=True, exist_ok=True)
    data_offset, first_chunk = _open_partial_images(files, indices, chunk_size)
    _copy_chunks(
        binary, starts, _partial(files.images), data_offset, first_chunk, chunk_size, batch_chunks,
        _progress_file(files), progress,
    )  # fmt: skip
    manifest = {
        "count": len(indices),
        "chunk_size": chunk_size,
        "n_chunks": n_chunks,
        "seed": seed,
        "order": "chunks by ascending start; chunk k is rows [k * chunk_size, (k + 1) * chunk_size)",
        "source": str(binary.resolve()),
        "source_images": n_images,
        "excluded_index_files": [str(path.resolve()) for path in exclude_files],
        "excluded_images": len(excluded),
    }
    _finalize(files, manifest)
    return files.images


def _is_complete(files: SubsetFiles, indices: np.ndarray) -> bool:
    """Whether ``files`` already hold the finished subset of ``indices`` (an error if they hold another one)."""
    if not files.manifest.is_file():
        return False
    try:
        recorded = np.load(files.indices)
    except (OSError, ValueError) as error:
        raise DataError(
            files.indices, f"unreadable ({error}); remove {files.manifest} to rebuild the subset"
        ) from error
    if not np.array_equal(recorded, indices):
        raise DataError(
            files.manifest,
            "describes a different subset (other binary, seed, chunks or exclusion); remove its files or choose "
            "another name",
        )
    read_tiny_subset(files.manifest.parent, "train", name=files.images.stem)  # checks the images file
    return True


def _open_partial_images(files: SubsetFiles, indices: np.ndarray, chunk_size: int) -> tuple[int, int]:
    """Create (or find) the partial images file: the byte offset of its data, and the chunks already in it.

    Resumes when the progress marker and both partial files are intact and select the same ``indices``;
    otherwise starts over (marker removed first, so a crash meanwhile can never resume onto fresh files).
    """
    images_done = _recorded_progress(files, indices)
    if images_done is not None:
        logger.info("resuming %s after %d of %d images", files.images, images_done, len(indices))
        return np.load(_partial(files.images), mmap_mode="r").offset, images_done // chunk_size
    _progress_file(files).unlink(missing_ok=True)
    try:
        with open(_partial(files.indices), "wb") as handle:
            np.save(handle, indices)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise write_failure(_partial(files.indices), error) from error
    try:
        images = np.lib.format.open_memmap(
            _partial(files.images), mode="w+", dtype=np.uint8, shape=(len(indices), IMAGE_BYTES)
        )
    except OSError as error:
        raise write_failure(_partial(files.images), error) from error
    _write_json(_progress_file(files), {"images_done": 0})
    return images.offset, 0


def _recorded_progress(files: SubsetFiles, indices: np.ndarray) -> int | None:
    """Images recorded as written by an interrupted build of ``indices``, or None if there is nothing to resume."""
    try:
        images_done = int(json.loads(_progress_file(files).read_text())["images_done"])
        recorded = np.load(_partial(files.indices))
        images = np.load(_partial(files.images), mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (
        not np.array_equal(recorded, indices)
        or images.dtype != np.uint8
        or images.shape != (len(indices), IMAGE_BYTES)
    ):
        return None
    return images_done


def _copy_chunks(
    binary: Path,
    starts: np.ndarray,
    target: Path,
    data_offset: int,
    first_chunk: int,
    chunk_size: int,
    batch_chunks: int,
    progress_file: Path,
    show_progress: bool,
) -> None:
    """Copy chunks ``first_chunk`` onwards into ``target``'s data, recording progress after every batch.

    Each batch is read into one of two buffers with one ``pread`` per run of adjacent chunks, then written with
    one ``pwrite`` by a writer thread while the next batch is read into the other buffer; the progress record
    follows each write, so a killed build resumes exactly. While a batch is copied, the kernel already reads the
    next one (``POSIX_FADV_WILLNEED``), so the disk always has many requests in flight instead of one chunk at a
    time. Each batch is ``fdatasync``-ed before its progress record is written (in the writer thread, while the
    next batch is read), so a progress record never claims images that a power cut could still lose. A write that
    fails (a full disk) is a DataError naming the file; the progress record then still describes what is on disk.
    """
    chunk_bytes = chunk_size * IMAGE_BYTES
    buffers = [memoryview(bytearray(batch_chunks * chunk_bytes)) for _ in range(2)]
    source = os.open(binary, os.O_RDONLY)
    try:
        output = os.open(target, os.O_WRONLY)
    except OSError:
        os.close(source)
        raise

    def write_batch(records: memoryview, batch_start: int, batch_end: int) -> int:
        try:
            written = os.pwrite(output, records, data_offset + batch_start * chunk_bytes)
            if written != records.nbytes:
                raise OSError(errno.ENOSPC, f"only {written:,} of {records.nbytes:,} bytes were written")
            os.fdatasync(output)
        except OSError as error:
            raise write_failure(target, error) from error
        _write_json(progress_file, {"images_done": batch_end * chunk_size})
        return records.nbytes

    try:
        with (
            tqdm(
                total=len(starts) * chunk_bytes,
                initial=first_chunk * chunk_bytes,
                unit="B",
                unit_scale=True,
                desc=f"Tiny subset {target.name}",
                disable=not show_progress,
            ) as bar,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiny-writer") as writer,
        ):
            batches = []  # (first chunk, its starts, their runs of adjacent chunks), each run found once
            for first in range(first_chunk, len(starts), batch_chunks):
                batch = starts[first : first + batch_chunks]
                batches.append((first, batch, _adjacent_runs(batch, chunk_size)))
            for _, batch, runs in batches[:1]:
                _read_ahead(source, batch, runs, chunk_bytes)
            pending: Future[int] | None = None
            for index, (batch_start, batch, runs) in enumerate(batches):
                for _, next_batch, next_runs in batches[index + 1 : index + 2]:
                    _read_ahead(source, next_batch, next_runs, chunk_bytes)
                buffer = buffers[index % 2]
                for slot, count in runs:
                    records = buffer[slot * chunk_bytes : (slot + count) * chunk_bytes]
                    _read_into(source, binary, int(batch[slot]), records)
                batch_end = batch_start + len(batch)
                if pending is not None:
                    bar.update(pending.result())  # the write of the previous batch, out of the other buffer
                pending = writer.submit(write_batch, buffer[: len(batch) * chunk_bytes], batch_start, batch_end)
            if pending is not None:
                bar.update(pending.result())
    finally:
        os.close(source)
        os.close(output)


def _adjacent_runs(starts: np.ndarray, chunk_size: int) -> list[tuple[int, int]]:
    """``(position, length)`` of each run of consecutive ``starts`` whose chunks follow each other in the binary."""
    if not len(starts):
        return []
    edges = np.concatenate([[0], np.flatnonzero(np.diff(starts) != chunk_size) + 1, [len(starts)]])
    return [(int(first), int(length)) for first, length in zip(edges[:-1], np.diff(edges), strict=True)]


def _read_ahead(source: int, starts: np.ndarray, runs: list[tuple[int, int]], chunk_bytes: int) -> None:
    """Ask the kernel to start reading the chunks at ``starts`` (their :func:`_adjacent_runs` ``runs``) in the
    background (no-op where unsupported)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for first, length in runs:
        os.posix_fadvise(source, int(starts[first]) * IMAGE_BYTES, length * chunk_bytes, os.POSIX_FADV_WILLNEED)


def _read_into(source: int, path: Path, first: int, records: memoryview) -> None:
    """Read the raw records of images ``first`` onwards from the binary's descriptor straight into ``records``."""
    if os.preadv(source, [records], first * IMAGE_BYTES) != records.nbytes:
        last = first + records.nbytes // IMAGE_BYTES - 1
        raise DataError(path, f"ended inside images {first:,}..{last:,}: it shrank during the build")


def _finalize(files: SubsetFiles, manifest: dict[str, Any]) -> None:
    """Give the complete partial files their final names, manifest last, and drop the progress marker."""
    os.replace(_partial(files.images), files.images)
    os.replace(_partial(files.indices), files.indices)
    _write_json(files.manifest, manifest)
    _progress_file(files).unlink()


def write_failure(path: Path, error: OSError) -> DataError:
    """The DataError for a failed write of ``path``: it says when the disk is full (ENOSPC or a short write)."""
    reason = error.strerror or str(error)
    if is_disk_full(error) or "requested and" in str(error):  # numpy's short write: "N requested and M written"
        return DataError(path, f"could not be written ({reason}: the disk is full); what was written before is kept")
    return DataError(path, f"could not be written ({reason})")


def _write_json(path: Path, content: dict[str, Any]) -> None:
    try:
        write_json_atomically(path, content)
    except OSError as error:
        raise write_failure(path, error) from error


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _progress_file(files: SubsetFiles) -> Path:
    return files.manifest.with_suffix(".progress.json")
