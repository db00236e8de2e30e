"""Checking, before anything runs or is written, that the files the chosen cells read are in place.

An experiment declares what its cells read with ``Experiment.data(config)``: :class:`DatasetNeed` (files of a
``common.datasets`` dataset) and :class:`FileNeed` (one file the suite does not fetch, e.g. pretrained weights),
each for the cells whose ids match its patterns. :func:`check` looks for every file of the needs and raises one
:class:`~common.errors.MissingFilesError` that lists all the missing ones, per dataset, with where each goes and how
to get it. Sets the suite generates need nothing; weight files the suite downloads itself on first use are not
declared.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from common.datasets import dataset_folder
from common.datasets.sources import SOURCES, how_to_get
from common.errors import MissingFilesError

LOCATION_VARIABLES = ("OOD_REPRO_DATA", "OOD_REPRO_TINY_IMAGES", "OOD_REPRO_WEIGHTS")
"""The variables of ``folder_locations`` that say where datasets, Tiny Images and weight files are."""


@dataclass(frozen=True)
class DatasetNeed:
    """Files of dataset ``name`` (``common.datasets``) that some cells read.

    Attributes:
        name: the dataset.
        files: paths inside its folder that must exist; default: what each file of its source (``SOURCES``)
            unpacks to, or the file itself (the folder itself for a source that lists no file).
        cells: shell-style patterns on the ids of the cells that read them; empty: every cell.
    """

    name: str
    files: tuple[str, ...] = ()
    cells: tuple[str, ...] = ()

    def paths(self) -> list[Path]:
        """The paths that must exist (none for a set the suite generates)."""
        source, folder = SOURCES[self.name], dataset_folder(self.name)
        if source.generated is not None:
            return []
        if self.files:
            return [folder / name for name in self.files]
        return [file.in_place(folder) for file in source.files] or [folder]

    def heading(self) -> str:
        """The dataset and how to get it, the first line of its group in the error."""
        source = SOURCES[self.name]
        if source.manual is None:
            return f"{self.name}: get it with `python main.py download {self.name}`"
        return f"{self.name}: {how_to_get(self.name)}"


@dataclass(frozen=True)
class FileNeed:
    """One file that some cells read and that the suite does not fetch itself (pretrained weights).

    Attributes:
        path: where it must be.
        what: what it is (``"pretrained WRN-40-2"``), the name of its group in the error.
        how_to_get: one sentence: where it comes from and where to put it.
        cells: shell-style patterns on the ids of the cells that read it; empty: every cell.
    """

    path: Path
    what: str
    how_to_get: str
    cells: tuple[str, ...] = ()

    def paths(self) -> list[Path]:
        """The file."""
        return [Path(self.path)]

    def heading(self) -> str:
        """What it is and how to get it, the first line of its group in the error."""
        return f"{self.what}: {self.how_to_get}"


DataNeed = DatasetNeed | FileNeed


def for_cells(needs: Iterable[DataNeed], cell_ids: Collection[str]) -> list[DataNeed]:
    """The needs of ``needs`` that any of the cells ``cell_ids`` has (none without cells)."""
    return [need for need in needs if any(not need.cells or _matches(cell, need.cells) for cell in cell_ids)]


def check(needs: Iterable[DataNeed]) -> None:
    """Return if every file of ``needs`` is in place.

    Raises:
        MissingFilesError: one listing every missing file, grouped per dataset (or weight file) under a line saying
            how to get it, and, when several datasets can be downloaded, the one command that downloads them all.
    """
    needs = list(needs)
    groups = missing(needs)
    if not groups:
        return
    paths = [path for group in groups.values() for path in group]
    lines = [f"missing data: {len(paths)} file(s) or folder(s) that the chosen cells read are not in place"]
    for heading, group in groups.items():
        lines += [f"  {heading}", *(f"    {path}" for path in group)]
    downloadable = _downloadable(needs, groups)
    if len(downloadable) > 1:
        lines.append(f"  all the downloadable ones at once: python main.py download {' '.join(downloadable)}")
    lines.append(f"  (data that is elsewhere: set {' or '.join(LOCATION_VARIABLES)} to its folder)")
    raise MissingFilesError(paths, "\n".join(lines))


def missing(needs: Iterable[DataNeed]) -> dict[str, list[Path]]:
    """The missing paths of ``needs`` by the heading of their need, in the order of ``needs``, each path once."""
    groups: dict[str, list[Path]] = {}
    for need in needs:
        absent = [path for path in need.paths() if not _is_present(path)]
        if absent:
            group = groups.setdefault(need.heading(), [])
            group += [path for path in absent if path not in group]
    return groups


def _matches(cell_id: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(cell_id, pattern) for pattern in patterns)


def _is_present(path: Path) -> bool:
    """Whether ``path`` exists; a ``.gz`` file also counts when it is there uncompressed (the IDX readers take
    either)."""
    return path.exists() or (path.suffix == ".gz" and path.with_suffix("").exists())


def _downloadable(needs: Iterable[DataNeed], groups: dict[str, list[Path]]) -> list[str]:
    """The datasets of ``needs`` with missing files that ``python main.py download`` fetches, each once, in order."""
    names = [
        need.name
        for need in needs
        if isinstance(need, DatasetNeed) and SOURCES[need.name].manual is None and need.heading() in groups
    ]
    return list(dict.fromkeys(names))


__all__ = ["DataNeed", "DatasetNeed", "FileNeed", "check", "for_cells", "missing"]
