"""``python -m common.fixtures DIR PAPER``: what each paper's paper scale reads opens through the paper's own code.

Each paper's fixtures are written into their own folder (once per module) and the printed ``export`` lines are put
into the environment; then the paper's readers run as its paper scale runs them (InvGlow's ``read_every_set`` and
Tiny split, MCHAD's ``build_run_data`` and pretrained WRN, Gaussian AD's MVTec reader and weight loaders, MemAE's
one-class selection), so a set or weight file the fixtures miss is a failure here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import io
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_pytorch import EfficientNet

import folder_locations
from common.checksums import read_sha256sums
from common.datasets import load
from common.datasets.mvtec import read_mvtec
from common.errors import DataError
from common.fixtures.__main__ import PROG, main, parse_arguments
from common.fixtures.build import MARKER
from common.fixtures.checksums import SHA256SUMS
from common.fixtures.datasets import EVAL_IMAGES, WRITERS
from common.fixtures.papers import PAPERS, paper_reads
from gaussian_ad import backbones
from gaussian_ad.config import CONFIGS as GAUSSIAN_AD_CONFIGS
from gaussian_ad.data import dataset_folder
from gaussian_ad.resnet import RESNETS, ResNetFeatures, resnet_weights_path
from invglow.config import PAPER as INVGLOW_PAPER
from invglow.config import grey_config
from invglow.data import image_set, read_every_set, tiny_images
from mchad.config import CONFIGS as MCHAD_CONFIGS
from mchad.data import build_run_data
from mchad.models import WideResNet
from mchad.pretrained import load_pretrained
from memae.config import CONFIGS as MEMAE_CONFIGS
from memae.data import one_class_test_set, training_set

EXPORT = re.compile(r"export (OOD_REPRO_[A-Z_]+)=(.+)")
FOLDER_LOCATIONS_VARIABLES = set(re.findall(r'"(OOD_REPRO_[A-Z_]+)"', inspect.getsource(folder_locations)))


@dataclasses.dataclass(frozen=True)
class Written:
    """One paper's fixtures: their folder and the lines the command printed."""

    folder: Path
    lines: list[str]

    def environment(self) -> dict[str, str]:
        """The exported variables and their values, as a shell evaluating the lines would set them."""
        return {name: shlex.split(value)[0] for name, value in (EXPORT.fullmatch(line).groups() for line in self.lines)}


@pytest.fixture(scope="module")
def fixtures_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Written]:
    """``paper`` → its fixtures, written by the command on first use."""
    written: dict[str, Written] = {}

    def write(paper: str) -> Written:
        if paper not in written:
            folder = tmp_path_factory.mktemp(f"fixtures-{paper}") / "fixtures"
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
                main([str(folder), paper])
            written[paper] = Written(folder, stdout.getvalue().splitlines())
        return written[paper]

    return write


