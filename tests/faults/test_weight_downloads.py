"""Weight files: a pinned sha256 for each, downloads through ``.part`` with resume, damaged copies named or replaced.

Issue 16, case 3: a server closing early without Content-Length left a half-size ``.pth`` under its final name,
which every later run refused ("sha256 does not start with …") without saying to delete it. Everything is served by
the local HTTP server of tests/helpers/http_server.py; no test touches the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from common.download import partial_path
from common.errors import DataError, DownloadError
from gaussian_ad import backbones
from gaussian_ad.backbones import ARCHITECTURES, weights_path
from gaussian_ad.resnet import RESNETS, resnet_weights_path

if TYPE_CHECKING:
    from tests.helpers.http_server import FileServer

pytest_plugins = ["tests.helpers.http_server"]  # the file_server fixture

NAME = "efficientnet-b0-355c32eb.pth"
DATA = random.Random(16).randbytes(1_500_000)  # stands for the weight file: more than one 1 MiB read chunk


def test_every_weight_file_has_a_pinned_sha256_matching_the_hash_in_its_name() -> None:
    pinned = getattr(backbones, "WEIGHTS_SHA256", {})
    names = [arch.weights for arch in ARCHITECTURES.values()] + [spec.weights for spec in RESNETS.values()]
    for name in names:
        assert name in pinned, f"{name} has no pinned sha256"
        digest = pinned[name]
        assert len(digest) == 64 and digest.startswith(name.rsplit("-", 1)[1].removesuffix(".pth")), name


@pytest.fixture
def served(file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileServer:
    """``DATA`` served as the B0 weight file, pinned as such; empty weights root and torch hub cache."""
    (file_server.folder / NAME).write_bytes(DATA)
    monkeypatch.setenv("OOD_REPRO_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    moved = dataclasses.replace(ARCHITECTURES["efficientnet-b0"], url=file_server.url(""))
    monkeypatch.setitem(ARCHITECTURES, "efficientnet-b0", moved)
    monkeypatch.setattr(backbones, "WEIGHTS_SHA256", {NAME: hashlib.sha256(DATA).hexdigest()}, raising=False)
    return file_server


def test_a_connection_closed_early_never_leaves_a_partial_file_under_the_final_name(
    served: FileServer, tmp_path: Path
) -> None:
    final = tmp_path / "weights" / NAME
    served.omit_length, served.drop_after = True, len(DATA) // 2  # no Content-Length: only the checksum can tell
    with pytest.raises(DownloadError, match="corrupt"):
        weights_path("efficientnet-b0", progress=False)
    assert not final.exists()
    served.omit_length = False  # with Content-Length the shortfall is seen: the .part is kept and resumed
    with pytest.raises(DownloadError, match="the next attempt resumes it"):
        weights_path("efficientnet-b0", progress=False)
    assert not final.exists() and partial_path(final).stat().st_size == len(DATA) // 2
    served.drop_after = None
    assert weights_path("efficientnet-b0", progress=False) == final
    assert final.read_bytes() == DATA and not partial_path(final).exists()
    assert served.requests[-1].range == f"bytes={len(DATA) // 2}-"


def test_a_damaged_weight_file_is_named_with_what_to_do_or_downloaded_again(served: FileServer, tmp_path: Path) -> None:
    final = tmp_path / "weights" / NAME
    final.parent.mkdir(parents=True)
    final.write_bytes(DATA[: len(DATA) // 2])  # what the old code left behind
    with pytest.raises(DataError, match=r"sha256 is .*delete it") as raised:
        weights_path("efficientnet-b0", allow_download=False)
    assert raised.value.path == final
    assert weights_path("efficientnet-b0", progress=False) == final
    assert final.read_bytes() == DATA
    cached = tmp_path / "torch" / "hub" / "checkpoints" / NAME  # a damaged copy in torch's cache is passed over
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"junk")
    assert weights_path("efficientnet-b0", allow_download=False) == final


def test_resnet_weights_are_checked_against_their_pinned_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OOD_REPRO_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    placed = tmp_path / "weights" / RESNETS["resnet18"].weights
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"not the torchvision file")
    with pytest.raises(DataError, match=r"resnet18-f37072fd\.pth: sha256 is .*expected f37072fd47e8.*delete it"):
        resnet_weights_path("resnet18", allow_download=False)
