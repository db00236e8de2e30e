"""Downloads (resume, checksums, failures), safe extraction and the dataset source table, all offline.

Every download goes to a local HTTP server on 127.0.0.1 (tests/helpers/http_server.py); no test touches the
internet. Expected digests are computed here with hashlib, independently of the code under test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import re
import socket
import tarfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from common.datasets import DATASETS, dataset_folder, load
from common.datasets import sources as sources_module
from common.datasets.sources import SOURCES, DatasetSource, RemoteFile, fetch, how_to_get
from common.download import download, extract, partial_path, verify_checksum
from common.errors import DataError, DownloadError, MissingDataError
from tests.helpers.write_cifar import write_cifar10
from tests.helpers.write_idx import write_idx_dataset

if TYPE_CHECKING:
    from tests.helpers.http_server import FileServer

pytest_plugins = ["tests.helpers.http_server"]  # the file_server fixture

SIZE = 2_500_000  # more than two read chunks of 1 MiB


def _random_bytes(size: int = SIZE, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _serve(server: FileServer, name: str, data: bytes) -> str:
    (server.folder / name).write_bytes(data)
    return server.url(name)


# ---------------------------------------------------------------------------------------------- download


def test_download_writes_the_file_and_checks_md5_and_sha256(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "out" / "blob.bin"
    result = download(url, target, md5=_md5(data), sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert result == target
    assert target.read_bytes() == data
    assert not partial_path(target).exists()
    assert [(r.range, r.status, r.body_bytes) for r in file_server.requests] == [(None, 200, SIZE)]


def test_existing_file_with_matching_checksum_is_not_fetched_again(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    target.write_bytes(data)
    download(url, target, md5=_md5(data), progress=False)
    assert file_server.requests == []


def test_existing_file_with_wrong_checksum_is_downloaded_again(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    target.write_bytes(b"stale copy")
    download(url, target, md5=_md5(data), progress=False)
    assert target.read_bytes() == data
    assert len(file_server.requests) == 1


def test_partial_file_is_resumed_with_a_range_request(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    already = 1_234_567
    partial_path(target).write_bytes(data[:already])
    download(url, target, md5=_md5(data), progress=False)
    assert target.read_bytes() == data
    [request] = file_server.requests
    assert (request.range, request.status, request.body_bytes) == (f"bytes={already}-", 206, SIZE - already)


def test_server_ignoring_the_range_restarts_from_zero(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    partial_path(target).write_bytes(b"x" * 1000)  # not a prefix of the file: appending would corrupt it
    file_server.ignore_range = True
    download(url, target, md5=_md5(data), progress=False)
    assert target.read_bytes() == data
    [request] = file_server.requests
    assert (request.range, request.status, request.body_bytes) == ("bytes=1000-", 200, SIZE)


def test_complete_partial_file_answered_with_416_is_verified_and_kept(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    partial_path(target).write_bytes(data)
    download(url, target, md5=_md5(data), progress=False)
    assert target.read_bytes() == data
    assert [(r.status, r.body_bytes) for r in file_server.requests] == [(416, 0)]


def test_checksum_mismatch_raises_and_leaves_no_file(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as raised:
        download(url, target, md5=wrong, progress=False)
    message = str(raised.value)
    assert "blob.bin" in message and wrong in message and _md5(data) in message
    assert not target.exists()
    assert not partial_path(target).exists()


def test_oversized_partial_file_answered_with_416_fails_its_checksum(file_server: FileServer, tmp_path: Path) -> None:
    data = _random_bytes(1000)
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    partial_path(target).write_bytes(b"y" * 5000)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(url, target, md5=_md5(data), progress=False)
    assert not partial_path(target).exists() and not target.exists()


@pytest.mark.parametrize("with_checksum", [True, False], ids=["md5", "no-checksum"])
def test_dropped_connection_keeps_the_part_and_the_next_call_resumes(
    file_server: FileServer, tmp_path: Path, with_checksum: bool
) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    target = tmp_path / "blob.bin"
    md5 = _md5(data) if with_checksum else None
    dropped_after = 1_500_000
    file_server.drop_after = dropped_after
    with pytest.raises(DownloadError) as raised:
        download(url, target, md5=md5, progress=False)
    assert url in str(raised.value) and str(partial_path(target)) in str(raised.value)
    assert not target.exists()
    assert partial_path(target).read_bytes() == data[:dropped_after]

    file_server.drop_after = None
    download(url, target, md5=md5, progress=False)
    assert target.read_bytes() == data
    last = file_server.requests[-1]
    assert (last.range, last.status, last.body_bytes) == (f"bytes={dropped_after}-", 206, SIZE - dropped_after)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server_names_the_url_and_the_file_to_place(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/weights.pth"
    target = tmp_path / "weights" / "weights.pth"
    with pytest.raises(DownloadError) as raised:
        download(url, target, progress=False, timeout=5)
    assert url in str(raised.value) and str(target) in str(raised.value)
    assert not target.exists() and not partial_path(target).exists()


def test_http_error_names_the_status_and_url(file_server: FileServer, tmp_path: Path) -> None:
    url = _serve(file_server, "blob.bin", b"data")
    file_server.not_found = True
    with pytest.raises(DownloadError, match=rf"404.*save it as {re.escape(str(tmp_path / 'blob.bin'))}") as raised:
        download(url, tmp_path / "blob.bin", progress=False)
    assert url in str(raised.value)


def test_silent_server_times_out(file_server: FileServer, tmp_path: Path) -> None:
    url = _serve(file_server, "blob.bin", b"data")
    file_server.stall = True
    with pytest.raises(DownloadError, match="timed out") as raised:
        download(url, tmp_path / "blob.bin", progress=False, timeout=0.2)
    assert url in str(raised.value)


def test_progress_bar_reports_the_file(
    file_server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _random_bytes()
    url = _serve(file_server, "blob.bin", data)
    download(url, tmp_path / "blob.bin", progress=True)
    progress = capsys.readouterr().err
    assert "blob.bin" in progress and "100%" in progress and "2.50M/2.50M" in progress


def test_verify_checksum(tmp_path: Path) -> None:
    data = b"some bytes"
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    verify_checksum(path, md5=_md5(data).upper(), sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(DataError, match=hashlib.sha256(data).hexdigest()):
        verify_checksum(path, sha256="f" * 64)
    with pytest.raises(MissingDataError):
        verify_checksum(tmp_path / "absent.bin", md5=_md5(data))


# ---------------------------------------------------------------------------------------------- extract

_GOOD_MEMBERS = {"top/a.txt": b"alpha", "top/sub/b.bin": bytes(range(256)), "readme.txt": b"read me"}


def _write_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:" + {".gz": "gz", ".tgz": "gz", ".bz2": "bz2", ".xz": "xz"}.get(path.suffix, "")) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return path


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"])
def test_extract_tar(tmp_path: Path, suffix: str) -> None:
    archive = _write_tar(tmp_path / f"archive{suffix}", list(_GOOD_MEMBERS.items()))
    destination = tmp_path / "out"
    files = extract(archive, destination)
    assert sorted(files) == sorted(destination / name for name in _GOOD_MEMBERS)
    assert {str(f.relative_to(destination)): f.read_bytes() for f in files} == _GOOD_MEMBERS
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, "out"])  # no staging left


def test_extract_zip(tmp_path: Path) -> None:
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("top/", b"")
        for name, data in _GOOD_MEMBERS.items():
            zipped.writestr(name, data)
    files = extract(archive, tmp_path / "out")
    assert {str(f.relative_to(tmp_path / "out")): f.read_bytes() for f in files} == _GOOD_MEMBERS


def test_extract_replaces_top_level_entries_and_keeps_the_rest(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    (destination / "top").mkdir(parents=True)
    (destination / "top" / "stale.txt").write_text("old")
    (destination / "keep.txt").write_text("mine")
    extract(_write_tar(tmp_path / "a.tar.gz", list(_GOOD_MEMBERS.items())), destination)
    assert not (destination / "top" / "stale.txt").exists()
    assert (destination / "top" / "a.txt").read_bytes() == b"alpha"
    assert (destination / "keep.txt").read_text() == "mine"


_BAD_TAR_MEMBERS = {
    "absolute": (("/tmp/evil.txt", b"x"), "/tmp/evil.txt"),
    "dot-dot": (("top/../../evil.txt", b"x"), "top/../../evil.txt"),
    "symlink": (_special("top/link", tarfile.SYMTYPE, "/etc/passwd"), "top/link"),
    "hardlink": (_special("top/hard", tarfile.LNKTYPE, "/etc/passwd"), "top/hard"),
    "device": (_special("top/dev", tarfile.CHRTYPE), "top/dev"),
    "fifo": (_special("top/fifo", tarfile.FIFOTYPE), "top/fifo"),
}


@pytest.mark.parametrize("case", list(_BAD_TAR_MEMBERS))
def test_extract_refuses_unsafe_tar_members_and_writes_nothing(tmp_path: Path, case: str) -> None:
    bad_member, bad_name = _BAD_TAR_MEMBERS[case]
    archive = _write_tar(tmp_path / "evil.tar.gz", [*_GOOD_MEMBERS.items(), bad_member])  # bad one last
    destination = tmp_path / "data" / "out"
    with pytest.raises(DataError) as raised:
        extract(archive, destination)
    assert str(archive) in str(raised.value) and f"refusing member {bad_name!r}" in str(raised.value)
    assert list((tmp_path / "data").iterdir()) == []


def _zip_member(name: str, data: bytes, mode: int | None = None) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.external_attr = mode << 16
    return info, data


@pytest.mark.parametrize(
    ("member", "bad_name"),
    [
        (_zip_member("../evil.txt", b"x"), "../evil.txt"),
        (_zip_member("/abs/evil.txt", b"x"), "/abs/evil.txt"),
        (_zip_member("C:/evil.txt", b"x"), "C:/evil.txt"),
        (_zip_member("top/link", b"/etc/passwd", 0o120777), "top/link"),
    ],
    ids=["dot-dot", "absolute", "drive", "symlink"],
)
def test_extract_refuses_unsafe_zip_members_and_writes_nothing(
    tmp_path: Path, member: tuple[zipfile.ZipInfo, bytes], bad_name: str
) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in _GOOD_MEMBERS.items():
            zipped.writestr(name, data)
        zipped.writestr(*member)
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist()[-1] == bad_name  # the archive really holds the bad name
    with pytest.raises(DataError, match=re.escape(f"refusing member {bad_name!r}")):
        extract(archive, tmp_path / "data" / "out")
    assert not (tmp_path / "data" / "out").exists()
    assert list((tmp_path / "data").iterdir()) == []


def test_extract_rejects_truncated_unknown_and_missing_archives(tmp_path: Path) -> None:
    good = _write_tar(tmp_path / "good.tar.gz", list(_GOOD_MEMBERS.items())).read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a readable archive"):
        extract(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    unknown = tmp_path / "archive.rar"
    unknown.write_bytes(b"Rar!")
    with pytest.raises(DataError, match="unknown archive type"):
        extract(unknown, tmp_path / "out")
    with pytest.raises(MissingDataError):
        extract(tmp_path / "absent.zip", tmp_path / "out")


# ---------------------------------------------------------------------------------------------- sources


def test_every_registered_dataset_has_a_source() -> None:
    assert set(SOURCES) == set(DATASETS)
    assert all(name == source.name for name, source in SOURCES.items())


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_source_entry_is_consistent(name: str) -> None:
    source = SOURCES[name]
    kinds = [bool(source.files) and source.manual is None, source.manual is not None, source.generated is not None]
    assert sum(kinds) == 1, "exactly one of downloadable / manual / generated"
    assert len({file.filename for file in source.files}) == len(source.files)
    for file in source.files:
        assert file.md5 is None or re.fullmatch(r"[0-9a-f]{32}", file.md5)
        assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256)
        assert "/" not in file.filename
        if source.manual is None:
            assert file.urls and all(url.startswith(("https://", "http://")) for url in file.urls)
            assert file.md5 or file.sha256, "every downloadable file in the table has a published checksum"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_how_to_get_names_the_folder_urls_and_checksums(name: str, tmp_path: Path) -> None:
    source = SOURCES[name]
    hint = how_to_get(name)
    if source.generated is not None:
        assert "needs no files" in hint
        return
    assert str(dataset_folder(name)) in hint
    assert str(tmp_path) in how_to_get(name, tmp_path)
    for file in source.files:
        assert file.filename in hint
        if source.manual is None:
            assert f"python main.py download {name}" in hint
            assert file.urls[0] in hint and (file.md5 or file.sha256) in hint


def test_unknown_dataset_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        how_to_get("nope")
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        fetch("nope")


def _redirect(monkeypatch: pytest.MonkeyPatch, name: str, files: tuple[RemoteFile, ...]) -> DatasetSource:
    """Point SOURCES[name] at other files (local URLs, test checksums), keeping everything else."""
    source = dataclasses.replace(SOURCES[name], files=files)
    monkeypatch.setitem(sources_module.SOURCES, name, source)
    return source


def _tar_gz_of_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


def test_fetch_of_cifar10_gives_a_folder_the_reader_loads(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_cifar10(tmp_path / "made", n_train=10, n_test=4)
    archive = _tar_gz_of_folder(tmp_path / "made")  # holds cifar-10-batches-py/ at the top, as published
    [real] = SOURCES["cifar10"].files
    url = _serve(file_server, real.filename, archive)
    _redirect(monkeypatch, "cifar10", (dataclasses.replace(real, urls=(url,), md5=_md5(archive)),))
    root = tmp_path / "data"
    folder = fetch("cifar10", root, progress=False)
    assert folder == dataset_folder("cifar10", root) == root / "cifar10"
    assert (folder / real.filename).read_bytes() == archive
    for split, (images, labels) in written.items():
        loaded = load("cifar10", split, root=root)
        np.testing.assert_array_equal(loaded.images.numpy(), images)
        np.testing.assert_array_equal(loaded.labels.numpy(), labels)

    requests_before = len(file_server.requests)
    (folder / real.filename).unlink()  # extracted already: neither the archive nor the network is needed
    fetch("cifar10", root, progress=False)
    assert len(file_server.requests) == requests_before


def test_fetch_of_mnist_tries_mirrors_in_order_and_keeps_the_gz_files(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_idx_dataset(file_server.folder, n_train=6, n_test=3)
    files = tuple(
        dataclasses.replace(
            file,
            urls=(file_server.url(f"missing/{file.filename}"), file_server.url(file.filename)),
            md5=_md5((file_server.folder / file.filename).read_bytes()),
        )
        for file in SOURCES["mnist"].files
    )
    _redirect(monkeypatch, "mnist", files)
    folder = fetch("mnist", tmp_path, progress=False)
    assert sorted(path.name for path in folder.iterdir()) == sorted(file.filename for file in files)
    assert [request.status for request in file_server.requests] == [404, 200] * len(files)
    for split, (images, labels) in written.items():
        loaded = load("mnist", split, root=tmp_path)
        np.testing.assert_array_equal(loaded.images.numpy(), images)
        np.testing.assert_array_equal(loaded.labels.numpy(), labels)


def test_fetch_reports_every_failed_mirror(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [real, *_] = SOURCES["mnist"].files
    urls = (file_server.url("gone/a.gz"), file_server.url("gone/b.gz"))
    _redirect(monkeypatch, "mnist", (dataclasses.replace(real, urls=urls),))
    with pytest.raises(DownloadError, match="every mirror failed") as raised:
        fetch("mnist", tmp_path, progress=False)
    assert all(url in str(raised.value) for url in urls)


def test_fetch_of_a_manual_dataset_explains_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError) as raised:
        fetch("mvtec", tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "mvtec" / "mvtec_anomaly_detection.tar.xz") in message
    assert "CC BY-NC-SA" in message and "https://www.mvtec.com" in message
    with pytest.raises(MissingDataError, match="withdrew"):
        fetch("tiny-images", tmp_path)
    with pytest.raises(MissingDataError, match="create_tiny"):
        fetch("tiny-images-subset", tmp_path)


def test_fetch_checks_and_extracts_a_manually_placed_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [real] = SOURCES["mvtec"].files
    folder = dataset_folder("mvtec", tmp_path)
    folder.mkdir(parents=True)
    members = [("bottle/train/good/000.png", b"png"), ("license.txt", b"CC BY-NC-SA 4.0")]
    archive = _write_tar(folder / real.filename, members).read_bytes()  # placed by hand, as a .tar.xz
    _redirect(monkeypatch, "mvtec", (dataclasses.replace(real, sha256="0" * 64),))
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("mvtec", tmp_path)
    assert not (folder / "bottle").exists()

    _redirect(monkeypatch, "mvtec", (dataclasses.replace(real, sha256=hashlib.sha256(archive).hexdigest()),))
    fetch("mvtec", tmp_path)
    assert (folder / "bottle" / "train" / "good" / "000.png").read_bytes() == b"png"


def test_fetch_rejects_an_archive_without_the_expected_folder(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [real] = SOURCES["textures"].files
    archive = _write_tar(tmp_path / "made.tar.gz", [("images/banded/a.jpg", b"jpg")]).read_bytes()  # no dtd/
    url = _serve(file_server, real.filename, archive)
    _redirect(monkeypatch, "textures", (dataclasses.replace(real, urls=(url,), md5=_md5(archive)),))
    with pytest.raises(DataError, match="'dtd' is not among the results"):
        fetch("textures", tmp_path, progress=False)


def test_fetch_of_a_generated_dataset_needs_nothing(tmp_path: Path) -> None:
    assert fetch("digits", tmp_path) == dataset_folder("digits", tmp_path)
    assert list(tmp_path.iterdir()) == []