@pytest.fixture
def environment_of(fixtures_of: Callable[[str], Written], monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """``paper`` → its fixtures folder, with the environment its export lines set."""

    def point_at(paper: str) -> Path:
        written = fixtures_of(paper)
        for name, value in written.environment().items():
            monkeypatch.setenv(name, value)
        return written.folder

    return point_at


@pytest.mark.parametrize("paper", PAPERS)
def test_one_export_line_per_folder_locations_variable(
    paper: str, fixtures_of: Callable[[str], Written], monkeypatch: pytest.MonkeyPatch
) -> None:
    written = fixtures_of(paper)
    assert all(EXPORT.fullmatch(line) for line in written.lines), written.lines
    names = [EXPORT.fullmatch(line).group(1) for line in written.lines]
    assert sorted(names) == sorted(FOLDER_LOCATIONS_VARIABLES)  # each exactly once
    for name, value in written.environment().items():
        monkeypatch.setenv(name, value)
    folder = written.folder
    assert folder_locations.data_root() == folder / "data" and folder_locations.weights_root() == folder / "weights"
    assert folder_locations.tiny_images_root() == folder / "data" / "tiny-images"
    assert folder_locations.runs_root() == folder / "runs" and folder_locations.runs_root().is_dir()


@pytest.mark.parametrize("paper", PAPERS)
def test_sha256sums_list_every_weight_file_and_the_pins_refuse_them(
    paper: str, fixtures_of: Callable[[str], Written]
) -> None:
    weights = fixtures_of(paper).folder / "weights"
    files = {path.name: path for path in weights.iterdir() if path.name != SHA256SUMS}
    assert set(files) == set(paper_reads(paper).weights)
    sums = read_sha256sums(weights / SHA256SUMS)
    assert sums == {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    if paper == "gaussian_ad":  # the real checksums stay pinned: a stand-in is refused without the override
        with torch.device("meta"), pytest.raises(DataError, match="sha256"):
            backbones.load_weights(
                backbones.EfficientNetFeatures("efficientnet-b0"), weights / "efficientnet-b0-355c32eb.pth"
            )


def test_writers_cover_exactly_the_sets_the_papers_read() -> None:
    assert set(WRITERS) == set().union(*(paper_reads(paper).datasets for paper in PAPERS))


def test_invglow_paper_scale_reads_every_set_and_both_tiny_subsets(environment_of: Callable[[str], Path]) -> None:
    environment_of("invglow")
    seed = INVGLOW_PAPER.seeds[0]
    pretrain = INVGLOW_PAPER.pretrain
    for config in (INVGLOW_PAPER, grey_config(INVGLOW_PAPER)):
        read_every_set(config, seed)
        assert len(image_set(config.data.ood[-1], "test", config, seed).images) == EVAL_IMAGES
        for subset in (config, dataclasses.replace(config, exclude_cifar_from_tiny=True)):
            train, test = (tiny_images(subset, Path("unused"), seed, split) for split in ("train", "test"))
            assert len(train) >= pretrain.init_batches * pretrain.batch_size and len(test) > 0
            assert train.shape[1:] == (config.glow.channels, 32, 32)
    assert len(load("tiny-images", "all", expected_count=None).images) > 0  # create_tiny's input


def test_mchad_paper_scale_reads_every_set_and_the_pretrained_wrn(environment_of: Callable[[str], Path]) -> None:
    environment_of("mchad")
    config = MCHAD_CONFIGS["paper"]
    train = dataclasses.replace(config.train, noise_count=EVAL_IMAGES)  # noise is generated, not read: fewer
    for dataset in config.datasets:
        data = build_run_data(dataset, train, outliers=True, seed=1, device=torch.device("cpu"))
        assert data.ood_names == tuple(name for name, _ in dataset.ood_sets)
        assert len(data.train) >= 2 and len(data.evaluation) == 1 + len(dataset.ood_sets)  # one batch per set
    model = load_pretrained(WideResNet(10, config.train.depth, config.train.widen_factor)).eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(2, 3, 32, 32))).all()


@pytest.mark.filterwarnings("ignore:.*meta parameter:UserWarning")  # loading into shape-only models copies nothing
@pytest.mark.filterwarnings("ignore:.*OOD_REPRO_CHECKSUMS:UserWarning")
def test_gaussian_ad_paper_scale_reads_mvtec_and_every_backbone(environment_of: Callable[[str], Path]) -> None:
    folder = environment_of("gaussian_ad")
    config = GAUSSIAN_AD_CONFIGS["paper"]
    for category in config.categories:
        train, test = (read_mvtec(dataset_folder(config), category, split) for split in ("train", "test"))
        assert len(train.labels) >= config.n_folds and set(test.labels.tolist()) == {0, 1}
    names = {config.architecture, *config.architectures, *config.resnet_architectures}
    for name in sorted(names | set(config.working_point_architectures)):
        resnet = name in RESNETS
        path = (resnet_weights_path if resnet else backbones.weights_path)(name, allow_download=False)
        assert path.parent == folder / "weights"
        with torch.device("meta"):  # keys, shapes and checksum through the suite's loader, without 260 MB for B7
            backbones.load_weights(ResNetFeatures(name) if resnet else backbones.EfficientNetFeatures(name), path)
    with torch.no_grad():  # stand-in values keep features finite
        levels = backbones.pretrained_features("efficientnet-b0")(torch.rand(2, 3, 224, 224))
    assert all(torch.isfinite(level).all() for level in levels)


