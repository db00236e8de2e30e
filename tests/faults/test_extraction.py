"""Archive extraction that is interrupted, or that would unpack to far more than the archive promises.

Issue 16, case 4: a kill between the top-level moves of a multi-folder archive (MVTec AD: one folder per category)
left ``bottle`` in place and the other categories in a hidden staging folder, and the next ``fetch`` took the set
as complete; a kill while unpacking left a ``.cifar10.*.extracting`` folder that nothing removed. Unclear case: tar
and zip members had no size cap. The archives are written in the real layouts (MVTec AD PNG tree, CIFAR-10 python
pickles) with the helpers of tests/helpers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common import download as download_module
from common.datasets import load
from common.datasets import sources as sources_module
from common.datasets.sources import SOURCES, fetch
from common.download import extract
from common.errors import DataError
from tests.helpers.write_cifar import write_cifar10
from tests.helpers.write_images import write_mvtec_category

REPOSITORY = Path(__file__).resolve().parents[2]
CATEGORIES = ("bottle", "cable", "capsule")
_KILL_AFTER = """
import os, sys, dataclasses
from common import download
from common.datasets import sources
name, root, sha256, md5, patched = sys.argv[1:6]
source = sources.SOURCES[name]
file = dataclasses.replace(source.files[0], sha256=sha256 or None, md5=md5 or None)
sources.SOURCES[name] = dataclasses.replace(source, files=(file,))
module, function = patched.rsplit(".", 1)
owner = download if module == "download" else download.tarfile.TarFile
original = getattr(owner, function)
def then_die(*args, **kwargs):
    original(*args, **kwargs)
    os._exit(9)  # killed: no finally, no clean-up
setattr(owner, function, then_die)
sources.fetch(name, root, progress=False)
"""


def _tar(archive: Path, folder: Path, names: list[str]) -> Path:
    with tarfile.open(archive, "w:xz" if archive.suffix == ".xz" else "w:gz") as tar:
        for name in names:
            tar.add(folder / name, arcname=name)
    return archive


def _kill_during_fetch(name: str, root: Path, patched: str, sha256: str = "", md5: str = "") -> None:
    """Run ``fetch(name, root)`` in a child process killed right after the first call of ``patched``."""
    done = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER, name, str(root), sha256, md5, patched],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 9, done.stderr[-2000:]


def _pin(monkeypatch: pytest.MonkeyPatch, name: str, **checksums: str) -> None:
    source = SOURCES[name]
    file = dataclasses.replace(source.files[0], **checksums)
    monkeypatch.setitem(sources_module.SOURCES, name, dataclasses.replace(source, files=(file,)))


@pytest.fixture
def mvtec_archive(tmp_path: Path) -> tuple[Path, str]:
    """``<root>/mvtec/mvtec_anomaly_detection.tar.xz`` holding three categories, placed by hand; its sha256."""
    for seed, category in enumerate(CATEGORIES):
        write_mvtec_category(tmp_path / "source", category, seed=seed)
    folder = tmp_path / "root" / "mvtec"
    folder.mkdir(parents=True)
    archive = _tar(folder / "mvtec_anomaly_detection.tar.xz", tmp_path / "source" / "mvtec", list(CATEGORIES))
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def _staging(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir() if entry.name.endswith(".extracting"))


def test_a_kill_between_the_moves_of_a_multi_folder_archive_is_finished_by_the_next_fetch(
    mvtec_archive: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, sha256 = mvtec_archive
    root = archive.parent.parent
    _kill_during_fetch("mvtec", root, "download._replace", sha256=sha256)
    assert (root / "mvtec" / "bottle").is_dir() and not (root / "mvtec" / "cable").exists()  # looks extracted
    _pin(monkeypatch, "mvtec", sha256=sha256)
    fetch("mvtec", root, progress=False)
    assert all((root / "mvtec" / category / "test").is_dir() for category in CATEGORIES)
    assert _staging(root) == []
    assert len(load("mvtec", "train", root=root, category="capsule").images) == 3


def test_an_interrupt_between_the_moves_keeps_the_journal_for_the_next_fetch(
    mvtec_archive: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, sha256 = mvtec_archive
    root = archive.parent.parent
    _pin(monkeypatch, "mvtec", sha256=sha256)
    original, moves = download_module._replace, []

    def interrupted(source: Path, target: Path) -> None:
        if moves:
            raise KeyboardInterrupt  # Ctrl-C after the first category was moved in
        moves.append(target)
        original(source, target)

    monkeypatch.setattr(download_module, "_replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch("mvtec", root, progress=False)
    monkeypatch.setattr(download_module, "_replace", original)
    fetch("mvtec", root, progress=False)
    assert all((root / "mvtec" / category / "ground_truth").is_dir() for category in CATEGORIES)
    assert _staging(root) == []


def test_a_staging_folder_left_by_a_kill_while_unpacking_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_cifar10(tmp_path / "source", n_train=5, n_test=3)
    folder = tmp_path / "root" / "cifar10"
    folder.mkdir(parents=True)
    archive = _tar(folder / "cifar-10-python.tar.gz", tmp_path / "source", ["cifar-10-batches-py"])
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    _kill_during_fetch("cifar10", folder.parent, "TarFile.extractall", md5=md5)  # unpacked, nothing moved yet
    assert len(_staging(folder.parent)) == 1 and not (folder / "cifar-10-batches-py").exists()
    _pin(monkeypatch, "cifar10", md5=md5)
    fetch("cifar10", folder.parent, progress=False)
    assert _staging(folder.parent) == []
    assert np.array_equal(load("cifar10", "test", root=folder.parent).images.numpy(), written["test"][0])


def _zeros_member(tar: tarfile.TarFile, name: str, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    tar.addfile(info, io.BytesIO(bytes(size)))


def test_archives_unpacking_to_more_than_expected_are_refused_before_writing(tmp_path: Path) -> None:
    small = tmp_path / "small.tar"
    with tarfile.open(small, "w") as tar:
        _zeros_member(tar, "top/a.bin", 600)
        _zeros_member(tar, "top/b.bin", 5000)
    with pytest.raises(DataError, match=r"unpack to 5,600 bytes \(the largest, 'top/b\.bin', to 5,000\)"):
        extract(small, tmp_path / "out", max_bytes=1000)
    bomb = tmp_path / "bomb.tar.gz"  # ~100 kB that would inflate to 96 MiB: above the default cap
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        _zeros_member(tar, "top/zeros.bin", 96 << 20)
    with pytest.raises(DataError, match=r"more than the .* expected") as raised:
        extract(bomb, tmp_path / "out")
    assert raised.value.path == bomb
    zipped = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("top/zeros.bin", bytes(96 << 20))
    with pytest.raises(DataError, match=r"more than the .* expected"):
        extract(zipped, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _staging(tmp_path) == []
