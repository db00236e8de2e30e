"""The data preflight: before anything runs or is written, one error lists every file the chosen cells read that is
missing, per dataset, with where it goes and how to get it; the fixtures' complete data root passes it."""

from __future__ import annotations

from pathlib import Path

import pytest

import main
from common import preflight, runner
from common.cells import Settings
from common.errors import MissingFilesError
from common.fixtures.build import write_fixtures
from common.fixtures.papers import PAPERS
from tests.helpers import toy_paper

REMOVED = ("svhn", "textures")
"""The datasets the incomplete data root lacks: an in-distribution set of MCHAD and one of its OOD sets."""


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A complete fixture data root of the four papers: each ``folder_locations`` variable → its path."""
    return write_fixtures(tmp_path_factory.mktemp("preflight") / "fixtures", PAPERS)


@pytest.fixture()
def incomplete(fixtures: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixtures as the environment's data, but a data root without :data:`REMOVED` (links to the other sets)."""
    data = tmp_path / "data"
    data.mkdir()
    for folder in fixtures["OOD_REPRO_DATA"].iterdir():
        if folder.name not in REMOVED:
            (data / folder.name).symlink_to(folder)
    for variable, path in fixtures.items():
        monkeypatch.setenv(variable, str(path))
    monkeypatch.setenv("OOD_REPRO_DATA", str(data))
    return data


def test_missing_data_is_one_error_listing_every_file_before_anything_is_written(incomplete, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main.main(["mchad", "--scale", "paper", "--output", str(runs)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "cell/s" not in captured.err and not captured.out, "no cell started"
    lines = captured.err.splitlines()
    assert lines[0].startswith("error: missing data: 3 file(s) or folder(s) that the chosen cells read")
    assert {
        "  svhn: get it with `python main.py download svhn`",
        f"    {incomplete / 'svhn/train_32x32.mat'}",
        f"    {incomplete / 'svhn/test_32x32.mat'}",
        "  textures: get it with `python main.py download textures`",
        f"    {incomplete / 'textures/dtd'}",
        "  all the downloadable ones at once: python main.py download svhn textures",
    } <= set(lines)
    assert not runs.exists(), "no run folder, config.json or lock was written"


def test_chosen_cells_need_only_their_own_data(incomplete, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main.main(["mchad", "--scale", "paper", "--output", str(runs), "--cells", "*/cifar10/*"]) == 2
    err = capsys.readouterr().err
    assert "textures" in err and "svhn" not in err, "the CIFAR-10 cells test on Textures but never read SVHN"
    assert main.main(["mchad", "--scale", "paper", "--list-cells"]) == 0, "listing the cells reads no data"
    assert not runs.exists()


def test_a_manual_dataset_says_how_to_place_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path))
    with pytest.raises(MissingFilesError) as caught:
        preflight.check([preflight.DatasetNeed("mvtec", ("bottle", "cable"))])
    assert caught.value.paths == (tmp_path / "mvtec/bottle", tmp_path / "mvtec/cable")
    lines = str(caught.value).splitlines()
    assert lines[1].startswith("  mvtec: mvtec is not downloaded automatically: it is licensed CC BY-NC-SA 4.0")
    assert lines[2:4] == [f"    {tmp_path / 'mvtec/bottle'}", f"    {tmp_path / 'mvtec/cable'}"]
    assert "download mvtec cable" not in str(caught.value), "no download command for a manual dataset"


def test_uncompressed_idx_files_count_as_the_distributed_gz_files(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte.gz"):
        (tmp_path / "mnist" / name).touch()
    assert preflight.missing([preflight.DatasetNeed("mnist")]) == {
        "mnist: get it with `python main.py download mnist`": [tmp_path / "mnist/t10k-labels-idx1-ubyte.gz"]
    }


@pytest.mark.parametrize("paper", PAPERS)
def test_the_fixtures_hold_every_file_the_paper_scale_reads(paper, fixtures, monkeypatch):
    for variable, path in fixtures.items():
        monkeypatch.setenv(variable, str(path))
    owner = main.get_paper(paper)
    for experiment in owner.experiments:
        config = runner.plan(owner, experiment, Settings("paper")).config
        needs = experiment.data(config)
        assert needs, f"{paper}/{experiment.name} declares what its paper scale reads"
        preflight.check(needs)


@pytest.mark.parametrize("paper", PAPERS)
def test_the_demo_scale_needs_no_file(paper, tmp_path, monkeypatch):
    for variable in ("OOD_REPRO_DATA", "OOD_REPRO_TINY_IMAGES", "OOD_REPRO_WEIGHTS"):
        monkeypatch.setenv(variable, str(tmp_path / "empty"))
    owner = main.get_paper(paper)
    for experiment in owner.experiments:
        if "demo" in experiment.scales:
            needs = experiment.data(runner.plan(owner, experiment, Settings("demo")).config)
            assert [path for need in needs for path in need.paths()] == []


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--launcher", "slurm"], "--launcher slurm: sbatch and srun not found on PATH"),
        (["--launcher", "local", "--max-parallel", "-1"], "--max-parallel -1: expected a positive number"),
    ],
)
def test_a_launcher_usage_error_leaves_no_run_folder(options, error, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(main.PAPER_MODULES, "toy", main.PaperModule("tests.helpers.toy_paper", "Toy et al."))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    toy_paper.CALLS.clear()
    assert main.main(["toy", "--output", str(tmp_path / "runs"), *options]) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not toy_paper.CALLS
