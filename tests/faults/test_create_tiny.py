"""``invglow/create_tiny.py``: options that cannot be used are one line (exit 2); a full disk is named, progress kept.

Issue 16: ``--name ../../evilname`` wrote outside ``--out-dir``; ``--n-chunks 0`` and an ``--out-dir`` that is a
file raised tracebacks; a full disk gave a raw ``OSError: 128000 requested and 65520 written``. The binary is
written in the real format (tests/helpers/write_tiny.py).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from common import tiny_builder
from common.errors import DataError
from invglow import create_tiny
from tests.helpers.write_tiny import write_tiny_binary

N_IMAGES = 64 * 6 + 5  # 6 usable chunk starts


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    return write_tiny_binary(tmp_path / "tiny_images.bin", N_IMAGES)


def _main(binary: Path, out_dir: Path, *options: str) -> None:
    arguments = ["--binary", str(binary), "--out-dir", str(out_dir), "--expected-images", "0", "--no-progress"]
    create_tiny.main([*arguments, *options])


def _one_line_usage_error(capsys: pytest.CaptureFixture[str], raised: pytest.ExceptionInfo[SystemExit]) -> str:
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("create_tiny.py: error: "), error
    return error


def test_a_name_leaving_the_out_dir_is_refused_in_one_line(
    binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "a" / "b" / "out"
    with pytest.raises(SystemExit) as raised:
        _main(binary, out_dir, "--name", "../../evilname", "--n-chunks", "2")
    assert "--name ../../evilname: expected a plain file name" in _one_line_usage_error(capsys, raised)
    assert list(tmp_path.rglob("evilname*")) == []
    with pytest.raises(ValueError, match=r"subset name '\.\./x'"):  # the library refuses it too
        tiny_builder.build_tiny_subset(binary, out_dir, name="../x", n_chunks=2, expected_images=None, progress=False)


def test_no_chunks_and_an_out_dir_that_is_a_file_are_one_line_each(
    binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        _main(binary, tmp_path / "out", "--n-chunks", "0")
    assert "--n-chunks 0: expected a positive number" in _one_line_usage_error(capsys, raised)
    a_file = tmp_path / "out.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit) as raised:
        _main(binary, a_file, "--n-chunks", "2")
    assert f"--out-dir {a_file}: is a file, not a folder" in _one_line_usage_error(capsys, raised)
    with pytest.raises(SystemExit) as raised:
        _main(binary, a_file / "below", "--n-chunks", "2")
    assert f"is inside {a_file}, which is a file" in _one_line_usage_error(capsys, raised)


def test_a_full_disk_while_starting_names_the_file(
    binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def short_write(file: object, array: np.ndarray, **options: object) -> None:
        file.write(b"\x93NUMPY")  # what numpy's tofile reports when the file system takes part of the bytes
        raise OSError(f"{array.nbytes} requested and 6 written")

    monkeypatch.setattr(tiny_builder.np, "save", short_write)
    with pytest.raises(SystemExit, match=r"tiny_subset_indices\.npy\.partial: could not be written .*the disk is full"):
        _main(binary, tmp_path / "out", "--n-chunks", "3")


def test_a_full_disk_while_copying_keeps_the_progress_and_the_rerun_finishes(
    binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"n_chunks": 4, "expected_images": None, "batch_chunks": 1, "progress": False}
    reference = tiny_builder.build_tiny_subset(binary, tmp_path / "reference", **options)
    real_pwrite, calls = tiny_builder.os.pwrite, []

    def full_after_two(descriptor: int, data: memoryview, offset: int) -> int:
        calls.append(offset)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(descriptor, data, offset)

    monkeypatch.setattr(tiny_builder.os, "pwrite", full_after_two)
    out_dir = tmp_path / "out"
    with pytest.raises(DataError, match=r"tiny_subset\.npy\.partial: could not be written .*the disk is full"):
        tiny_builder.build_tiny_subset(binary, out_dir, **options)
    assert json.loads((out_dir / "tiny_subset.progress.json").read_text()) == {"images_done": 2 * 64}
    monkeypatch.undo()
    built = tiny_builder.build_tiny_subset(binary, out_dir, **options)
    assert np.array_equal(np.load(built), np.load(reference))
