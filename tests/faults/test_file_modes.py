"""Files the suite writes through temporary files get the umask's mode, not mkstemp's 0600 (issue 16).

A group sharing a runs folder must be able to read results, configurations, manifests and checkpoints.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from torch import nn

from common import runner
from common.cells import Settings
from common.files import torch_save_atomically, write_json_atomically
from common.handlers import setup_checkpoint
from common.tiny_builder import build_tiny_subset
from tests.helpers import toy_paper
from tests.helpers.write_tiny import write_tiny_binary


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writers_respect_the_umask(tmp_path: Path, umask: int) -> None:
    expected = 0o666 & ~umask
    assert _mode(write_json_atomically(tmp_path / "results.json", {"AUROC": 0.9})) == expected
    assert _mode(torch_save_atomically({"w": torch.zeros(2)}, tmp_path / "model.pt")) == expected


def test_checkpoints_their_checksums_and_tiny_subsets_respect_the_umask(tmp_path: Path, umask: int) -> None:
    expected = 0o666 & ~umask
    model = nn.Linear(2, 1)
    trainer = Engine(lambda engine, batch: None)
    setup_checkpoint(tmp_path / "run", {"model": model}, trainer, every_epochs=1)
    trainer.run([0], max_epochs=1)
    written = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in written] == ["checkpoint_1.pt", "checkpoint_1.pt.sha256"]
    assert [_mode(p) for p in written] == [expected, expected]
    binary = write_tiny_binary(tmp_path / "tiny_images.bin", 200)
    build_tiny_subset(binary, tmp_path / "tiny", n_chunks=2, expected_images=None, progress=False)
    assert {p.name: _mode(p) for p in (tmp_path / "tiny").iterdir()} == dict.fromkeys(
        ["tiny_subset.json", "tiny_subset.npy", "tiny_subset_indices.npy"], expected
    )


def test_a_run_folders_config_json_is_readable_by_the_group(tmp_path):
    previous = os.umask(0o022)
    try:
        run_plan = runner.plan(toy_paper.PAPER, toy_paper.PAPER.experiment("table1"), Settings())
        runner.open_run_folder(run_plan, tmp_path / "run")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "run" / "config.json").stat().st_mode) == 0o644
