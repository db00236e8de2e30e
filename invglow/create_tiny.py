"""Cut InvGlow's 1,562,560-image random subset out of the 80M Tiny Images binary.

Usage (from the repository root): ``python invglow/create_tiny.py [--exclude-cifar] [--help]``.
The selection, output format and resuming are documented in :mod:`common.tiny_builder`; an interrupted run
resumes where it stopped when started again with the same arguments. An option that cannot be used is reported in
one line (exit status 2), and so is a bad binary or a full disk (exit status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import folder_locations
from common.datasets import plain_name_problem
from common.datasets.tiny_images import BINARY_NAME, SUBSET_NAME, TINY_IMAGES_COUNT
from common.errors import DataError
from common.tiny_builder import CIFAR_INDEX_FILES, EXCLUDE_CIFAR_NAME, N_CHUNKS, build_tiny_subset


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; paths default to ``folder_locations.tiny_images_root()``."""
    root = folder_locations.tiny_images_root()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, default=root / BINARY_NAME, help="Tiny Images binary (%(default)s)")
    parser.add_argument("--out-dir", type=Path, default=root, help="folder receiving the subset (%(default)s)")
    parser.add_argument(
        "--exclude-cifar",
        action="store_true",
        help=f"skip chunks holding CIFAR-10/100 images, listed in {' and '.join(CIFAR_INDEX_FILES)} next to the "
        "binary (the paper did not)",
    )
    parser.add_argument(
        "--exclude-file",
        type=Path,
        action="append",
        default=[],
        help="index file (1-based, one per line, 0 = none) whose images' chunks are skipped; repeatable",
    )
    parser.add_argument("--name", help=f"subset name (default {SUBSET_NAME}, or {EXCLUDE_CIFAR_NAME} with exclusion)")
    parser.add_argument("--n-chunks", type=int, default=N_CHUNKS, help="chunks of 64 images to keep (%(default)s)")
    parser.add_argument(
        "--expected-images",
        type=int,
        default=TINY_IMAGES_COUNT,
        help="images the binary must hold, since the selection depends on it; 0 accepts any (%(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def usage_problem(arguments: argparse.Namespace) -> str | None:
    """What makes the options unusable, as ``--option value: problem``; None if they can be used."""
    if arguments.n_chunks < 1:
        return f"--n-chunks {arguments.n_chunks}: expected a positive number of chunks of 64 images"
    if arguments.expected_images < 0:
        return f"--expected-images {arguments.expected_images}: expected a number of images, or 0 to accept any"
    if arguments.name is not None and plain_name_problem(arguments.name) is not None:
        return f"--name {arguments.name}: {plain_name_problem(arguments.name)} (--out-dir)"
    existing = arguments.out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        which = "is" if existing == arguments.out_dir else f"is inside {existing}, which is"
        return f"--out-dir {arguments.out_dir}: {which} a file, not a folder"
    return None


def main(argv: list[str] | None = None) -> None:
    """Build the subset described by the command line ``argv``."""
    arguments = parse_arguments(argv)
    problem = usage_problem(arguments)
    if problem is not None:
        print(f"create_tiny.py: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    exclude_files = list(arguments.exclude_file)
    if arguments.exclude_cifar:
        exclude_files += [arguments.binary.parent / file_name for file_name in CIFAR_INDEX_FILES]
    try:
        images = build_tiny_subset(
            arguments.binary,
            arguments.out_dir,
            name=arguments.name or (EXCLUDE_CIFAR_NAME if exclude_files else SUBSET_NAME),
            n_chunks=arguments.n_chunks,
            exclude_files=exclude_files,
            expected_images=arguments.expected_images or None,
            progress=not arguments.no_progress,
        )
    except DataError as error:
        raise SystemExit(f"create_tiny.py: {error}") from error
    print(f"Tiny Images subset: {images}")


if __name__ == "__main__":
    main()