def test_a_checksum_override_is_used_with_a_warning_and_only_for_the_files_it_lists(tmp_path, monkeypatch) -> None:
    name, other = "efficientnet-b0-355c32eb.pth", "efficientnet-b1-f1951068.pth"
    overrides = tmp_path / SHA256SUMS
    overrides.write_text(f"{'ab' * 32}  {name}\n")
    assert backbones.pinned_sha256(name) == backbones.WEIGHTS_SHA256[name]  # no override set
    monkeypatch.setenv("OOD_REPRO_CHECKSUMS", str(overrides))
    monkeypatch.setattr(backbones, "_OVERRIDDEN", set())
    with pytest.warns(UserWarning, match=f"{name}: checked against {overrides}"):
        assert backbones.pinned_sha256(name) == "ab" * 32
    assert backbones.pinned_sha256(other) == backbones.WEIGHTS_SHA256[other]


def test_efficientnet_file_has_the_keys_and_shapes_of_efficientnet_pytorch(
    fixtures_of: Callable[[str], Written],
) -> None:
    path = fixtures_of("gaussian_ad").folder / "weights" / backbones.ARCHITECTURES["efficientnet-b0"].weights
    written = torch.load(path, weights_only=True)
    reference = EfficientNet.from_name("efficientnet-b0").state_dict()  # whose state dicts the released files are
    assert {key: value.shape for key, value in written.items()} == {
        key: value.shape for key, value in reference.items()
    }
    assert path.stat().st_size < 1_000_000


def test_memae_paper_scale_reads_every_class_with_its_largest_few_shot_k(environment_of: Callable[[str], Path]) -> None:
    environment_of("memae")
    config = MEMAE_CONFIGS["paper"]
    for setting in (*config.image_table, *config.conditional):
        train, test = (load(setting.data.name, split, **setting.data.load_options) for split in ("train", "test"))
        shots = max(setting.few_shot.shots) if hasattr(setting, "few_shot") else None
        rng = np.random.default_rng(0)
        for label in setting.data.classes:
            assert len(training_set(train, [label], shots, rng).labels) >= (shots or 1)
            one_class_test_set(test, label, rng)


def test_papers_default_to_all_four_each_once() -> None:
    assert parse_arguments(["out"]).papers == list(PAPERS)
    assert parse_arguments(["out", "memae", "mchad", "memae"]).papers == ["memae", "mchad"]


def test_a_second_run_writes_the_same_files_and_keeps_the_other_papers(tmp_path: Path) -> None:
    folder = tmp_path / "fixtures"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main([str(folder), "memae"])
        first = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        (folder / "data" / "kept.txt").write_text("another paper's file")
        main([str(folder), "memae"])
    assert {path: path.read_bytes() for path in first} == first and (folder / "data" / "kept.txt").is_file()


@pytest.fixture
def bad_folders(tmp_path: Path) -> dict[str, Path]:
    file = tmp_path / "file"
    file.write_text("not a folder")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "cifar10").mkdir()
    return {"file": file, "inside a file": file / "sub", "foreign": foreign}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{tmp}/new", "mchad", "nopaper"], r"unknown paper 'nopaper'; papers: invglow, mchad, gaussian_ad, memae"),
        (["{file}"], r"/file: is a file, not a folder"),
        (["{inside a file}", "memae"], r"/file/sub: is inside .*/file, which is a file, not a folder"),
        (["{foreign}"], rf"/foreign: not empty and not a fixtures folder \(no {MARKER}\)"),
        ([], r"the following arguments are required: DIR"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    arguments: list[str],
    message: str,
    bad_folders: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [argument.format(tmp=tmp_path, **bad_folders) for argument in arguments]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith(f"{PROG}: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "new").exists() and sorted(p.name for p in bad_folders["foreign"].iterdir()) == ["cifar10"]


def test_command_line_reports_a_bad_argument_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    command = [sys.executable, "-m", "common.fixtures", str(tmp_path / "file")]
    done = subprocess.run(command, cwd=folder_locations.REPOSITORY, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"{PROG}: error: {tmp_path / 'file'}: is a file, not a folder"]
